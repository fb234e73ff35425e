"""Test-only fault injection at the step boundaries of a change (a restore, a restart, a deploy), between a
question's reply and its bookkeeping, and between a request's posted card and its storing.

A change calls `reached(fault, POINT)` between its steps (`fault`: what the composition root gave it). In production that does nothing. Tests in the
same process set `Runtime.fault` to inject a fault there (the store locked, the Docker engine gone, Slack
failing); tests of a bot process of its own set FLOWSTATE_FAULT_AT=POINT, and the process that gets there (a
runner) SIGKILLs itself, as a crash would, exactly at that step instead of after a racing sleep; with
FLOWSTATE_FAULT_AT=bot@POINT it SIGKILLs the bot process that started it first. Never set it in production.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

# The points, named where they are reached (a test parametrized over them cannot name one that does not exist).
POINTS = (
    "restore:after_verify", "restore:after_safety", "restore:after_stop", "restore:after_restore",  # in place (after_stop: both)
    "restore:after_fill", "restore:after_first_rename", "restore:after_rename",  # a swap restore (bot/backups/swap.py)
    "prefill:after_create", "prefill:after_fill",  # /restore --to's background copy while its request waits
    "restart:after_restart",
    "setup-pitr:after_settings", "setup-pitr:after_restart",
    "deploy:after_checkout", "deploy:after_start", "deploy:after_script",
    "undo:after_prepare", "undo:before_commit",  # /restore --table: rows recovered; written back, not yet committed
    "reply:after_delivery",  # a question answered, its outcome row and its job's end not yet written
    "request:after_post",  # a request's card posted for approval, where it is not yet stored
)


def kill_at(spec: str | None) -> Callable[[str], None]:
    """The hook FLOWSTATE_FAULT_AT asks for: nothing, or SIGKILL at that point to this process (and its parent)."""
    if not spec:
        return lambda _point: None
    whom, _, point = spec.rpartition("@")

    def fault(reached_point: str) -> None:
        if reached_point == point:
            if whom == "bot":
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    return fault


def reached(fault: Callable[[str], None], point: str) -> None:
    assert point in POINTS, point
    fault(point)
