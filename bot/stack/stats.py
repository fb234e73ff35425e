"""/stats' four key metrics over a window, read side by side from the operated stack; also the watch's input
(bot/duties/watch.py). Each metric is a Section: its lines, the thresholds it crossed, and every threshold it
checked by a stable key."""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Callable

from bot.frame import blocks
from bot.frame.config import Thresholds
from bot.frame.humanize import count, duration, size
from bot.frame.registry import EDGE_ERROR_RATE
from bot.stack.database import DatabaseActivity, statement_summary
from bot.stack.health import EDGE_KEY, MARK, EdgeCount, read_access_log
from bot.stack.probes import describe_error
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.stack.stack import Stack


@dataclass(frozen=True)
class Window:
    """How far back the metrics look: as the user wrote it (15m) and in seconds."""

    label: str
    seconds: int


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    flags: list[tuple[str, str]] = field(default_factory=list)  # (warn or fail, what crossed which level)
    measured: bool = True  # False: not configured, or it could not be read; then it vouches for nothing
    # Every threshold this section checked, by a stable key: the flag's text when crossed, None when not (the watch's input).
    checked: dict[str, str | None] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # numbers for the incident timeline (the edge's 5xx rate)
    # What was measured, by series (edge_error_rate, cpu:SERVICE, ...): the trends' samples (bot/stack/trends.py).
    # A metric that could not be read has no entry: a gap, never a 0.
    values: dict[str, float] = field(default_factory=dict)

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


def api_errors(stack: "Stack", window: Window) -> Section:
    """The 5xx rate at the edge (what users got: a dead backend's 502s count) beside the backend's own."""
    config, docker = stack.config, stack.compose
    service, edge = config.api_errors.compose_service, config.edge
    section = Section(f"API errors (5xx, last {window.label})")
    if docker is None:
        section.lines.append("The stack file names no Compose project, so there are no logs to read.")
        section.measured = False
        return section
    since = utcnow() - timedelta(seconds=window.seconds)
    at_edge = stack.pool.submit(read_access_log, docker, edge.compose_service, since) if edge else None
    at_backend = read_access_log(docker, service, since)
    if edge is None:
        section.lines.append("Edge: the stack file has no [edge] section, so users' errors at the proxy are not counted.")
    else:
        count = at_edge.result()
        section.lines.append(_rate_line(f"Edge ({edge.compose_service}, what users got)", count, window.seconds))
        if count.total:
            section.values["edge_error_rate"] = count.percent
        if count.total >= edge.min_requests:
            section.facts[EDGE_ERROR_RATE] = count.percent
            status = "fail" if count.percent >= edge.critical_percent else "warn" if count.percent >= edge.warning_percent else "ok"
            section.check(EDGE_KEY, status, f"Error rate at the edge ({edge.compose_service}) {count.percent:.1f}% "
                                            f"(warning {edge.warning_percent:g}%, critical {edge.critical_percent:g}%)")
    count = at_backend
    section.lines.append(_rate_line(f"Backend ({service}'s own log)", count, window.seconds))
    if count.total:
        section.values["backend_error_rate"] = count.percent
    limits = config.thresholds
    section.check("api_error_rate", limits.severity("error_rate_percent", count.percent),
                  f"API error rate at the backend {count.percent:.1f}% ({_levels(limits, 'error_rate_percent', '%')})")
    return section


def _levels(limits: Thresholds, key: str, unit: str = "") -> str:
    return f"warning {getattr(limits, key):,g}{unit}, critical {getattr(limits.critical, key):,g}{unit}"


