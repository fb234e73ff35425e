"""Numbers an operator reads at a glance: durations, ages and sizes."""

from __future__ import annotations

import time
from datetime import datetime


def count(number: int, noun: str, plural: str | None = None) -> str:
    """3 failing checks, 1 failing check; 1 query, 2 queries (a plural that is not noun + s is given)."""
    return f"{number} {noun}" if number == 1 else f"{number} {plural or noun + 's'}"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, rest = divmod(seconds, 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    days, rest = divmod(seconds, 86400)
    return f"{days} d {rest // 3600} h" if rest >= 3600 else f"{days} d"


def ago(when: datetime, now: datetime) -> str:
    return f"{duration((now - when).total_seconds())} ago"


def size(count: float) -> str:
    if count < 1024:
        return f"{count:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            break
    return f"{count:.1f} {unit}"


def elapsed(since: float) -> str:
    """Seconds since a time.monotonic() reading, to a tenth: how long a step took."""
    return f"{time.monotonic() - since:.1f} s"
