"""Times a user types (`--since 3h`, `--since 2024-03-01T23:00`) and times a reader sees."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone, tzinfo

_RELATIVE = re.compile(r"(\d{1,6})\s*(s|m|min|h|d|w)")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Six digits of weeks reach before year 1, where datetime arithmetic overflows; nobody reads logs or
# history older than a year through the bot.
MAX_AGE_SECONDS = 52 * 7 * 86400


class TimeError(ValueError):
    pass


def parse_time(value: str, tz: tzinfo, now: datetime) -> datetime:
    """ISO 8601 (without an offset: in the configured zone), or an age such as 30m, 3h, 2d, 1w."""
    value = value.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        seconds = int(relative.group(1)) * _UNITS[relative.group(2)]
        if seconds > MAX_AGE_SECONDS:
            raise TimeError(f"{value} is too long ago; an age can be at most 52w (a year), or give an ISO 8601 time")
        return now - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=tz)
        return moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that moves year 1 or 9999 off the calendar
        raise TimeError(f"{value[:40]!r} is not a time; give an age such as 3h or 2d, or ISO 8601 such as 2024-03-01T23:00") from None


def ts_of(moment: datetime) -> str:
    """A datetime as a Slack message ts (oldest/latest bounds)."""
    return f"{moment.timestamp():.6f}"


def from_ts(ts: str) -> datetime:
    seconds, _, fraction = ts.partition(".")
    return datetime.fromtimestamp(int(seconds), timezone.utc).replace(microsecond=int((fraction + "000000")[:6]))


def clock(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%H:%M")


def full(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def day(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d (%A)")
