"""When a duty's slots fall: pure functions of a schedule, a time zone and an instant (UTC in, UTC out).

A daily local time across daylight saving: in the spring-forward gap the slot is the first valid instant
after it (02:30 on a day that jumps from 02:00 to 03:00 runs at 03:00); in the fall-back fold it is the
first of the two (one run, not two).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
OFF = "off"
_TIME = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class Daily:
    at: time

    def describe(self) -> str:
        return f"daily at {self.at:%H:%M}"


@dataclass(frozen=True)
class Weekly:
    weekday: int  # Monday is 0
    at: time

    def describe(self) -> str:
        return f"weekly on {WEEKDAYS[self.weekday].capitalize()} at {self.at:%H:%M}"


@dataclass(frozen=True)
class Every:
    minutes: int

    def describe(self) -> str:
        return f"every {self.minutes} min"


Schedule = Daily | Weekly | Every


def parse_time(value: str) -> time:
    match = _TIME.fullmatch(value.strip())
    if not match:
        raise ValueError(f"{value[:20]!r} is not a time of day; use HH:MM such as 08:30, or off")
    return time(int(match.group(1)), int(match.group(2)))


def parse_daily(value: str) -> Daily | None:
    return None if value.strip().lower() == OFF else Daily(parse_time(value))


def parse_weekly(value: str) -> Weekly | None:
    if value.strip().lower() == OFF:
        return None
    day, _, at = value.strip().lower().partition(" ")
    if day[:3] not in WEEKDAYS or not _DAY_NAMES[WEEKDAYS.index(day[:3])].startswith(day):
        raise ValueError(f"{value[:30]!r} is not a day and time; use DAY HH:MM such as sun 04:00, or off")
    return Weekly(WEEKDAYS.index(day[:3]), parse_time(at))


def local_instant(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of a local date and time: the first of two in a fold, the end of the gap in a gap."""
    naive = datetime.combine(day, at)
    first = naive.replace(tzinfo=tz, fold=0).astimezone(timezone.utc)
    if first.astimezone(tz).replace(tzinfo=None) == naive:
        return first
    # In a gap: fold=1 reads the time with the offset after the jump, which lands before the transition;
    # the transition itself (on a whole minute) is the first valid instant after the wall-clock time asked for.
    before = naive.replace(tzinfo=tz, fold=1).astimezone(timezone.utc)
    offset = before.astimezone(tz).utcoffset()
    moment = before.replace(second=0, microsecond=0)
    while moment.astimezone(tz).utcoffset() == offset:
        moment += timedelta(minutes=1)
    return moment


def _days_back(now: datetime, tz: ZoneInfo, count: int) -> list[date]:
    today = now.astimezone(tz).date()
    return [today - timedelta(days=n) for n in range(-1, count)]  # tomorrow first: a slot of "tomorrow" may be past in UTC terms


def _candidates(schedule: Schedule, days: list[date], tz: ZoneInfo) -> list[datetime]:
    if isinstance(schedule, Daily):
        return [local_instant(day, schedule.at, tz) for day in days]
    return [local_instant(day, schedule.at, tz) for day in days if day.weekday() == schedule.weekday]


def latest_slot(schedule: Schedule, tz: ZoneInfo, now: datetime) -> datetime:
    """The newest slot at or before `now`."""
    if isinstance(schedule, Every):
        step = schedule.minutes * 60
        return datetime.fromtimestamp(int(now.timestamp()) // step * step, timezone.utc)
    return max(slot for slot in _candidates(schedule, _days_back(now, tz, 9), tz) if slot <= now)


def next_slot(schedule: Schedule, tz: ZoneInfo, now: datetime) -> datetime:
    """The first slot after `now`."""
    if isinstance(schedule, Every):
        return latest_slot(schedule, tz, now) + timedelta(minutes=schedule.minutes)
    today = now.astimezone(tz).date()
    days = [today + timedelta(days=n) for n in range(-1, 9)]
    return min(slot for slot in _candidates(schedule, days, tz) if slot > now)