def containers(stack: "Stack", _window: Window) -> Section:
    docker = stack.compose
    section = Section("CPU and memory (as docker stats)")
    if docker is None:
        section.lines.append("The stack file names no Compose project, so there are no containers to sample.")
        section.measured = False
        return section
    samples = docker.stats()
    stopped = [state for state in docker.states() if state.status != "running"]
    unseen = docker.unsampled()
    if not samples and not stopped and not unseen:
        section.lines.append(f"No containers in {docker.scope}.")
    for service, node in unseen:
        # Swarm: a task on a node whose engine the bot does not reach is said so, never shown as zeros.
        section.lines.append(f"{service}: runs on node {node}, whose engine the bot does not reach; not sampled")
    for state in stopped:
        # docker stats samples running containers only; a stopped service must not just vanish from the list.
        how = f"{state.status} with code {state.exit_code}" if state.status in ("exited", "dead") else state.status
        section.lines.append(f"{state.service}: not running ({how})")
        section.flags.append(("fail", f"{state.service} is not running ({how})"))  # the watch sees it as a failing /health check
    for sample in samples:
        memory = f"{size(sample.memory_bytes)} / {size(sample.memory_limit)} ({sample.memory_percent:.1f}%)"
        section.lines.append(f"{sample.service}: CPU {sample.cpu_percent:.1f}%, memory {memory}")
        section.values[f"cpu:{sample.service}"] = sample.cpu_percent
        section.values[f"mem:{sample.service}"] = sample.memory_percent
        limits = stack.config.thresholds
        section.check(f"cpu:{sample.service}", limits.severity("cpu_percent", sample.cpu_percent),
                      f"{sample.service} CPU {sample.cpu_percent:.0f}% ({_levels(limits, 'cpu_percent', '%')})")
        section.check(f"memory:{sample.service}", limits.severity("memory_percent", sample.memory_percent),
                      f"{sample.service} memory {sample.memory_percent:.0f}% ({_levels(limits, 'memory_percent', '%')})")
    return section


def activity(stack: "Stack") -> DatabaseActivity:
    """What /stats and /queries show of the app's database: connections, long-running and slowest statements."""
    return stack.database.activity(stack.config.thresholds.long_query_seconds)


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


def database(stack: "Stack", _window: Window) -> Section:
    section = Section("Database")
    if stack.database is None:
        section.lines.append("The stack file has no [database] section.")
        section.measured = False
        return section
    limits = stack.config.thresholds
    found = activity(stack)
    states = ", ".join(f"{state} {count}" for state, count in found.by_state.items())
    percent = 100.0 * found.connections / found.max_connections
    section.lines.append(f"Connections: {found.connections}/{found.max_connections} ({percent:.0f}%): {states}")
    section.values["db_connections"] = float(found.connections)
    section.check("db_connections", limits.severity("connections_percent", percent),
                  f"database connections {percent:.0f}% of max_connections ({_levels(limits, 'connections_percent', '%')})")
    longest = max((q.seconds for q in found.long_queries), default=0.0)
    section.check("long_queries", limits.severity("long_query_seconds", longest) if found.long_queries else "ok",
                  f"{count(len(found.long_queries), 'query', 'queries')} running longer than {limits.long_query_seconds:g} s (longest {duration(longest)}, "
                  f"critical {limits.critical.long_query_seconds:g} s)")
    # The channel sees statements without their literals; an operator gets the full text with /queries.
    section.lines += statement_lines(found, limits.long_query_seconds, lambda query: blocks.code(statement_summary(query)))
    if found.long_queries or found.slow_statements:
        section.lines.append("Literals are shown as ?; operators see the full text with /queries, only to themselves.")
    return section


def queue(stack: "Stack", _window: Window) -> Section:
    config = stack.config
    section = Section("AI worker queue")
    if config.queue is None or stack.redis is None:
        section.lines.append("The stack file has no [queue] and [redis] sections.")
        section.measured = False
        return section
    lengths = stack.redis.queue_lengths(config.queue.keys, config.queue.type)
    total = sum(lengths.values())
    section.values["queue_length"] = float(total)
    section.lines += [f"{key} ({config.queue.type}): {length:,} jobs" for key, length in lengths.items()]
    limits = config.thresholds
    section.check("queue_length", limits.severity("queue_length", total), f"AI worker queue {total:,} jobs ({_levels(limits, 'queue_length')})")
    return section


def verdict(sections: list[Section]) -> str:
    """No threshold crossed, said only of what was measured: a report that measured nothing vouches for nothing."""
    titles = dict(zip((id(section) for section in sections), (title for title, _metric in METRICS)))
    missing = [titles[id(section)] for section in sections if not section.measured]
    if not missing:
        return "🟢 No threshold crossed."
    if len(missing) == len(sections):
        return "⚪ Nothing was measured, so nothing can be said about thresholds."
    return f"🟢 No threshold crossed in what was measured; not measured: {', '.join(missing)}."


METRICS: list[tuple[str, Callable[["Stack", Window], Section]]] = [
    ("API errors", api_errors),
    ("CPU and memory", containers),
    ("Database", database),
    ("AI worker queue", queue),
]



def measure(stack: "Stack", window: Window) -> list[Section]:
    """The four metrics side by side, each bounded by the stack's check_timeout (also the watch's input)."""
    timeout = stack.check_timeout
    futures = [(title, stack.pool.submit(metric, stack, window)) for title, metric in METRICS]
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


