"""Lengths and times a user types: one `Duration` ("30m", "3h", "2d") and one `Moment` (an age or ISO 8601).

Every command that takes a window, a mute or a `--since` declares one of these in its arguments model, so
"3h" means the same everywhere, is refused with the same sentence, and /help shows the same limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, ValidationInfo

UNITS = (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("min", 60), ("m", 60), ("s", 1))
_SECONDS = dict(UNITS)
_TYPED = re.compile(r"(\d+)\s*(s|m|min|h|d|w)")
# More digits than any limit needs count as "too long"; int() refuses thousands of digits with a message about Python.
_DIGITS = 9
_HINT = "use a number and s, m, h or d, such as 15m or 2h"
# Six digits of weeks reach before year 1, where datetime arithmetic overflows; nobody reads logs or
# history older than a year through the bot.
MAX_AGE = "52w"


class TimeError(ValueError):
    """A time or duration a user typed that is not one, or is out of bounds; the message is the user's sentence."""


@dataclass(frozen=True)
class Duration:
    seconds: int
    text: str  # as typed, tidied ("15m"): what replies and the audit show

    def __str__(self) -> str:
        return self.text

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    @classmethod
    def read(cls, value: str) -> "Duration | None":
        """A positive number and a unit, or None when VALUE is not one."""
        match = _TYPED.fullmatch(value.strip().lower())
        if not match or not match.group(1).strip("0"):  # no number, or zero
            return None
        digits, unit = match.groups()
        number = int(digits) if len(digits) <= _DIGITS else 10**_DIGITS
        return cls(number * _SECONDS[unit], f"{number}{unit}")

    @classmethod
    def parse(cls, value: str) -> "Duration":
        read = cls.read(value)
        if read is None:
            raise TimeError(f"{_shown(value)} is not a duration; {_HINT}")
        return read


@dataclass(frozen=True)
class DurationLimit:
    """The longest a field's duration may be, and the word its refusal uses ("'x' is not a time window")."""

    most: str
    noun: str = "duration"

    def check(self, value: object, info: ValidationInfo) -> Duration:
        if isinstance(value, Duration):
            value = value.text
        if not isinstance(value, str):
            raise TimeError(f"the {_field(info)} should be a duration such as 15m")
        duration = Duration.read(value)
        if duration is None:
            raise TimeError(f"{_shown(value)} is not a {self.noun}; {_HINT}")
        if duration.seconds > Duration.parse(self.most).seconds:
            raise TimeError(f"the {_field(info)} can be at most {self.most}")
        return duration


def duration_field(most: str, noun: str = "duration") -> Any:
    """A field holding a Duration of at most MOST, such as `window: duration_field("7d") = Duration.parse("15m")`."""
    limit = DurationLimit(most, noun)
    return Annotated[Duration, PlainValidator(limit.check), PlainSerializer(str, return_type=str), limit]


@dataclass(frozen=True)
class Moment:
    """A point in time as typed: an age ("3h" ago, resolved when the command runs) or an ISO 8601 time."""

    text: str
    age: Duration | None = None
    at: datetime | None = None  # without an offset when typed without one: in the configured zone, known at run time

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, value: str) -> "Moment":
        value = value.strip()
        if _TYPED.fullmatch(value.lower()):
            age = Duration.read(value)
            if age is not None and age.seconds > Duration.parse(MAX_AGE).seconds:
                raise TimeError(f"{value} is too long ago; an age can be at most {MAX_AGE} (a year), or give an ISO 8601 time")
            if age is not None:
                return cls(age.text, age=age)
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if at.tzinfo is not None:
                at.astimezone(timezone.utc)
            else:  # any zone must be able to place it: within a day of the calendar's edge it would overflow when resolved
                at.replace(tzinfo=timezone.utc) - timedelta(days=1) + timedelta(days=2)
        except (ValueError, OverflowError):  # OverflowError: an offset that moves year 1 or 9999 off the calendar
            raise TimeError(f"{value[:40]!r} is not a time; give an age such as 3h or 2d, or ISO 8601 such as 2024-03-01T23:00") from None
        return cls(value, at=at)

    def resolve(self, tz: tzinfo, now: datetime) -> datetime:
        """The moment in UTC: an age counts back from NOW; a time without an offset is in TZ."""
        if self.age is not None:
            return now - self.age.delta
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=tz)
        return at.astimezone(timezone.utc)


def _moment(value: object) -> Moment:
    if isinstance(value, Moment):
        return value
    if not isinstance(value, str):
        raise TimeError("give an age such as 3h or 2d, or ISO 8601 such as 2024-03-01T23:00")
    return Moment.parse(value)


MomentField = Annotated[Moment, PlainValidator(_moment), PlainSerializer(str, return_type=str)]


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 20 else "that"


def _field(info: ValidationInfo) -> str:
    return (info.field_name or "duration").replace("_", " ")
