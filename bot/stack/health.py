"""One health evaluation: what /health shows, what the daily report and the watch post, and what every change's
gate (/restart, the deploy, /rollback, /restore's last step) waits for.

Checks: each Compose service's container, each probe (HTTP through nginx, the database, Redis...), and the edge:
the 5xx rate in the reverse proxy's access log over a short window, because that is where users' errors show
(a backend that answers 500 while its container stays healthy, or 502s from a backend that is gone). A check is
ok, warn (orange) or fail (red); the verdict is the worst line. Nothing found is never green: a Compose project
with no container, or a stack file with nothing to check, says so in red.

Every piece of text that comes from the stack (log lines, healthcheck output) goes through blocks.code, so it
cannot become Slack markup nor close its code span.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Iterable, Literal

from bot.frame import blocks
from bot.frame.config import StackConfig
from bot.stack.compose import ServiceState, StackError
from bot.stack.runtime import StackRuntime
from bot.frame.humanize import ago, count, duration, size
from bot.stack.probes import ProbeResult, run_probes
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.stack.stack import Stack

Status = Literal["ok", "warn", "fail"]
MARK = {"fail": "🔴", "warn": "🟠", "ok": "🟢"}
_RANK = {"ok": 0, "warn": 1, "fail": 2}
EDGE_KEY = "edge_error_rate"
# What an operator looks at first when a line is red; a Slack button each (bot/adapters/slack/listeners.py), text in the console.
NEXT_LOGS, NEXT_RESTART = "next_logs", "next_restart"
# Level words of the usual log formats, and a 5xx status of an access log line (found by position, below).
_ERROR_WORDS = re.compile(r"\b(error|err|fatal|panic|crit|critical|emerg|alert|exception|traceback|killed)\b", re.I)
# The newest lines of a window are read: the json-file log driver reads a tail from the end of the file, while
# `since` alone decodes the whole file up to the window (27.6 s for a 1 GiB log, bench/health.py). The tail
# grows tenfold while the window holds as many lines as were read; a busier edge than the largest tail is
# measured on its newest requests.
EDGE_FIRST_TAIL, EDGE_MAX_LINES = 1_000, 100_000


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    text: str  # Slack mrkdwn, every stack-sourced part already quoted with blocks.code
    key: str  # stable, one word: container:SERVICE, probe:NAME, edge_error_rate (the watch's key)
    service: str | None = None  # the Compose service the next steps act on
    runbook: str | None = None
    fatal: bool = False  # a gate stops at once: a service that is not running, a critical edge rate
    value: float | None = None  # the number the line judges (the edge's 5xx percent), for the incident timeline

    @property
    def holds(self) -> bool:
        """For a gate: ok, or a probe's capacity warning (connections, memory), which is not a failure of the change."""
        return self.status == "ok" or (self.status == "warn" and self.key.startswith("probe:"))

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.name} {self.text}"
        runbook = f" <{self.runbook}|runbook>" if self.runbook else ""
        return f"{MARK[self.status]} *{self.name}*: {self.text}{runbook}"

    def next_steps(self) -> list[str]:
        """What to run next for a failing line, as the commands a person would type."""
        if self.status == "ok" or self.service is None:
            return []
        return [f"/logs {self.service} --since 15m", f"/restart {self.service}"]


def _key(kind: str, name: str) -> str:
    """One word, so that `/watch mute KEY 1h` needs no quotes: "backend via nginx" is probe:backend-via-nginx."""
    return f"{kind}:{'-'.join(name.split())}"


# ---- evidence from logs -----------------------------------------------------------------------------------


def access_status(line: str) -> int | None:
    """The status of a combined (or common) access log line: the field right after the quoted request.

    Found by position, from the left: `ADDR - USER [TIME] "REQUEST" STATUS ...`. nginx writes a quote inside a
    field as \\x22, so the request's closing quote is the first one after its opening; whatever the user agent
    holds comes later and is never read."""
    opening = line.find('] "')
    if opening < 0:
        return None
    closing = line.find('" ', opening + 3)
    status = line[closing + 2 : closing + 5] if closing >= 0 else ""
    tail = line[closing + 5 : closing + 6]
    if len(status) != 3 or not status.isdigit() or tail not in ("", " "):
        return None
    return int(status)


def looks_like_error(line: str) -> bool:
    status = access_status(line)
    if status is not None:
        return status >= 500
    return bool(_ERROR_WORDS.search(line))


