"""Which live test stack a run uses: one setting, FLOWSTATE_TEST_STACK, names it (see tests/stack/README.md).

`flowstate-test`, the default, is the stack of tests/stack as written. `flowstate-test-N` (N = 1..7) is another one
beside it on the same machine: Compose project flowstate-test-N, every port N*1000 higher (58080 -> 58080 + N*1000),
its configuration rendered by tests/stack/up under /var/cache/flowstate-test/stacks/flowstate-test-N, and its own
test lock. tests/stack/name.sh applies the same rule for the shell scripts."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEFAULT = "flowstate-test"
CACHE = Path("/var/cache/flowstate-test")
STACK_DIR = Path(__file__).resolve().parent / "stack"


def _port_offset(name: str) -> int:
    if name == DEFAULT:
        return 0
    if match := re.fullmatch(r"flowstate-test-([1-7])", name):
        return int(match.group(1)) * 1000
    raise ValueError(f"FLOWSTATE_TEST_STACK={name!r}: name the live test stack {DEFAULT} (the default) or flowstate-test-1 to flowstate-test-7")


NAME = os.environ.get("FLOWSTATE_TEST_STACK") or DEFAULT
PORT_OFFSET = _port_offset(NAME)
# The stack file of this stack: the repository's for the default, the one tests/stack/up rendered for another.
STACK_FILE = STACK_DIR / "flowstate.toml" if NAME == DEFAULT else CACHE / "stacks" / NAME / "flowstate.toml"
# One test session at a time per stack (the default keeps the lock file it always had).
LOCK_FILE = CACHE / ("tests.lock" if NAME == DEFAULT else f"tests-{NAME}.lock")


def port(default_port: int) -> int:
    """The port on which this stack serves what the default stack serves on `default_port`."""
    return default_port + PORT_OFFSET


def project(default_project: str) -> str:
    """A Compose project of the tests' own beside this stack (the deploy world's), named after it."""
    return default_project if NAME == DEFAULT else f"{default_project}-{NAME.rsplit('-', 1)[1]}"
