# The README's two commands: `make console` runs the bot, `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: console test services stack-up stack-down bench

$(BIN)/flowstate-bot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

console: $(BIN)/flowstate-bot
	@$(BIN)/flowstate-bot console

services:
	tests/services

test: $(BIN)/flowstate-bot services
	$(BIN)/python -m pytest

stack-up:
	tests/stack/up

stack-down:
	tests/stack/down

bench: $(BIN)/flowstate-bot stack-up
	$(BIN)/python bench/ack_latency.py
	$(BIN)/python bench/health.py
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/postmortem.py