def last_log_evidence(docker: StackRuntime, service: str) -> str | None:
    """The last line that looks like an error, called so; else the last line, called that. Quoted for Slack."""
    lines = [line.strip() for line in docker.logs(service, tail=50) if line.strip()]
    errors = [line for line in lines if looks_like_error(line)]
    if errors:
        return f"last error line: {blocks.code(errors[-1][:300])}"
    if lines:
        return f"last line (no error line among the last 50): {blocks.code(lines[-1][:300])}"
    return None


@dataclass
class EdgeCount:
    total: int = 0
    errors: int = 0
    capped: bool = False  # more requests in the window than were read: these are the newest

    @property
    def percent(self) -> float:
        return 100.0 * self.errors / self.total if self.total else 0.0


def count_statuses(lines: Iterable[str], max_lines: int = EDGE_MAX_LINES) -> EdgeCount:
    count, read = EdgeCount(), 0
    for line in lines:
        read += 1
        status = access_status(line)
        if status is not None:
            count.total += 1
            count.errors += status >= 500
    count.capped = read >= max_lines
    return count


def read_access_log(docker: StackRuntime, service: str, since: datetime, max_lines: int = EDGE_MAX_LINES) -> EdgeCount:
    """The statuses of the window's lines: cost in proportion to the window, never to the whole log."""
    tail = min(EDGE_FIRST_TAIL, max_lines)
    while True:
        count = count_statuses(docker.logs(service, since=since, tail=tail), tail)
        if not count.capped or tail >= max_lines:
            return count
        tail = min(tail * 10, max_lines)


# ---- the checks -----------------------------------------------------------------------------------------------


def _container_check(docker: StackRuntime, state: ServiceState) -> Check:
    key, now = _key("container", state.service), utcnow()
    if state.ok:
        return Check(state.service, "ok", blocks.escape(state.summary.lower()), key, state.service)
    if state.evidence is not None:  # Swarm: tasks running vs desired, its recent task failures with their errors
        if state.status == "running" and state.health == "starting":
            return Check(state.service, "warn", f"{blocks.escape(state.evidence)}: not converged yet", key, state.service)
        evidence = blocks.escape(state.evidence)
        if last := last_log_evidence(docker, state.service):
            evidence += f"; {last}"
        return Check(state.service, "fail", evidence, key, state.service, fatal=state.status == "exited")
    if state.status == "running" and state.health == "starting":
        text = f"{blocks.escape(state.summary.lower())}: its health check has not passed yet"
        return Check(state.service, "warn", text, key, state.service)
    if state.status == "running":
        evidence = f"running but {state.health}"
        if state.health_output:
            evidence += f" (healthcheck: {blocks.code(state.health_output[:200])})"
    else:
        evidence = state.status
        if state.status in ("exited", "dead"):
            evidence += f" with code {state.exit_code}"
        if state.finished_at:
            evidence += f", {ago(state.finished_at, now)}"  # "exited with code 0, 12 s ago": two numbers kept apart
    if state.restart_count:
        evidence += f", restarted {count(state.restart_count, 'time')}"
    if last := last_log_evidence(docker, state.service):
        evidence += f"; {last}"
    return Check(state.service, "fail", evidence, key, state.service, fatal=state.status in ("exited", "dead", "created"))


def expected_services(config: StackConfig) -> set[str]:
    expected = set(config.stack.app_services)
    for section in (config.database, config.redis, config.edge):
        if section is not None and section.compose_service:  # "": not in a container (the machine's own tools)
            expected.add(section.compose_service)
    expected.update(p.compose_service for p in config.probes if p.compose_service)
    return expected


def container_checks(docker: StackRuntime, stack: StackConfig) -> list[Check]:
    try:
        states = docker.states()
        if not states:
            # A typo in compose_project finds nothing; nothing found is not health.
            others = docker.projects()
            listed = ", ".join(map(blocks.escape, others)) if others else "none"
            what, others_are = ("service", "stacks") if docker.kind == "Swarm stack" else ("container", "projects")
            text = f"no {what} at all in {blocks.escape(docker.scope)}; the engine has these {others_are}: {listed}"
            return [Check(docker.kind.lower(), "fail", text, "container:project", fatal=True)]
        checks = [_container_check(docker, state) for state in states]
    except StackError as error:
        return [Check("docker", "fail", f"{error} Container checks were skipped.", "container:docker")]
    missing = sorted(expected_services(stack) - {state.service for state in states})
    text = f"no {'service' if docker.kind == 'Swarm stack' else 'container'} in {blocks.escape(docker.scope)}"
    checks += [Check(service, "fail", text, _key("container", service), fatal=True) for service in missing]
    return checks


