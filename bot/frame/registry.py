"""One declaration per command drives parsing, /help, authorization and the Slack manifest."""

from __future__ import annotations

import importlib
import pkgutil
import re
import shlex
import types
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ValidationError

from bot.frame.roles import Role

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Invocation:
    """Who ran what, where: all the pipeline knows of the adapter it came through."""

    user_id: str
    command: str  # without the slash
    text: str = ""
    channel_id: str | None = None
    source: Literal["slack", "console"] = "console"
    origin: str | None = None  # the OS user behind a console (whatever --as says)


@dataclass
class Reply:
    text: str
    blocks: list[dict] = field(default_factory=list)
    in_channel: bool = False
    failed: bool = False  # the command ran and failed (its job ends as failed, not succeeded)
    healthy: bool | None = None  # a report's verdict (/health, /stats): nothing failing, no threshold crossed
    # What a report found, as data for its audit row and the incident timeline: FOUND (a phrase, "3 failing checks"),
    # DOWN (services whose container is not running or not healthy), EDGE_ERROR_RATE (the edge's 5xx rate, percent).
    facts: dict[str, Any] = field(default_factory=dict)
    error_id: str | None = None  # the handler raised unexpectedly (the id is in the bot's log)


FOUND, DOWN, EDGE_ERROR_RATE = "found", "down", "edge_error_rate"
GREEN = "green"  # a /health's verdict as a fact: every check green (an incident's time to mitigate, bot/incidents/metrics.py)


class Notifier(Protocol):
    """Where requests and loud news are posted: a Slack channel, or nowhere (the console prints replies)."""

    def post(self, channel: str, reply: Reply) -> str | None: ...

    def update(self, channel: str, ts: str, reply: Reply) -> None: ...


class CommandError(Exception):
    """An expected failure a handler reports to the user in one sentence."""


class Decided(CommandError):
    """A refusal a handler has already audited (a decision's `denied` row): one refusal, one row, no outcome row after."""


class ArgumentError(Exception):
    pass


@dataclass
class Context:
    """What a handler is given, and its command's check, describe and recover too: who asks, with which role (None
    before it is known: a check, a description, a recovery), where progress goes, its job. The composition root
    (bot/runtime.py) builds it with what the commands use beside this (commands/context.py), never the whole runtime."""

    invocation: Invocation
    role: Role | None
    progress: Callable[[str], None] = lambda _text: None
    session: "Session | None" = None
    job_id: int | None = None


class NoArgs(BaseModel):
    pass


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    usage: str
    args: type[BaseModel]
    role: Role
    handler: Callable[[Context, Any], Reply]
    # True, or a test of the parsed arguments (e.g. granting admin needs approval, other roles do not).
    needs_approval: bool | Callable[[Any], bool] = False
    # Changes the operated stack: runs only while holding the stack's one-change lock.
    changes: bool = False
    # Checks that need the stack (is this a known service?), run before a request is made; raise CommandError.
    check: Callable[[Context, Any], None] | None = None
    # The stack file's sections it cannot run without ("database"), or a test of the parsed arguments giving them.
    needs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
    # A higher role for some uses, from the parsed arguments (`role` is what any use needs).
    role_for: Callable[[Any], Role] | None = None
    # Facts an approver needs beyond the command line (what a restore replaces), shown on the request's message.
    describe: Callable[[Context, Any], list[str]] | None = None
    # After the bot died while this command ran: put the stack in a safe state and say what state it is in.
    # `job`: its row (bot/jobs/model.py Job), which the frame's declarations do not import.
    recover: Callable[[Context, Any], str] | None = None
    # A stricter rule for who may approve (args, approver's id, approver's role): why this person may not, or None.
    # Such a request is never run with --break-glass: its approval is the point.
    may_approve: Callable[[Any, str, Role], str | None] | None = None
    # Refused during a change freeze: what changes the stack does, unless it declares otherwise (a backup only reads).
    freezes: bool = False

    @property
    def slash(self) -> str:
        return "/" + self.name

    def role_needed(self, args: BaseModel) -> Role:
        return max(self.role, self.role_for(args)) if self.role_for else self.role

    def sections_needed(self, args: BaseModel) -> tuple[str, ...]:
        return self.needs(args) if callable(self.needs) else self.needs

    def approval_needed(self, args: BaseModel) -> bool:
        if callable(self.needs_approval):
            return bool(self.needs_approval(args))
        return self.needs_approval


