"""Times a reader sees, and Slack's message timestamps (what a user types is bot/frame/durations.py)."""

from __future__ import annotations

from datetime import datetime, timezone, tzinfo


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
