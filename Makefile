# The README's two commands: `make console` runs the bot, `make test` runs the whole test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: console demo test test-unit services stack-up stack-down bench

$(BIN)/flowstate-bot: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

console: $(BIN)/flowstate-bot
	@$(BIN)/flowstate-bot console

# The live test stack (real PostgreSQL, Redis, nginx and stand-in services under Docker Compose), a throw-away
# Git checkout with a harmless deploy script for its [deploy] section, then the console against both:
# /health, /stats and the commands that change production (deploys and rollbacks too), on a real stack.
demo: $(BIN)/flowstate-bot
	tests/stack/up
	@stack="$$(tests/stack/demo-deploy)" && $(BIN)/flowstate-bot console --stack "$$stack"

services:
	tests/services

test: $(BIN)/flowstate-bot services
	$(BIN)/python -m pytest

# The unit tier: no PostgreSQL, Redis or Docker (SQLite only) and no process of the bot's own, for feedback in
# seconds. The markers come from the fixtures a test uses (tests/conftest.py); `make test` still runs everything.
UNIT_TIER := not postgres and not redis and not stack and not process and not swarm
test-unit: $(BIN)/flowstate-bot
	$(BIN)/python -m pytest -m "$(UNIT_TIER)"

stack-up:
	tests/stack/up

stack-down:
	tests/stack/down

bench: $(BIN)/flowstate-bot stack-up
	$(BIN)/python bench/ack_latency.py
	$(BIN)/python bench/answer_latency.py
	$(BIN)/python bench/reply_tls.py
	$(BIN)/python bench/health.py
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/approvals.py
	$(BIN)/python bench/postmortem.py