def command(
    name: str,
    *,
    summary: str,
    usage: str,
    role: Role,
    args: type[BaseModel] = NoArgs,
    needs_approval: bool | Callable[[Any], bool] = False,
    changes: bool | None = None,  # default: what needs approval changes the stack
    check: Callable[[Context, Any], None] | None = None,
    needs: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = (),
    role_for: Callable[[Any], Role] | None = None,
    describe: Callable[[Context, Any], list[str]] | None = None,
    recover: Callable[[Context, Any], str] | None = None,
    may_approve: Callable[[Any, str, Role], str | None] | None = None,
    freezes: bool | None = None,  # default: what changes the stack stops during a change freeze
) -> Callable[[Callable[[Context, Any], Reply]], Callable[[Context, Any], Reply]]:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
        raise ValueError(f"command name {name!r} is not a valid Slack command")
    if not usage.startswith("/" + name):
        raise ValueError(f"usage of /{name} must start with /{name}")

    def register(handler: Callable[[Context, Any], Reply]) -> Callable[[Context, Any], Reply]:
        # The declaration stays on its handler; declared_in collects them, so no module-wide table fills at import.
        changing = bool(needs_approval) if changes is None else changes
        handler.declared = Command(  # type: ignore[attr-defined]
            name, summary, usage, args, role, handler, needs_approval, changing,
            check, needs, role_for, describe, recover, may_approve, changing if freezes is None else freezes,
        )
        return handler

    return register


def declared_in(package: types.ModuleType) -> dict[str, Command]:
    """A fresh command set: the declarations of every module of the package, by name."""
    found: dict[str, Command] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for value in vars(module).values():
            cmd = getattr(value, "declared", None)
            if not isinstance(cmd, Command) or getattr(value, "__module__", None) != module.__name__:
                continue
            if cmd.name in found:
                raise ValueError(f"/{cmd.name} is declared twice")
            found[cmd.name] = cmd
    return found


# ---- argument parsing -----------------------------------------------------------------------

_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^@?([UW][A-Z0-9]+)$")


def _user_id(value: object) -> object:
    """Slack sends escaped mentions (<@U123|name>); the console takes U123 or @U123."""
    if not isinstance(value, str):
        return value
    match = _MENTION.match(value) or _USER_ID.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a user; mention them as @name in Slack or give their user id (U...)")
    return match.group(1)


UserId = typing.Annotated[str, BeforeValidator(_user_id)]


class _FreeTextMarker:
    """Marks a last field that takes the rest of the line as typed: quotes and apostrophes are text, not syntax."""


FreeText = typing.Annotated[str, _FreeTextMarker()]


def is_free_text(model: type[BaseModel], field_name: str) -> bool:
    return any(isinstance(marker, _FreeTextMarker) for marker in model.model_fields[field_name].metadata)


