"""The bot's processes are not dumpable: another process of the same user (a deploy script) cannot read their
/proc/PID/environ or memory, nor attach to them; only root (CAP_SYS_PTRACE) can. They write no core dump either.

The environment the bot was started with stays in /proc/PID/environ for as long as it lives, and its memory holds
the tokens it read; without this, any script it starts could read them (`cat /proc/$PPID/environ`)."""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def make_undumpable() -> None:
    """For this process (all its threads); a program it executes is dumpable again, so every process of the bot calls this."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not make this process non-dumpable (errno %s): a process of its user may read its secrets", ctypes.get_errno())