def probe_check(result: ProbeResult, stack: StackConfig) -> Check:
    probe = next((p for p in stack.probes if p.name == result.name), None)
    service, runbook = (probe.compose_service, probe.runbook) if probe else (None, None)
    made = lambda status, text: Check(result.name, status, text, _key("probe", result.name), service, runbook)  # noqa: E731
    if not result.ok:
        return made("fail", f"{blocks.escape(result.error or 'failed')} ({result.latency_ms:.0f} ms)")
    metrics, limits = result.metrics, stack.thresholds
    if "max_connections" in metrics:
        percent = 100.0 * metrics["connections"] / metrics["max_connections"]
        if (status := limits.severity("connections_percent", percent)) != "ok":
            return made(status, f"{metrics['connections']}/{metrics['max_connections']} connections in use ({percent:.0f}%, "
                                f"warning {limits.connections_percent:g}%, critical {limits.critical.connections_percent:g}%)")
    if metrics.get("maxmemory_bytes"):
        percent = 100.0 * metrics["memory_bytes"] / metrics["maxmemory_bytes"]
        if (status := limits.severity("memory_percent", percent)) != "ok":
            return made(status, f"{size(metrics['memory_bytes'])} of {size(metrics['maxmemory_bytes'])} memory used ({percent:.0f}%)")
    return made("ok", f"{result.latency_ms:.0f} ms ({blocks.escape(result.detail or '')})")


def edge_name(stack: StackConfig) -> str:
    return f"{stack.edge.compose_service} 5xx rate"


def edge_check(docker: StackRuntime, stack: StackConfig, since: datetime | None = None) -> Check:
    """The 5xx rate at the edge over its window (or since `since`, for a gate): warning and critical levels."""
    edge = stack.edge
    name, service = edge_name(stack), edge.compose_service
    window = since or utcnow() - timedelta(minutes=edge.window_minutes)
    over = f"in the last {duration((utcnow() - since).total_seconds())}" if since else f"over {edge.window_minutes:g} min"
    try:
        count = read_access_log(docker, service, window)
    except StackError as error:
        return Check(name, "fail", f"its access log could not be read: {error}", EDGE_KEY, service, edge.runbook)
    newest = f" (the newest {count.total:,})" if count.capped else ""
    text = f"{count.errors:,} of {count.total:,} requests{newest} answered 5xx {over}: {count.percent:.1f}%"
    if count.total < edge.min_requests:
        return Check(name, "ok", f"{text}; fewer than {edge.min_requests} requests say nothing about a rate", EDGE_KEY, service)
    levels = f"warning {edge.warning_percent:g}%, critical {edge.critical_percent:g}%"
    if count.percent >= edge.critical_percent:
        return Check(name, "fail", f"{text} ({levels})", EDGE_KEY, service, edge.runbook, fatal=True, value=count.percent)
    if count.percent >= edge.warning_percent:
        return Check(name, "warn", f"{text} ({levels})", EDGE_KEY, service, edge.runbook, value=count.percent)
    return Check(name, "ok", text, EDGE_KEY, service, value=count.percent)


# ---- the evaluation -------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    edge: list[Check] = field(default_factory=list)
    containers: list[Check] = field(default_factory=list)
    probes: list[Check] = field(default_factory=list)

    @property
    def checks(self) -> list[Check]:
        return self.edge + self.containers + self.probes

    @property
    def status(self) -> Status:
        return max((check.status for check in self.checks), key=_RANK.__getitem__, default="fail")

    def problems(self) -> list[Check]:
        """Failing lines first, then warnings; the edge rate first of each when crossed: it is what users see."""
        return sorted((c for c in self.checks if c.status != "ok"), key=lambda c: (-_RANK[c.status], c.key != EDGE_KEY))

    @property
    def verdict(self) -> str:
        checks = self.checks
        failing = [c for c in checks if c.status == "fail"]
        warning = [c for c in checks if c.status == "warn"]
        if not checks:
            return "⚪ Nothing was checked, so nothing can be said about health"
        if failing:
            return f"{MARK['fail']} {len(failing)} of {len(checks)} checks failing"
        if warning:
            return f"{MARK['warn']} {len(warning)} of {len(checks)} checks above their warning level; none failing"
        return f"{MARK['ok']} All {len(checks)} checks healthy"


