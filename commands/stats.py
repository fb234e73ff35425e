"""/stats: the operator guide's four key metrics, read side by side, crossed thresholds first."""

from __future__ import annotations

import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Literal

import psycopg
from pydantic import BaseModel, Field, field_validator, model_validator

from bot.frame import blocks
from bot.frame.config import STACK_FILE_HINT, StackConfig, Thresholds
from bot.stack.compose import StackError
from bot.stack.health import EDGE_KEY, MARK, EdgeCount, read_access_log
from bot.frame.durations import Duration, duration_field
from bot.frame.humanize import count, duration, size
from bot.stack.probes import CHECK_POOL, describe_error
from bot.frame.registry import EDGE_ERROR_RATE, FOUND, CommandError, Context, Reply, command
from bot.frame.roles import Role
from bot.stack.database import STATEMENT_MASKS, DatabaseActivity, ServerSession, StackDatabase, mask_statement, statement_summary
from bot.stack.redis import StackRedis
from bot.store.engine import utcnow

Window = duration_field("7d", noun="time window")


class StatsArgs(BaseModel):
    window: Window = Duration.parse("15m")


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (warn or fail, what crossed which level)
    measured: bool = True  # False: not configured, or it could not be read; then it vouches for nothing
    # Every threshold this section checked, by a stable key: the flag's text when crossed, None when not (the watch's input).
    checked: dict[str, str | None] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # numbers for the incident timeline (the edge's 5xx rate)

    def check(self, key: str, status: str, flag: str) -> None:
        """A measured threshold: ok, warn (above its warning level) or fail (above its critical level)."""
        self.checked[key] = f"{MARK[status]} {flag}" if status != "ok" else None
        if status != "ok":
            self.flags.append((status, flag))


def _rate_line(who: str, count: EdgeCount, seconds: int) -> str:
    if not count.total:
        return f"{who}: no requests logged."
    newest = f" (the newest {count.total:,})" if count.capped else ""
    per_minute = count.errors / (seconds / 60)
    return f"{who}: {count.errors:,} of {count.total:,} requests{newest} answered 5xx: {count.percent:.1f}% ({per_minute:.1f} per minute)"


def api_errors(ctx: Context, args: StatsArgs) -> Section:
    """The 5xx rate at the edge (what users got: a dead backend's 502s count) beside the backend's own."""
    stack, docker = ctx.runtime.stack, ctx.runtime.docker
    service, edge = stack.api_errors.compose_service, stack.edge
    section = Section(f"API errors (5xx, last {args.window})")
    if docker is None:
        section.lines.append("The stack file names no Compose project, so there are no logs to read.")
        section.measured = False
        return section
    since = utcnow() - args.window.delta
    at_edge = CHECK_POOL.submit(read_access_log, docker, edge.compose_service, since) if edge else None
    at_backend = read_access_log(docker, service, since)
    if edge is None:
        section.lines.append("Edge: the stack file has no [edge] section, so users' errors at the proxy are not counted.")
    else:
        count = at_edge.result()
        section.lines.append(_rate_line(f"Edge ({edge.compose_service}, what users got)", count, args.window.seconds))
        if count.total >= edge.min_requests:
            section.facts[EDGE_ERROR_RATE] = count.percent
            status = "fail" if count.percent >= edge.critical_percent else "warn" if count.percent >= edge.warning_percent else "ok"
            section.check(EDGE_KEY, status, f"Error rate at the edge ({edge.compose_service}) {count.percent:.1f}% "
                                            f"(warning {edge.warning_percent:g}%, critical {edge.critical_percent:g}%)")
    count = at_backend
    section.lines.append(_rate_line(f"Backend ({service}'s own log)", count, args.window.seconds))
    limits = stack.thresholds
    section.check("api_error_rate", limits.severity("error_rate_percent", count.percent),
                  f"API error rate at the backend {count.percent:.1f}% ({_levels(limits, 'error_rate_percent', '%')})")
    return section


def _levels(limits: Thresholds, key: str, unit: str = "") -> str:
    return f"warning {getattr(limits, key):,g}{unit}, critical {getattr(limits.critical, key):,g}{unit}"


