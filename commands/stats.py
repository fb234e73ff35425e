"""/stats: the operator guide's four key metrics, read side by side, crossed thresholds first."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import psycopg
from pydantic import BaseModel, Field, field_validator, model_validator

from slack_sdk.errors import SlackApiError

from bot.deploy.marks import trend_chart
from bot.frame import blocks
from bot.frame.config import STACK_FILE_HINT
from bot.frame.durations import Duration, duration_field
from bot.frame.humanize import count, duration
from bot.frame.registry import FOUND, CommandError, Reply, command
from bot.frame.roles import Role
from bot.stack.compose import StackError
from bot.stack.database import STATEMENT_MASKS, ServerSession, mask_statement
from bot.stack.health import MARK
from bot.stack.chart import save
from bot.stack.probes import describe_error
from bot.stack.stats import Window, activity, measure, statement_lines, verdict
from commands.context import Ctx



WindowField = duration_field("7d", noun="time window")


class StatsArgs(BaseModel):
    window: WindowField = Duration.parse("15m")  # typed, the reply also has a chart of the window's samples


class QueriesArgs(BaseModel):
    action: Literal["list", "cancel", "terminate"] = "list"
    pid: int | None = Field(None, ge=1, le=2**31 - 1)
    # Set by the check: when the session started. With the pid it names that session, not a later one given the same
    # pid while a terminate waits for approval.
    started: datetime | None = None

    @field_validator("action", mode="before")
    @classmethod
    def _verb(cls, action: object) -> object:
        if isinstance(action, str) and action.isdigit():
            raise ValueError(f"say what to do with pid {action}: /queries cancel {action} or /queries terminate {action}")
        return action

    @model_validator(mode="after")
    def _shape(self) -> "QueriesArgs":
        if self.action != "list" and self.pid is None:
            raise ValueError(f"{self.action} needs the session's pid, such as /queries {self.action} 12345 (/queries lists them)")
        if self.action == "list" and self.pid is not None:
            raise ValueError("/queries lists the statements; to stop one, /queries cancel PID or /queries terminate PID")
        return self


def _database_error(ctx: Ctx, error: Exception) -> CommandError:
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return CommandError(
            "The [database] section's user may not signal that session: PostgreSQL allows it to a superuser, a member of "
            "pg_signal_backend or the session's own role; grant pg_signal_backend to it."
        )
    return CommandError(f"Could not reach the database: {describe_error(error, ctx.stack.check_timeout)}.")


def _target(ctx: Ctx, args: QueriesArgs) -> ServerSession:
    """The application's session that cancel or terminate names; a sentence for any pid that is not one."""
    try:
        found = ctx.stack.database.session(args.pid)
    except (psycopg.Error, StackError) as error:
        raise _database_error(ctx, error) from None
    pid = args.pid
    if found is None or (args.started is not None and found.started != args.started):
        raise CommandError(f"No session has pid {pid} (any more); /queries lists the application's statements with their pids.")
    if found.backend_type != "client backend":
        raise CommandError(f"pid {pid} is PostgreSQL's own {found.backend_type} process, not a client's session; only the "
                           f"application's sessions can be ended here.")
    if found.database != found.app_database:
        raise CommandError(f"pid {pid} is a session of the database {found.database}, not of the application's database "
                           f"{found.app_database}; only the application's sessions can be ended here.")
    if found.own:
        raise CommandError(f"pid {pid} is the bot's own session ({found.application or 'this check'}); only the application's "
                           f"sessions can be ended here.")
    if args.action == "cancel" and found.state != "active":
        raise CommandError(f"pid {pid} runs no statement now (it is {found.state}); /queries terminate {pid} ends the session.")
    return found


def _check_queries(ctx: Ctx, args: QueriesArgs) -> None:
    if args.action != "list":
        args.started = None  # whatever was typed: the session is the one that has the pid now
        args.started = _target(ctx, args).started


def _session_line(found: ServerSession) -> str:
    running = f", its statement running for {duration(found.seconds)}" if found.seconds is not None and found.state == "active" else ""
    return (f"pid {found.pid} of {found.user} ({found.application or 'no application name'}), connected since "
            f"{found.started:%Y-%m-%d %H:%M:%S %Z}, {found.state}{running}")


def _describe_queries(ctx: Ctx, args: QueriesArgs) -> list[str]:
    try:
        found = _target(ctx, args)
    except CommandError as gone:
        return [str(gone)]
    return [f"Ends the session {_session_line(found)}; the application sees a dropped connection.",
            blocks.code_block(mask_statement(found.query))]


def _stopped(before: ServerSession, after: ServerSession | None, terminate: bool) -> bool:
    """Whether the session is gone (or the pid is another session's now); for a cancel, also whether it no longer runs
    the statement it ran (idle, or a newer statement)."""
    if after is None or after.started != before.started:
        return True
    if terminate:
        return False
    return after.state != "active" or (after.seconds or 0.0) < (before.seconds or 0.0)


