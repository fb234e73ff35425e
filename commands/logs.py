"""/logs SERVICE [--since 15m] [--grep TEXT] [--tail N]: the guide's "check the logs for each service", bounded and redacted."""

from __future__ import annotations

import re
from collections import deque

from pydantic import BaseModel, field_validator, model_validator
from slack_sdk.errors import SlackApiError

from bot.frame import blocks
from bot.stack.compose import StackError
from bot.incidents.when import TimeError, parse_time
from bot.frame.redact import LineRedactor
from bot.frame.registry import CommandError, Reply, command
from bot.frame.roles import Role
from bot.adapters.slack.client import upload_to_user
from bot.stack.compose import ComposeStack
from bot.store.engine import utcnow
from commands.context import Ctx

DEFAULT_TAIL, MAX_TAIL = 200, 2000
MAX_BYTES = 256 * 1024  # of log text shown or uploaded, however long the lines
LINE_LIMIT = 2000  # characters kept of one line
IN_MESSAGE = 2800  # characters that fit in the reply itself; more is sent as a file to the requester alone
GREP_LIMIT = 200
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_OPTIONS = ("--since", "--grep", "--tail")


class LogsArgs(BaseModel):
    service: str
    options: list[str] = []

    @field_validator("service")
    @classmethod
    def _service(cls, service: str) -> str:
        if not _SERVICE.fullmatch(service):
            raise ValueError(f"{service[:64]!r} is not a Compose service name")
        return service

    @model_validator(mode="after")
    def _options(self) -> "LogsArgs":
        words = list(self.options)
        seen = set()
        while words:
            name = words.pop(0)
            if name not in _OPTIONS:
                raise ValueError(f"{name[:40]!r} is not an option; use --since 15m, --grep TEXT or --tail N")
            if name in seen or not words:
                raise ValueError(f"{name} takes one value, once")
            seen.add(name)
            value = words.pop(0)
            if name == "--since":
                try:
                    parse_time(value, utcnow().tzinfo, utcnow())
                except TimeError as error:
                    raise ValueError(str(error)) from None
            elif name == "--tail" and not (value.isdigit() and 1 <= int(value) <= MAX_TAIL):
                raise ValueError(f"--tail is a number of lines from 1 to {MAX_TAIL}")
            elif name == "--grep" and not (0 < len(value) <= GREP_LIMIT and value.isprintable()):
                raise ValueError(f"--grep is plain text of 1 to {GREP_LIMIT} characters")
        return self

    def option(self, name: str, default: str | None = None) -> str | None:
        words = self.options
        return next((words[i + 1] for i in range(0, len(words) - 1, 2) if words[i] == name), default)


def _known(ctx: Ctx, args: LogsArgs) -> None:
    ctx.stack.refuse_unknown_services([args.service], "there are no service logs to read")


def read_logs(compose: ComposeStack, service: str, since, grep: str | None, tail: int) -> tuple[list[str], int]:
    """The last `tail` lines since `since` (containing `grep`, when given), redacted; and how many lines were read."""
    kept: deque[str] = deque(maxlen=tail)
    read = 0
    redact = LineRedactor()  # a private key spans lines
    # Without a filter the engine cuts the tail; with one, every line of the window is read and the last matches kept.
    # The filter sees redacted text: --grep cannot probe for a secret the reply would hide.
    for line in compose.logs(service, since=since, tail=None if grep else tail, timestamps=True):
        read += 1
        line = redact(line[:LINE_LIMIT])
        if grep is None or grep in line:
            kept.append(line)
    lines, size = [], 0
    for line in reversed(kept):  # the newest lines win the byte budget
        size += len(line.encode()) + 1
        if size > MAX_BYTES:
            break
        lines.append(line)
    return lines[::-1], read


@command(
    "logs",
    summary="A service's recent container logs (default: last 15 min, 200 lines), filtered and redacted.",
    usage="/logs SERVICE [--since 15m] [--grep TEXT] [--tail N]",
    role=Role.operator,
    args=LogsArgs,
    check=_known,
)
def logs(ctx: Ctx, args: LogsArgs) -> Reply:
    _known(ctx, args)
    since_text = args.option("--since", "15m")
    since = parse_time(since_text, ctx.tz, ctx.clock())
    grep = args.option("--grep")
    tail = int(args.option("--tail", str(DEFAULT_TAIL)))
    try:
        lines, read = read_logs(ctx.stack.compose, args.service, since, grep, tail)
    except StackError as error:
        raise CommandError(str(error)) from None
    what = f"{args.service} since {since_text}" + (f" containing {blocks.escape(grep)!s}" if grep else "")
    if not lines:
        return Reply(f"No log lines of {what} ({read} lines read).")
    text = "\n".join(lines)
    title = f"{len(lines)} log lines of {what}" + (f" (the last {tail})" if len(lines) == tail else "")
    invocation = ctx.invocation
    if len(text) <= IN_MESSAGE or ctx.slack is None or not invocation.channel_id:
        body = text.replace("```", "'''")
        quoted = [blocks.escape(line).replace("`", "ʼ") for line in lines]  # log lines stay text, never markup
        return Reply(f"{title}\n{body}", [blocks.section(f"*{title}*"), *blocks.sections(["```", *quoted, "```"])])
    # Logs can hold secrets no redactor knows; the reply is ephemeral, and so is the file: a direct message.
    try:
        upload_to_user(ctx.slack, invocation.user_id, f"{args.service}-logs.txt", title, text, f"/logs {args.service}: {title}.")
    except Exception as error:  # missing_scope: an app installed before /logs needed im:write must be reinstalled
        reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
        raise CommandError(f"The logs are too long for a message and sending them to you failed ({reason}); narrow them with --grep or --tail.") from None
    return Reply(f"{title}: sent to you alone in a direct message as {args.service}-logs.txt.")
