"""/health: the operator guide's daily health check, every probe in parallel."""

from __future__ import annotations

from bot import blocks
from bot.probes import ProbeResult, run_probes
from bot.registry import Context, Reply, command
from bot.roles import Role

FAILING, OK = "🔴", "🟢"


def _failure_line(result: ProbeResult) -> str:
    return f"{FAILING} *{result.name}*: {result.error} ({result.latency_ms:.0f} ms)"


def _ok_line(result: ProbeResult) -> str:
    return f"{OK} {result.name} {result.latency_ms:.0f} ms"


@command("health", summary="Check every service of the stack, in parallel.", usage="/health", role=Role.viewer)
def health(ctx: Context, _args) -> Reply:
    stack = ctx.runtime.stack
    if not stack.probes:
        source = stack.source or ctx.runtime.settings.stack_file
        return Reply(f"No services to check: the stack file ({source}) lists no probes.")
    results = run_probes(stack.probes)
    failing = [r for r in results if not r.ok]
    healthy = [r for r in results if r.ok]
    if failing:
        verdict = f"{FAILING} {len(failing)} of {len(results)} checks failing"
    else:
        verdict = f"{OK} All {len(results)} checks healthy"
    body: list[dict] = [blocks.header(f"Health of {stack.stack.compose_project}")]
    body += blocks.sections([_failure_line(r) for r in failing])
    if healthy:
        body.append(blocks.section(" · ".join(_ok_line(r) for r in healthy)))
    body.append(blocks.section(f"*{verdict}*"))
    lines = [_failure_line(r) for r in failing] + [_ok_line(r) for r in healthy] + [verdict]
    return Reply("\n".join(lines), body, in_channel=True)
