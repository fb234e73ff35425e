"""What a command takes, read from its declaration: each argument and option with its limits and default, and an example.

/help COMMAND shows it; nothing here is written twice by hand: the limits are the pydantic Field constraints,
the Literal choices, the Duration and Moment bounds the parser itself enforces.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass

from pydantic import BaseModel

from bot.frame.durations import MAX_AGE, DurationLimit, Moment
from bot.frame.registry import Command, Option, field_limits, is_flag, is_free_text, options_of, typed_fields


@dataclass(frozen=True)
class Argument:
    shown: str  # as typed: SERVICE, --since TIME, --any-commit
    says: str  # what it is for (the Field's description), may be empty
    accepts: str  # the values it takes and their limits, may be empty
    default: str | None  # None: required, or nothing when left out


def arguments(cmd: Command) -> list[Argument]:
    """The positional arguments in order, then the options, as the parser reads them."""
    model = cmd.args
    found = [_argument(model, name, name.upper()) for name in typed_fields(model)]
    for option_name, (field_name, option) in options_of(model).items():
        shown = option_name if is_flag(model, field_name) else f"{option_name} {option.metavar}"
        found.append(_argument(model, field_name, shown, option))
    return found


def example(cmd: Command) -> str | None:
    """A line that runs: the declared examples of the fields; None when a required argument has none."""
    model = cmd.args
    words = []
    for name in typed_fields(model):
        value = _example(model, name)
        if value is None and model.model_fields[name].is_required():
            return None
        if value is not None:
            words.append(value)
    for option_name, (field_name, _option) in options_of(model).items():
        value = _example(model, field_name)
        if value is not None:
            words.append(option_name if is_flag(model, field_name) else f"{option_name} {value}")
    return " ".join([cmd.slash, *words]) if words else None


def _example(model: type[BaseModel], name: str) -> str | None:
    examples = model.model_fields[name].examples
    if not examples:
        return None
    value = str(examples[0])
    return f'"{value}"' if " " in value and not is_free_text(model, name) else value


def _argument(model: type[BaseModel], name: str, shown: str, option: Option | None = None) -> Argument:
    info = model.model_fields[name]
    default = None
    if not info.is_required() and info.default not in (None, False, [], ""):
        default = info.default.name if isinstance(info.default, enum.Enum) else str(info.default)
    return Argument(shown, info.description or "", _accepts(model, name, option), default)


def _accepts(model: type[BaseModel], name: str, option: Option | None) -> str:
    info = model.model_fields[name]
    limits = field_limits(model, name)
    choices = _choices(info.annotation)
    if choices:
        return "one of " + ", ".join(choices)
    duration = next((marker for marker in _markers(info.annotation, info.metadata) if isinstance(marker, DurationLimit)), None)
    if duration is not None:
        return f"a duration such as 30m, 3h or 2d, at most {duration.most}"
    if _holds(info.annotation, Moment):
        return f"an age such as 3h or 2d (at most {MAX_AGE}), or an ISO 8601 time such as 2024-03-01T23:00"
    if "ge" in limits and "le" in limits:
        counted = f" of {option.unit}" if option and option.unit else ""
        if limits["le"] >= 2**31 - 1:  # an id: its upper bound only keeps the database's column from overflowing
            return f"a number{counted}, {limits['ge']} or more"
        return f"a number{counted} from {limits['ge']} to {limits['le']}"
    free = ", the rest of the line as typed" if is_free_text(model, name) else ""
    if "max_length" in limits:
        least = f"{limits['min_length']} to " if "min_length" in limits else "at most "
        return f"{least}{limits['max_length']} characters{free}"
    if free:
        return free.removeprefix(", ")
    if typing.get_origin(info.annotation) is list or _holds(info.annotation, list):
        return "words separated by spaces"
    return ""


def _choices(annotation: object) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(choice) for choice in typing.get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.name for member in annotation]
    return next((found for arg in typing.get_args(annotation) if (found := _choices(arg))), [])


def _markers(annotation: object, metadata: list) -> list:
    """A field's metadata, and that of the Annotated types inside it (`Annotated[Duration, limit] | None`)."""
    found = list(metadata)
    if typing.get_origin(annotation) is typing.Annotated:
        found += list(annotation.__metadata__)
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is not None or typing.get_args(arg):
            found += _markers(arg, [])
    return found


def _holds(annotation: object, kind: type) -> bool:
    if annotation is kind or typing.get_origin(annotation) is kind:
        return True
    return any(_holds(arg, kind) for arg in typing.get_args(annotation))


