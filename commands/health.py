"""/health: the operator guide's daily health check: containers, databases and HTTP, all at once."""

from __future__ import annotations

import re
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Literal

from bot import blocks
from bot.config import STACK_FILE_HINT, StackConfig
from bot.docker_stack import ComposeStack, ServiceState, StackError
from bot.humanize import ago, count, size
from bot.probes import CHECK_POOL, ProbeResult, run_probes
from bot.registry import DOWN, FOUND, Context, Reply, command
from bot.roles import Role
from bot.store import utcnow

MARK = {"fail": "🔴", "warn": "🟠", "ok": "🟢"}
_ERROR_LINE = re.compile(r"error|fatal|panic|exception|refused|denied|killed", re.I)


@dataclass(frozen=True)
class Check:
    name: str
    status: Literal["ok", "warn", "fail"]
    text: str

    def line(self) -> str:
        if self.status == "ok":
            return f"{self.name} {self.text}"
        return f"{MARK[self.status]} *{self.name}*: {self.text}"


def _last_error_line(docker: ComposeStack, service: str) -> str | None:
    lines = [line.strip() for line in docker.logs(service, tail=50) if line.strip()]
    errors = [line for line in lines if _ERROR_LINE.search(line)]
    picked = (errors or lines or [None])[-1]
    return picked[:300] if picked else None


def _container_check(docker: ComposeStack, state: ServiceState) -> Check:
    now = utcnow()
    if state.ok:
        return Check(state.service, "ok", state.summary.lower())
    if state.status == "running" and state.health == "starting":
        return Check(state.service, "warn", f"{state.summary.lower()}: its health check has not passed yet")
    if state.status == "running":
        evidence = f"running but {state.health}"
        if state.health_output:
            evidence += f" (healthcheck: {state.health_output[:200]})"
    else:
        evidence = state.status
        if state.status in ("exited", "dead"):
            evidence += f" with code {state.exit_code}"
        if state.finished_at:
            evidence += f" {ago(state.finished_at, now)}"
    if state.restart_count:
        evidence += f", restarted {state.restart_count} times"
    last = _last_error_line(docker, state.service)
    if last:
        evidence += f"; last log: `{last}`"
    return Check(state.service, "fail", evidence)


def _expected_services(stack: StackConfig) -> set[str]:
    expected = set(stack.stack.app_services)
    for section in (stack.database, stack.redis):
        if section is not None:
            expected.add(section.compose_service)
    expected.update(p.compose_service for p in stack.probes if p.compose_service)
    return expected


def container_checks(docker: ComposeStack, stack: StackConfig) -> list[Check]:
    try:
        states = docker.states()
        checks = [_container_check(docker, state) for state in states]
    except StackError as error:
        return [Check("docker", "fail", f"{error} Container checks were skipped.")]
    missing = sorted(_expected_services(stack) - {state.service for state in states})
    checks += [Check(service, "fail", f"no container in Compose project {docker.project}") for service in missing]
    return checks


def probe_check(result: ProbeResult, stack: StackConfig) -> Check:
    if not result.ok:
        return Check(result.name, "fail", f"{result.error} ({result.latency_ms:.0f} ms)")
    metrics, limits = result.metrics, stack.thresholds
    if "max_connections" in metrics:
        percent = 100.0 * metrics["connections"] / metrics["max_connections"]
        if percent > limits.connections_percent:
            text = f"{metrics['connections']}/{metrics['max_connections']} connections in use ({percent:.0f}%, threshold {limits.connections_percent:g}%)"
            return Check(result.name, "warn", text)
    if metrics.get("maxmemory_bytes"):
        percent = 100.0 * metrics["memory_bytes"] / metrics["maxmemory_bytes"]
        if percent > limits.memory_percent:
            text = f"{size(metrics['memory_bytes'])} of {size(metrics['maxmemory_bytes'])} memory used ({percent:.0f}%)"
            return Check(result.name, "warn", text)
    return Check(result.name, "ok", f"{result.latency_ms:.0f} ms ({result.detail})")


def run_checks(ctx: Context) -> tuple[list[Check], list[Check]]:
    """Container checks and probes side by side; each bounded, so a hung engine costs its timeout only."""
    runtime, stack = ctx.runtime, ctx.runtime.stack
    containers: list[Check] = []
    pending = CHECK_POOL.submit(container_checks, runtime.docker, stack) if runtime.docker else None
    probes = [probe_check(result, stack) for result in run_probes(stack.probes)]
    if pending is not None:
        try:
            containers = pending.result(timeout=stack.stack.check_timeout)
        except FutureTimeout:
            text = f"The Docker engine did not answer within {stack.stack.check_timeout:g} s. Container checks were skipped."
            containers = [Check("docker", "fail", text)]
    return containers, probes


def _found(containers: list[Check], failing: list[Check], warning: list[Check]) -> dict:
    """What this /health found, as data for the incident timeline: the post-mortem's services down and for how long."""
    facts: dict = {DOWN: [c.name for c in containers if c.status == "fail"]} if containers else {}
    if failing:
        facts[FOUND] = count(len(failing), "failing check")
    elif warning:
        facts[FOUND] = count(len(warning), "check") + " above a threshold"
    return facts


@command("health", summary="Check every service of the stack, in parallel.", usage="/health", role=Role.viewer)
def health(ctx: Context, _args) -> Reply:
    stack = ctx.runtime.stack
    if not stack.probes and ctx.runtime.docker is None:
        source = stack.source or ctx.runtime.settings.stack_file
        return Reply(f"No services to check: the stack file ({source}) names no Compose project and no probes; {STACK_FILE_HINT}")
    containers, probes = run_checks(ctx)
    checks = containers + probes
    failing = [c for c in checks if c.status == "fail"]
    warning = [c for c in checks if c.status == "warn"]
    if failing:
        verdict = f"{MARK['fail']} {len(failing)} of {len(checks)} checks failing"
    elif warning:
        verdict = f"{MARK['warn']} All {len(checks)} checks pass; {len(warning)} above a threshold"
    else:
        verdict = f"{MARK['ok']} All {len(checks)} checks healthy"
    healthy_lines = []
    if ok := [c for c in containers if c.status == "ok"]:
        healthy_lines.append(f"{MARK['ok']} Containers: " + " · ".join(c.line() for c in ok))
    if ok := [c for c in probes if c.status == "ok"]:
        healthy_lines.append(f"{MARK['ok']} Checks: " + " · ".join(c.line() for c in ok))
    problem_lines = [c.line() for c in failing + warning]
    title = f"Health of {stack.stack.compose_project}" if stack.stack.compose_project else "Health"
    body = [blocks.header(title), *blocks.sections(problem_lines), *blocks.sections(healthy_lines), blocks.section(f"*{verdict}*")]
    text = "\n".join(problem_lines + healthy_lines + [verdict])
    reply = Reply(text, body, in_channel=True, healthy=not failing and not warning, facts=_found(containers, failing, warning))
    return ctx.runtime.approvals.with_change_banner(reply)
