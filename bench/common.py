"""What the live-stack benchmarks share: a runtime on the test stack, and a timer."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.frame.config import Settings, StackConfig, load_stack  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from tests.stack_setting import STACK_FILE  # noqa: E402

USER = "UBENCH"


def live_runtime() -> tuple[Runtime, StackConfig]:
    """A runtime with its own throwaway store, on the test stack (bring it up first: tests/stack/up)."""
    stack = load_stack(STACK_FILE, required=True)
    home = Path(tempfile.mkdtemp(prefix="flowstate-bench-"))
    return Runtime.build(Settings(_env_file=None, home=home, admins=[USER]), stack), stack


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started
