"""/stats: the operator guide's four key metrics, read side by side, crossed thresholds first."""

from __future__ import annotations

import re

import psycopg
from pydantic import BaseModel, field_validator

from bot.frame import blocks
from bot.frame.config import STACK_FILE_HINT
from bot.frame.humanize import count
from bot.frame.registry import FOUND, CommandError, Reply, command
from bot.frame.roles import Role
from bot.stack.compose import StackError
from bot.stack.health import MARK
from bot.stack.probes import describe_error
from bot.stack.stats import Window, activity, measure, statement_lines, verdict
from commands.context import Ctx

_WINDOW = re.compile(r"(\d+)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class StatsArgs(BaseModel):
    window: str = "15m"

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        match = _WINDOW.fullmatch(value.strip().lower())
        if not match or not match.group(1).strip("0"):  # no number, or zero
            shown = repr(value) if len(value) <= 20 else "that"
            raise ValueError(f"{shown} is not a time window; use a number and s, m, h or d, such as 15m or 2h")
        number, unit = match.groups()
        # Seven days is at most six digits; int() refuses thousands of digits with a message about Python.
        if len(number) > 6 or int(number) * _UNIT[unit] > 7 * 86400:
            raise ValueError("the window can be at most 7d")
        return match.group(0)

    @property
    def seconds(self) -> int:
        match = _WINDOW.fullmatch(self.window)
        return int(match.group(1)) * _UNIT[match.group(2)]


@command(
    "queries",
    summary="The database's long-running and slowest statements in full, shown only to you.",
    usage="/queries",
    role=Role.operator,
    needs=("database",),
)
def queries(ctx: Ctx, _args) -> Reply:
    stack = ctx.stack
    try:
        found = activity(stack)
    except (psycopg.Error, StackError) as error:
        raise CommandError(f"Could not read the database: {describe_error(error, stack.check_timeout)}.") from None
    lines = statement_lines(found, stack.config.thresholds.long_query_seconds, blocks.code_block)
    return Reply("\n".join(lines), [blocks.header("Statements of the application's database"), *blocks.sections(lines)])


@command(
    "stats",
    summary="The four key metrics: API error rate, CPU and memory, database, AI worker queue.",
    usage="/stats [window, e.g. 15m]",
    role=Role.viewer,
    args=StatsArgs,
)
def stats(ctx: Ctx, args: StatsArgs) -> Reply:
    stack = ctx.stack
    if stack.compose is None and stack.config.database is None and stack.config.queue is None:
        source = stack.config.source or ctx.settings.stack_file
        return Reply(
            f"Nothing to measure: the stack file ({source}) names no Compose project and has no [database] or [queue] "
            f"section; {STACK_FILE_HINT}"
        )
    sections = measure(stack, Window(args.window, args.seconds))
    flags = [flag for section in sections for flag in section.flags]
    project = stack.compose_project
    title = f"Key metrics of {project}" if project else "Key metrics"
    lines: list[str] = []
    body = [blocks.header(title)]
    if flags:
        worst = "fail" if any(status == "fail" for status, _flag in flags) else "warn"
        ordered = sorted(flags, key=lambda pair: pair[0] != "fail")  # critical first
        flagged = [f"*{MARK[worst]} Thresholds crossed*", *(f"• {MARK[status]} {flag}" for status, flag in ordered)]
        lines += flagged
        body += blocks.sections(flagged)
    for section in sections:
        part = [f"*{section.title}*", *section.lines]
        lines += part
        body.append(blocks.divider())
        body += blocks.sections(part)
    if not flags:
        lines.append(verdict(sections))
        body.append(blocks.context(lines[-1]))
    healthy = not flags and any(section.measured for section in sections)
    found = {key: value for section in sections for key, value in section.facts.items()}
    if flags:
        found[FOUND] = count(len(flags), "threshold") + " crossed"
    return ctx.approvals.with_change_banner(Reply("\n".join(lines), body, in_channel=True, healthy=healthy, facts=found))
