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
    """Who ran what, where: all the dispatcher knows of the adapter it came through."""

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


class Notifier(Protocol):
    """Where requests and loud news are posted: a Slack channel, or nowhere (the console prints replies)."""

    def post(self, channel: str, reply: Reply) -> str | None: ...

    def update(self, channel: str, ts: str, reply: Reply) -> None: ...


class CommandError(Exception):
    """An expected failure a handler reports to the user in one sentence."""


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
) -> Callable[[Callable[[Context, Any], Reply]], Callable[[Context, Any], Reply]]:
    if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
        raise ValueError(f"command name {name!r} is not a valid Slack command")
    if not usage.startswith("/" + name):
        raise ValueError(f"usage of /{name} must start with /{name}")

    def register(handler: Callable[[Context, Any], Reply]) -> Callable[[Context, Any], Reply]:
        # The declaration stays on its handler; declared_in collects them, so no module-wide table fills at import.
        handler.declared = Command(  # type: ignore[attr-defined]
            name, summary, usage, args, role, handler, needs_approval, bool(needs_approval) if changes is None else changes,
            check, needs, role_for, describe, recover, may_approve,
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


def command_line(slash: str, arguments: dict) -> str:
    """A command and its validated arguments as one line (also how the timeline shows an audited command)."""
    words = []
    for value in arguments.values():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                words.append(shlex.quote(str(item)))
    return " ".join([slash, *words])


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


def _is_list(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return origin is list


def parse_arguments(cmd: Command, text: str) -> BaseModel:
    """Positional words fill the model's fields in order; quotes group words; a trailing list field takes the rest.

    A trailing FreeText field takes the rest of the line verbatim, after plain words for the fields before it.
    """
    names = list(cmd.args.model_fields)
    if names and any(isinstance(m, _FreeTextMarker) for m in cmd.args.model_fields[names[-1]].metadata):
        return _validate(cmd, dict(zip(names, text.split(None, len(names) - 1))))
    try:
        words = shlex.split(text)
    except ValueError:
        raise ArgumentError("a quote is not closed") from None
    data: dict[str, object] = {}
    if names and _is_list(cmd.args.model_fields[names[-1]].annotation):
        data = dict(zip(names[:-1], words))
        rest = words[len(names) - 1 :]
        if rest:
            data[names[-1]] = rest
    else:
        if len(words) > len(names):
            extra = " ".join(words[len(names) :])
            shown = extra if len(extra) <= 40 else extra[:40] + "…"  # never echo a flood back
            raise ArgumentError(f"unexpected {shown!r}")
        data = dict(zip(names, words))
    return _validate(cmd, data)


def _validate(cmd: Command, data: dict[str, object]) -> BaseModel:
    try:
        return cmd.args.model_validate(data)
    except ValidationError as error:
        raise ArgumentError(describe_argument_error(error)) from None


def describe_argument_error(error: ValidationError) -> str:
    item = error.errors()[0]
    name = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
    if item["type"] == "missing":
        return f"{name} is missing"
    if item["type"] == "value_error":  # our own validators already say what is wrong in full
        return item["msg"].removeprefix("Value error, ")
    message = item["msg"].replace("Input should", "should", 1)
    return f"{name} {message}" if name else message