def _bounded(stack: "Stack", work: Callable[[], list[Check]], name: str, skipped: str, key: str) -> Callable[[], list[Check]]:
    pending = stack.pool.submit(work)
    timeout = stack.check_timeout

    def result() -> list[Check]:
        try:
            return pending.result(timeout=timeout)
        except FutureTimeout:
            return [Check(name, "fail", f"The Docker engine did not answer within {timeout:g} s. {skipped}", key)]

    return result


def evaluate(stack: "Stack", since: datetime | None = None) -> Evaluation:
    """Every check at once, each bounded, so a hung engine costs its timeout only. `since`: the edge counts only
    requests from then on (a gate: errors from before the change are not the change's)."""
    config, docker = stack.config, stack.compose
    containers = edge = None
    if docker is not None:
        containers = _bounded(stack, lambda: container_checks(docker, config), "docker", "Container checks were skipped.", "container:docker")
        if config.edge is not None:
            edge = _bounded(stack, lambda: [edge_check(docker, config, since)], edge_name(config), "Its access log was not read.", EDGE_KEY)
    probes = [probe_check(result, config) for result in run_probes(config.probes, stack.pool)]
    return Evaluation(edge() if edge else [], containers() if containers else [], probes)


# ---- the gate -------------------------------------------------------------------------------------------------


@dataclass
class GateOutcome:
    ok: bool
    line: str  # one line for the change's report: what held, or which checks failed and how
    failing: list[Check] = field(default_factory=list)
    not_counted: list[str] = field(default_factory=list)  # checks failing before the change, names


def gate(stack: "Stack", progress: Callable[[str], None], excused: Iterable[str] = (), poll: float = 1.0,
         already_failing: Iterable[str] = ()) -> GateOutcome:
    """Passes when every check holds without a break for the stack's stable_seconds; fails at once when a
    service is not running or the edge rate turns critical, else when healthy_timeout runs out.

    The edge counts requests only from the moment every other check held (a restart's own 502s, and errors
    from before the change, are not the change's). `excused`: services already failing before the change
    (/restore's), whose checks need not pass. `already_failing`: keys of checks that failed before the change and
    that it does not act on (/restart's): not counted, and the outcome names them; the edge always counts."""
    excused, already_failing = set(excused), set(already_failing) - {EDGE_KEY}
    started = time.monotonic()
    deadline = started + stack.healthy_timeout
    held_since: float | None = None
    edge_since = utcnow()
    progress(f"Waiting until every check holds for {stack.stable_seconds:g} s (at most {stack.healthy_timeout:g} s)…")
    while True:
        evaluation = evaluate(stack, since=edge_since)
        checks = [c for c in evaluation.checks if (c.service not in excused and c.key not in already_failing) or c.key == EDGE_KEY]
        failing = [c for c in checks if not c.holds]
        took = time.monotonic() - started
        if not checks:
            return GateOutcome(False, "🔴 Health unknown: there is nothing to check (no Compose project, no probes).")
        if any(c.fatal for c in failing):
            return _failed([c for c in failing if c.fatal] + [c for c in failing if not c.fatal], took)
        if not failing:
            held_since = held_since or time.monotonic()
            if time.monotonic() - held_since >= stack.stable_seconds:
                names = ", ".join(c.name for c in checks)
                before = [c.name for c in evaluation.checks if c.key in already_failing]
                not_counted = f" Failing before the change and not counted: {', '.join(before)}." if before else ""
                return GateOutcome(True, f"🟢 Healthy: {names} held for {stack.stable_seconds:g} s ({took:.1f} s).{not_counted}", not_counted=before)
        else:
            held_since = None
            if any(c.key != EDGE_KEY for c in failing):
                edge_since = utcnow()  # the edge's count starts again once everything else holds
        if time.monotonic() >= deadline:
            return _failed(failing, took)
        time.sleep(poll)


def _failed(failing: list[Check], took: float) -> GateOutcome:
    shown = "; ".join(f"{c.name}: {c.text}" for c in failing[:5]) + (f"; and {len(failing) - 5} more" if len(failing) > 5 else "")
    return GateOutcome(False, f"🔴 Not healthy after {took:.0f} s: {shown}.", failing)