_OPTION_NAME = re.compile(r"--[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class Option:
    """Marks a field typed as `--name VALUE` (or `--name=VALUE`) anywhere on the line; a bool field is a flag (`--name`).

    METAVAR names the value in /help and in the refusal of an unknown option; UNIT says what a number counts ("lines").
    """

    name: str
    metavar: str = "VALUE"
    unit: str = ""

    def __post_init__(self) -> None:
        if not _OPTION_NAME.fullmatch(self.name):
            raise ValueError(f"option {self.name!r} should look like --name")


class SetByCheck:
    """Marks a field the command's check fills in before a request is made (what is approved): never typed."""


def typed_fields(model: type[BaseModel]) -> list[str]:
    """The positional fields, in order: neither an option nor set by a check."""
    options = {field_name for field_name, _option in options_of(model).values()}
    return [
        name for name, info in model.model_fields.items()
        if name not in options and not any(isinstance(marker, SetByCheck) for marker in info.metadata)
    ]


def options_of(model: type[BaseModel]) -> dict[str, tuple[str, Option]]:
    """The declared options of an arguments model: option name -> (field name, its Option)."""
    found = {}
    for field_name, info in model.model_fields.items():
        for marker in info.metadata:
            if isinstance(marker, Option):
                found[marker.name] = (field_name, marker)
    return found


def is_flag(model: type[BaseModel], field_name: str) -> bool:
    return model.model_fields[field_name].annotation is bool


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return origin is list


def parse_arguments(cmd: Command, text: str) -> BaseModel:
    """Declared `--options` anywhere; the other words fill the model's fields in order; quotes group words.

    A trailing list field takes the rest. A trailing FreeText field takes the rest of the line verbatim, after plain
    words for the fields before it; only the command's own options are taken out of it.
    """
    options = options_of(cmd.args)
    names = typed_fields(cmd.args)
    if names and is_free_text(cmd.args, names[-1]):
        text, data = _options_in_free_text(cmd, text, options)
        return _validate(cmd, {**dict(zip(names, text.split(None, len(names) - 1))), **data})
    try:
        words = shlex.split(text)
    except ValueError:
        raise ArgumentError("a quote is not closed") from None
    room = None if names and _is_list(cmd.args.model_fields[names[-1]].annotation) else len(names)
    words, data = _options_in_words(cmd, words, options, room)
    if room is None:
        data.update(zip(names[:-1], words))
        rest = words[len(names) - 1 :]
        if rest:
            data[names[-1]] = rest
    else:
        if len(words) > len(names):
            extra = " ".join(words[len(names) :])
            shown = extra if len(extra) <= 40 else extra[:40] + "…"  # never echo a flood back
            raise ArgumentError(f"unexpected {shown!r}")
        data.update(zip(names, words))
    return _validate(cmd, data)


def _options_in_words(
    cmd: Command, words: list[str], options: dict[str, tuple[str, Option]], room: int | None
) -> tuple[list[str], dict]:
    """Takes the declared options out of the words; the words left are positional (ROOM of them fit; None: any number).

    An undeclared --word is a positional word while there is room for it, and its field judges it ("a ref may not
    start with -"); on a line with more words than fields it is the likely mistake, refused naming the options.
    """
    if not options:  # a command without options reads "--x" as a word (a note may hold one)
        return words, {}
    taken, data = _take_options(cmd, words, options)
    rest = [word for at, word in enumerate(words) if at not in taken]
    unknown = [word.partition("=")[0] for word in rest if _OPTION_NAME.fullmatch(word.partition("=")[0])]
    if unknown and room is not None and len(rest) > room:
        raise ArgumentError(f"{unknown[0][:40]!r} is not an option; use {_listed(cmd.args, options)}")
    return rest, data


def _options_in_free_text(cmd: Command, text: str, options: dict[str, tuple[str, Option]]) -> tuple[str, dict]:
    """Takes the command's own options out of a free text (any other --word is text, as typed)."""
    if not options:
        return text, {}
    tokens = list(re.finditer(r"\S+", text))
    taken, data = _take_options(cmd, [token.group() for token in tokens], options)
    for at in sorted(taken, reverse=True):  # from the end, so the earlier positions stay right
        text = text[: tokens[at].start()].rstrip() + " " + text[tokens[at].end() :].lstrip()
    return text.strip(), data


def _take_options(cmd: Command, words: list[str], options: dict[str, tuple[str, Option]]) -> tuple[set[int], dict]:
    """The declared options among the words, by field; and the positions of the words they took."""
    taken, data, at = set(), {}, 0
    while at < len(words):
        name, has_value, value = words[at].partition("=")
        if name not in options:
            at += 1
            continue
        taken.add(at)
        if not has_value and not is_flag(cmd.args, options[name][0]):
            # The next word is the value, unless it is another of the options (then this one has none).
            following = words[at + 1] if at + 1 < len(words) else None
            value = following if following is not None and following.partition("=")[0] not in options else None
            if value is not None:
                at += 1
                taken.add(at)
        _take(cmd, data, options[name], value, has_value)
        at += 1
    return taken, data


def _take(cmd: Command, data: dict, declared: tuple[str, Option], value: str | None, has_value: bool) -> None:
    field_name, option = declared
    if is_flag(cmd.args, field_name):
        if has_value or field_name in data:
            raise ArgumentError(f"{option.name} is a flag: give it once, without a value")
        data[field_name] = True
        return
    if value is None or field_name in data:
        raise ArgumentError(f"{option.name} takes one value, once")
    data[field_name] = value


def _listed(model: type[BaseModel], options: dict[str, tuple[str, Option]]) -> str:
    shown = [name if is_flag(model, field_name) else f"{name} {option.metavar}" for name, (field_name, option) in options.items()]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def _validate(cmd: Command, data: dict[str, object]) -> BaseModel:
    try:
        return cmd.args.model_validate(data)
    except ValidationError as error:
        raise ArgumentError(_option_error(cmd.args, error) or describe_argument_error(error, cmd.usage)) from None


def field_limits(model: type[BaseModel], field_name: str) -> dict[str, Any]:
    """A field's declared bounds (ge, le, min_length, max_length ...) from its pydantic Field."""
    limits = {}
    for marker in model.model_fields[field_name].metadata:
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(marker, key, None) is not None:
                limits[key] = getattr(marker, key)
    return limits


def _option_error(model: type[BaseModel], error: ValidationError) -> str | None:
    """A bad option value, said with the option's name as typed ("--tail is a number of lines from 1 to 2000")."""
    item = error.errors()[0]
    declared = {field_name: option for field_name, option in options_of(model).values()}
    option = declared.get(item["loc"][0]) if item["loc"] else None
    if option is None:
        return None
    if item["type"] == "value_error":  # our own validators already say what is wrong in full
        return item["msg"].removeprefix("Value error, ")
    limits = field_limits(model, item["loc"][0])
    if item["type"].startswith("int_") or item["type"] in ("greater_than_equal", "less_than_equal"):
        counted = f" of {option.unit}" if option.unit else ""
        bounds = f" from {limits['ge']} to {limits['le']}" if {"ge", "le"} <= set(limits) else ""
        return f"{option.name} is a number{counted}{bounds}"
    if item["type"] in ("string_too_short", "string_too_long"):
        return f"{option.name} is plain text of {limits.get('min_length', 0)} to {limits['max_length']} characters"
    return f"{option.name} {item['msg'].replace('Input should', 'should', 1)}"


def describe_argument_error(error: ValidationError, usage: str = "") -> str:
    item = error.errors()[0]
    name = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
    if name.upper() in re.findall(r"[A-Z][A-Z_]*", usage):  # as the usage shows it, and the user types it: BACKUP_ID
        name = name.upper()
    if item["type"] == "missing":
        return f"{name} is missing"
    if item["type"] == "value_error":  # our own validators already say what is wrong in full
        return item["msg"].removeprefix("Value error, ")
    message = item["msg"].replace("Input should", "should", 1)
    return f"{name} {message}" if name else message


def command_line(cmd: Command, arguments: dict) -> str:
    """A command and its validated arguments as one line (what an approver approves; how the timeline shows a command).

    Options are shown by name when they differ from their default; a flag by its name alone.
    """
    options = {field_name: option for field_name, option in options_of(cmd.args).values()}
    words, named = [], []
    for name, value in arguments.items():
        option = options.get(name)
        if option is None:
            words += [shlex.quote(str(item)) for item in (value if isinstance(value, list) else [value]) if item is not None]
        elif value not in (None, False) and value != _default(cmd.args, name):
            named += [option.name] if value is True else [option.name, shlex.quote(str(value))]
    return " ".join([cmd.slash, *words, *named])


def _default(model: type[BaseModel], field_name: str) -> object:
    default = model.model_fields[field_name].default
    return str(default) if default is not None and not isinstance(default, (bool, int, float, list)) else default
