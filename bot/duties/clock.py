"""What time the scheduler thinks it is: the system's, or (tests only) the instant written in a file.

FLOWSTATE_CLOCK_FILE exists so that tests with real bot processes can move time for all of them at once
(a slot of 08:30 tomorrow, a daylight-saving change) without sleeping real hours. Never set it in production.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

from bot.store.engine import utcnow


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return utcnow()


class FileClock:
    """The instant in the file (ISO 8601 with its offset); the system's time until the file first holds one. A file
    caught while a test rewrites it (empty, or half written) keeps the last instant read: never a jump to today."""

    def __init__(self, path: Path):
        self._path = path
        self._last: datetime | None = None

    def now(self) -> datetime:
        try:
            text = self._path.read_text(encoding="utf-8").strip()
            self._last = datetime.fromisoformat(text).astimezone(timezone.utc)
        except (FileNotFoundError, ValueError):
            pass
        return self._last if self._last is not None else utcnow()


def clock_for(settings) -> Clock:
    return FileClock(settings.clock_file) if settings.clock_file else SystemClock()