def containers(ctx: Context, _args: StatsArgs) -> Section:
    stack, docker = ctx.runtime.stack, ctx.runtime.docker
    section = Section("CPU and memory (as docker stats)")
    if docker is None:
        section.lines.append("The stack file names no Compose project, so there are no containers to sample.")
        section.measured = False
        return section
    samples = docker.stats()
    stopped = [state for state in docker.states() if state.status != "running"]
    if not samples and not stopped:
        section.lines.append(f"No containers in Compose project {docker.project}.")
    for state in stopped:
        # docker stats samples running containers only; a stopped service must not just vanish from the list.
        how = f"{state.status} with code {state.exit_code}" if state.status in ("exited", "dead") else state.status
        section.lines.append(f"{state.service}: not running ({how})")
        section.flags.append(("fail", f"{state.service} is not running ({how})"))  # the watch sees it as a failing /health check
    for sample in samples:
        memory = f"{size(sample.memory_bytes)} / {size(sample.memory_limit)} ({sample.memory_percent:.1f}%)"
        section.lines.append(f"{sample.service}: CPU {sample.cpu_percent:.1f}%, memory {memory}")
        limits = stack.thresholds
        section.check(f"cpu:{sample.service}", limits.severity("cpu_percent", sample.cpu_percent),
                      f"{sample.service} CPU {sample.cpu_percent:.0f}% ({_levels(limits, 'cpu_percent', '%')})")
        section.check(f"memory:{sample.service}", limits.severity("memory_percent", sample.memory_percent),
                      f"{sample.service} memory {sample.memory_percent:.0f}% ({_levels(limits, 'memory_percent', '%')})")
    return section


def _activity(stack: StackConfig) -> DatabaseActivity:
    return StackDatabase(stack.database.dsn, stack.stack.check_timeout).activity(stack.thresholds.long_query_seconds)


def statement_lines(activity: DatabaseActivity, long_query_seconds: float, show: Callable[[str], str]) -> list[str]:
    """The long-running and the slowest statements, each statement's text as `show` gives it."""
    lines = []
    if activity.long_queries:
        lines.append(f"Running longer than {long_query_seconds:g} s (the bot's own sessions, backups and drills left out):")
        lines += [f"• pid {q.pid} ({q.user}, {q.state}) {duration(q.seconds)}: {show(q.query)}" for q in activity.long_queries]
    else:
        lines.append(f"No query running longer than {long_query_seconds:g} s (the bot's own sessions, backups and drills left out).")
    if activity.slow_statements is None:
        lines.append(f"Slowest statements: {activity.statements_note}.")
    elif activity.slow_statements:
        lines.append("Slowest statements (mean time, pg_stat_statements; the bot's own and its backups' and drills' left out):")
        lines += [f"• {s.mean_ms:.1f} ms × {count(s.calls, 'call')}: {show(s.query)}" for s in activity.slow_statements]
    return lines


def database(ctx: Context, _args: StatsArgs) -> Section:
    stack = ctx.runtime.stack
    section = Section("Database")
    if stack.database is None:
        section.lines.append("The stack file has no [database] section.")
        section.measured = False
        return section
    limits = stack.thresholds
    activity = _activity(stack)
    states = ", ".join(f"{state} {count}" for state, count in activity.by_state.items())
    percent = 100.0 * activity.connections / activity.max_connections
    section.lines.append(f"Connections: {activity.connections}/{activity.max_connections} ({percent:.0f}%): {states}")
    section.check("db_connections", limits.severity("connections_percent", percent),
                  f"database connections {percent:.0f}% of max_connections ({_levels(limits, 'connections_percent', '%')})")
    longest = max((q.seconds for q in activity.long_queries), default=0.0)
    section.check("long_queries", limits.severity("long_query_seconds", longest) if activity.long_queries else "ok",
                  f"{count(len(activity.long_queries), 'query', 'queries')} running longer than {limits.long_query_seconds:g} s (longest {duration(longest)}, "
                  f"critical {limits.critical.long_query_seconds:g} s)")
    # The channel sees statements without their literals; an operator gets the full text with /queries.
    section.lines += statement_lines(activity, limits.long_query_seconds, lambda query: blocks.code(statement_summary(query)))
    if activity.long_queries or activity.slow_statements:
        section.lines.append("Literals are shown as ?; operators see the full text with /queries, only to themselves.")
    return section


def queue(ctx: Context, _args: StatsArgs) -> Section:
    stack = ctx.runtime.stack
    section = Section("AI worker queue")
    if stack.queue is None or stack.redis is None:
        section.lines.append("The stack file has no [queue] and [redis] sections.")
        section.measured = False
        return section
    lengths = StackRedis(stack.redis.url, stack.stack.check_timeout).queue_lengths(stack.queue.keys, stack.queue.type)
    total = sum(lengths.values())
    section.lines += [f"{key} ({stack.queue.type}): {length:,} jobs" for key, length in lengths.items()]
    limits = stack.thresholds
    section.check("queue_length", limits.severity("queue_length", total), f"AI worker queue {total:,} jobs ({_levels(limits, 'queue_length')})")
    return section


def _verdict(sections: list[Section]) -> str:
    """No threshold crossed, said only of what was measured: a report that measured nothing vouches for nothing."""
    titles = dict(zip((id(section) for section in sections), (title for title, _metric in METRICS)))
    missing = [titles[id(section)] for section in sections if not section.measured]
    if not missing:
        return "🟢 No threshold crossed."
    if len(missing) == len(sections):
        return "⚪ Nothing was measured, so nothing can be said about thresholds."
    return f"🟢 No threshold crossed in what was measured; not measured: {', '.join(missing)}."


