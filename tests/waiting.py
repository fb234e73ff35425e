"""Waiting in tests for what the bot writes a moment after what the test saw (a question's end and its outcome row are
written just after its reply went out)."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(condition: Callable[[], T], what: str, timeout: float = 30.0, every: float = 0.05) -> T:
    """The condition's first truthy value, asked every `every` seconds; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(every)
    return found
