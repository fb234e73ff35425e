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
    """The instant in the file (ISO 8601 with its offset); the system's time while the file is missing or empty."""

    def __init__(self, path: Path):
        self._path = path

    def now(self) -> datetime:
        try:
            text = self._path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            text = ""
        if not text:
            return utcnow()
        return datetime.fromisoformat(text).astimezone(timezone.utc)


def clock_for(settings) -> Clock:
    return FileClock(settings.clock_file) if settings.clock_file else SystemClock()