def _stop(ctx: Ctx, args: QueriesArgs) -> Reply:
    database, found = ctx.stack.database, _target(ctx, args)
    terminate = args.action == "terminate"
    try:
        if not database.end(found, terminate):
            raise CommandError(f"No session has pid {args.pid} any more; nothing was signalled.")
        # The signal is asynchronous: look until the session is gone (terminate) or runs no statement (cancel).
        deadline, after = time.monotonic() + 5, found
        while not _stopped(found, after, terminate) and time.monotonic() < deadline:
            time.sleep(0.2)
            after = database.session(found.pid)
    except (psycopg.Error, StackError) as error:
        raise _database_error(ctx, error) from None
    done = _stopped(found, after, terminate)
    if terminate:
        said = (f"Ended the session {_session_line(found)}." if done else
                f"Sent pid {found.pid} the terminate signal, but its session is still connected after 5 s.")
    else:
        said = (f"Cancelled the statement of {_session_line(found)}; the session stays connected." if done else
                f"Sent pid {found.pid} the cancel signal, but its statement still runs after 5 s; /queries terminate {found.pid} "
                f"ends the session (with approval).")
    lines = [said, blocks.code_block(mask_statement(found.query)), f"Masked: {STATEMENT_MASKS}."]
    return Reply("\n".join(lines), blocks.sections(lines), failed=not done)


@command(
    "queries",
    summary="The database's long-running and slowest statements, to you alone; cancel one or end its session.",
    usage="/queries [cancel PID | terminate PID]",
    role=Role.operator,
    args=QueriesArgs,
    needs_approval=lambda args: args.action == "terminate",
    changes=False,  # ends one of the application's sessions: no deploy, restore or restart to keep out of its way
    needs=("database",),
    check=_check_queries,
    describe=_describe_queries,
)
def queries(ctx: Ctx, args: QueriesArgs) -> Reply:
    if args.action != "list":
        return _stop(ctx, args)
    stack = ctx.stack
    try:
        found = activity(stack)
    except (psycopg.Error, StackError) as error:
        raise CommandError(f"Could not read the database: {describe_error(error, stack.check_timeout)}.") from None
    lines = statement_lines(found, stack.config.thresholds.long_query_seconds, lambda query: blocks.code_block(mask_statement(query)))
    if found.long_queries or found.slow_statements:
        lines.append(f"Masked in the statements' text: {STATEMENT_MASKS}; and the secrets the redactor knows by their shape.")
    if found.long_queries:
        lines.append("/queries cancel PID cancels a statement; /queries terminate PID ends its session (with approval).")
    return Reply("\n".join(lines), [blocks.header("Statements of the application's database"), *blocks.sections(lines)])


def _chart(ctx: Ctx, window: Duration, title: str) -> str:
    """The window's stored samples drawn, with its releases and restarts: posted to the channel in Slack, a file under
    the bot's home in the console; the sentence that says where it is."""
    end = ctx.clock()
    chart = trend_chart(ctx.store, ctx.stack.name, end - window.delta, end, ctx.tz, f"{title}, last {window.text}")
    if chart is None:
        return (f"No samples are stored for the last {window.text}, so there is no chart; the bot's runners sample the "
                f"metrics each minute (FLOWSTATE_SAMPLE_DAYS keeps {ctx.settings.sample_days:g} days).")
    filename = f"stats-{end:%Y%m%d-%H%M}-{window.text}.png"
    channel = ctx.invocation.channel_id
    if ctx.slack is None or ctx.invocation.source != "slack" or not channel:
        return f"Chart of the last {window.text}: {save(chart.png, ctx.settings.home / 'charts', filename)}"
    try:
        ctx.slack.files_upload_v2(channel=channel, filename=filename, content=chart.png, title=f"{title}, last {window.text}",
                                  initial_comment=f"📈 Key metrics of the last {window.text}, releases and restarts marked.")
    except Exception as error:  # not_in_channel, missing_scope: the numbers above still stand
        reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
        return f"The chart of the last {window.text} could not be posted here ({reason}); invite the bot to this channel and ask again."
    return f"Chart of the last {window.text}: posted in this channel as {filename}."


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
    window = args.window
    sections = measure(stack, Window(window.text, window.seconds))
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
    if "window" in args.model_fields_set:  # /stats alone stays as it was: the numbers of the last 15 minutes
        said = _chart(ctx, window, title)
        lines.append(said)
        body.append(blocks.context(said))
    healthy = not flags and any(section.measured for section in sections)
    found = {key: value for section in sections for key, value in section.facts.items()}
    if flags:
        found[FOUND] = count(len(flags), "threshold") + " crossed"
    measured = Reply("\n".join(lines), body, in_channel=True, healthy=healthy, facts=found)
    return ctx.duties.freezes.with_banner(ctx.approvals.with_change_banner(measured))
