"""The bot's database down, said once: not a traceback from every loop that touches it, every second."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Callable

from sqlalchemy.exc import InterfaceError, OperationalError

from bot.frame.humanize import duration

# What a database that is down, unreachable or refusing connections raises; any other error is a bug, logged whole.
_DOWN = (OperationalError, InterfaceError)


class OutageLog:
    """Shared by the loops of one process (the runner's claim, sweep and scheduler tick, its heartbeat and its LISTEN
    connection, on threads of their own): the first failure is logged with its traceback, then one line a minute
    while the outage lasts, and one line when it ends."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._log, self._every, self._clock = logger, every, clock
        self._since: float | None = None
        self._next = 0.0
        self._lock = threading.Lock()  # two threads failing at once still say it once

    def failed(self, doing: str) -> None:
        """Call in an `except` block, with what was being done."""
        error = sys.exc_info()[1]
        if not isinstance(error, _DOWN):
            self._log.exception("%s failed", doing)
            return
        with self._lock:
            self._failed(doing, error)

    def _failed(self, doing: str, error: BaseException) -> None:
        now = self._clock()
        if self._since is None:
            self._since, self._next = now, now + self._every
            self._log.error("the bot's database is not answering (%s failed); said again once a minute while it lasts", doing, exc_info=True)
        elif now >= self._next:
            self._next = now + self._every
            reason = str(error.orig if error.orig is not None else error).splitlines()[0][:300]
            self._log.error("the bot's database is still not answering after %s (%s: %s)", duration(now - self._since), doing, reason)

    def ok(self) -> None:
        """Something that needs the database just worked."""
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                self._log.warning("the bot's database answers again after %s", duration(self._clock() - self._since))
                self._since = None
