"""/logs SERVICE [--since 15m] [--grep TEXT] [--tail N]: the guide's "check the logs for each service", bounded and redacted."""

from __future__ import annotations

import re
from collections import deque
from typing import Annotated

from pydantic import BaseModel, Field, field_validator
from slack_sdk.errors import SlackApiError

from bot.frame import blocks
from bot.stack.compose import StackError
from bot.frame.durations import Moment, MomentField
from bot.frame.humanize import count
from bot.frame.publish import direct_file
from bot.frame.redact import LineRedactor
from bot.frame.registry import CommandError, Option, Reply, command
from bot.frame.roles import Role
from bot.stack.runtime import StackRuntime
from commands.context import Ctx

DEFAULT_TAIL, MAX_TAIL = 200, 2000
MAX_BYTES = 256 * 1024  # of log text shown or uploaded, however long the lines
LINE_LIMIT = 2000  # characters kept of one line
IN_MESSAGE = 2800  # characters that fit in the reply itself; more is sent as a file to the requester alone
GREP_LIMIT = 200
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class LogsArgs(BaseModel):
    service: str = Field(description="a Compose service of the stack", examples=["backend"])
    since: Annotated[MomentField, Option("--since", "TIME")] = Field(
        Moment.parse("15m"), description="how far back to read", examples=["1h"]
    )
    grep: Annotated[str | None, Option("--grep", "TEXT")] = Field(
        None, min_length=1, max_length=GREP_LIMIT, description="only the lines containing this plain text (not a pattern)",
        examples=["timeout"],
    )
    tail: Annotated[int, Option("--tail", "N", unit="lines")] = Field(
        DEFAULT_TAIL, ge=1, le=MAX_TAIL, description="the last lines to show"
    )

    @field_validator("service")
    @classmethod
    def _service(cls, service: str) -> str:
        if not _SERVICE.fullmatch(service):
            raise ValueError(f"{service[:64]!r} is not a Compose service name")
        return service

    @field_validator("grep")
    @classmethod
    def _plain(cls, grep: str | None) -> str | None:
        if grep is not None and not grep.isprintable():
            raise ValueError(f"--grep is plain text of 1 to {GREP_LIMIT} characters")
        return grep


def _known(ctx: Ctx, args: LogsArgs) -> None:
    ctx.stack.refuse_unknown_services([args.service], "there are no service logs to read")


def read_logs(compose: StackRuntime, service: str, since, grep: str | None, tail: int) -> tuple[list[str], int]:
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
    since_text, grep, tail = args.since.text, args.grep, args.tail
    since = args.since.resolve(ctx.tz, ctx.clock())
    try:
        lines, read = read_logs(ctx.stack.compose, args.service, since, grep, tail)
    except StackError as error:
        raise CommandError(str(error)) from None
    what = f"{args.service} since {since_text}" + (f" containing {blocks.escape(grep)!s}" if grep else "")
    if not lines:
        return Reply(f"No log lines of {what} ({read} lines read).")
    text = "\n".join(lines)
    title = f"{count(len(lines), 'log line')} of {what}" + (f" (the last {tail})" if len(lines) == tail else "")
    invocation = ctx.invocation
    if len(text) <= IN_MESSAGE or ctx.slack is None or not invocation.channel_id:
        body = text.replace("```", "'''")
        quoted = [blocks.escape(line).replace("`", "ʼ") for line in lines]  # log lines stay text, never markup
        return Reply(f"{title}\n{body}", [blocks.section(f"*{title}*"), *blocks.sections(["```", *quoted, "```"])])
    # Logs can hold secrets no redactor knows; the reply is ephemeral, and so is the file: a direct message.
    try:
        direct_file(ctx.slack, invocation.user_id, f"{args.service}-logs.txt", title, text, f"/logs {args.service}: {title}.")
    except Exception as error:  # missing_scope: an app installed before /logs needed im:write must be reinstalled
        reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
        raise CommandError(f"The logs are too long for a message and sending them to you failed ({reason}); narrow them with --grep or --tail.") from None
    return Reply(f"{title}: sent to you alone in a direct message as {args.service}-logs.txt.")