METRICS: list[tuple[str, Callable[[Context, StatsArgs], Section]]] = [
    ("API errors", api_errors),
    ("CPU and memory", containers),
    ("Database", database),
    ("AI worker queue", queue),
]


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


def _app_database(runtime) -> StackDatabase:
    stack = runtime.stack
    return StackDatabase(stack.database.dsn, stack.stack.check_timeout)


def _database_error(runtime, error: Exception) -> CommandError:
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return CommandError(
            "The [database] section's user may not signal that session: PostgreSQL allows it to a superuser, a member of "
            "pg_signal_backend or the session's own role; grant pg_signal_backend to it."
        )
    return CommandError(f"Could not reach the database: {describe_error(error, runtime.stack.stack.check_timeout)}.")


def _target(runtime, args: QueriesArgs) -> ServerSession:
    """The application's session that cancel or terminate names; a sentence for any pid that is not one."""
    try:
        found = _app_database(runtime).session(args.pid)
    except (psycopg.Error, StackError) as error:
        raise _database_error(runtime, error) from None
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


def _check_queries(runtime, args: QueriesArgs) -> None:
    if args.action != "list":
        args.started = None  # whatever was typed: the session is the one that has the pid now
        args.started = _target(runtime, args).started


def _session_line(found: ServerSession) -> str:
    running = f", its statement running for {duration(found.seconds)}" if found.seconds is not None and found.state == "active" else ""
    return (f"pid {found.pid} of {found.user} ({found.application or 'no application name'}), connected since "
            f"{found.started:%Y-%m-%d %H:%M:%S %Z}, {found.state}{running}")


def _describe_queries(runtime, args: QueriesArgs) -> list[str]:
    try:
        found = _target(runtime, args)
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


def _stop(ctx: Context, args: QueriesArgs) -> Reply:
    database, found = _app_database(ctx.runtime), _target(ctx.runtime, args)
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
        raise _database_error(ctx.runtime, error) from None
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
def queries(ctx: Context, args: QueriesArgs) -> Reply:
    if args.action != "list":
        return _stop(ctx, args)
    stack = ctx.runtime.stack
    try:
        activity = _activity(stack)
    except (psycopg.Error, StackError) as error:
        raise CommandError(f"Could not read the database: {describe_error(error, stack.stack.check_timeout)}.") from None
    lines = statement_lines(activity, stack.thresholds.long_query_seconds, lambda query: blocks.code_block(mask_statement(query)))
    if activity.long_queries or activity.slow_statements:
        lines.append(f"Masked in the statements' text: {STATEMENT_MASKS}; and the secrets the redactor knows by their shape.")
    if activity.long_queries:
        lines.append("/queries cancel PID cancels a statement; /queries terminate PID ends its session (with approval).")
    return Reply("\n".join(lines), [blocks.header("Statements of the application's database"), *blocks.sections(lines)])


def measure(ctx: Context, args: StatsArgs) -> list[Section]:
    """The four metrics side by side, each bounded by the stack's check_timeout (also the watch's input)."""
    timeout = ctx.runtime.stack.stack.check_timeout
    futures = [(title, CHECK_POOL.submit(metric, ctx, args)) for title, metric in METRICS]
    started = utcnow()
    sections = []
    for title, future in futures:
        remaining = max(0.0, timeout - (utcnow() - started).total_seconds())
        try:
            sections.append(future.result(timeout=remaining))
        except FutureTimeout:
            sections.append(Section(title, [f"🔴 No answer within {timeout:g} s."], measured=False))
        except Exception as error:  # one unreadable metric must not hide the other three
            sections.append(Section(title, [f"🔴 Could not read it: {describe_error(error, timeout)}"], measured=False))
    return sections


@command(
    "stats",
    summary="The four key metrics: API error rate, CPU and memory, database, AI worker queue.",
    usage="/stats [window, e.g. 15m]",
    role=Role.viewer,
    args=StatsArgs,
)
def stats(ctx: Context, args: StatsArgs) -> Reply:
    stack = ctx.runtime.stack
    if ctx.runtime.docker is None and stack.database is None and stack.queue is None:
        source = stack.source or ctx.runtime.settings.stack_file
        return Reply(
            f"Nothing to measure: the stack file ({source}) names no Compose project and has no [database] or [queue] "
            f"section; {STACK_FILE_HINT}"
        )
    sections = measure(ctx, args)
    flags = [flag for section in sections for flag in section.flags]
    project = ctx.runtime.stack.stack.compose_project
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
        lines.append(_verdict(sections))
        body.append(blocks.context(lines[-1]))
    healthy = not flags and any(section.measured for section in sections)
    found = {key: value for section in sections for key, value in section.facts.items()}
    if flags:
        found[FOUND] = count(len(flags), "threshold") + " crossed"
    return ctx.runtime.approvals.with_change_banner(Reply("\n".join(lines), body, in_channel=True, healthy=healthy, facts=found))
