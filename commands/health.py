"""/health: the operator guide's daily health check: the edge's error rate, containers, databases and HTTP, all at once."""

from __future__ import annotations

from dataclasses import replace

from bot.changes.service import DEFAULT_WINDOW
from bot.frame import blocks
from bot.frame.config import STACK_FILE_HINT
from bot.stack.health import EDGE_KEY, MARK, NEXT_LOGS, NEXT_RESTART, Evaluation, evaluate
from bot.frame.humanize import count
from bot.frame.registry import DOWN, EDGE_ERROR_RATE, FOUND, GREEN, Reply, command
from bot.frame.roles import Role
from commands.context import Ctx


def report(title: str, evaluation: Evaluation) -> Reply:
    """Problems first (the edge rate first when crossed), each failing one with what to do next; then the healthy;
    then the verdict, the worst line's colour."""
    text_lines: list[str] = []
    body = [blocks.header(title)]
    acted_on: set[str] = set()
    for check in evaluation.problems():
        text_lines.append(check.line())
        body.append(blocks.section(check.line()))
        steps = check.next_steps() if check.service not in acted_on else []
        if steps:
            acted_on.add(check.service)
            text_lines.append("→ next: " + " · ".join(steps))
            logs, restart = steps
            body.append(blocks.command_buttons(check.key, [(logs, NEXT_LOGS, check.service), (restart, NEXT_RESTART, check.service)]))
    healthy_lines = []
    if ok := [c for c in evaluation.edge if c.status == "ok"]:
        healthy_lines.append(f"{MARK['ok']} Edge: " + " · ".join(c.line() for c in ok))
    if ok := [c for c in evaluation.containers if c.status == "ok"]:
        healthy_lines.append(f"{MARK['ok']} Containers: " + " · ".join(c.line() for c in ok))
    if ok := [c for c in evaluation.probes if c.status == "ok"]:
        healthy_lines.append(f"{MARK['ok']} Checks: " + " · ".join(c.line() for c in ok))
    verdict = evaluation.verdict
    body += [*blocks.sections(healthy_lines), blocks.section(f"*{verdict}*")]
    healthy = evaluation.status == "ok" and bool(evaluation.checks)
    facts = _found(evaluation) | ({GREEN: True} if healthy else {})
    return Reply("\n".join(text_lines + healthy_lines + [verdict]), body, in_channel=True, healthy=healthy, facts=facts)


def _found(evaluation: Evaluation) -> dict:
    """What this /health found, as data for the incident timeline: the post-mortem's services down and for how long,
    and the edge's 5xx rate for the peak of its impact."""
    not_services = ("container:docker", "container:project")
    containers = [c for c in evaluation.containers if c.key not in not_services]
    facts: dict = {DOWN: [c.name for c in containers if c.status == "fail"]} if containers else {}
    failing = [c for c in evaluation.checks if c.status == "fail"]
    warning = [c for c in evaluation.checks if c.status == "warn"]
    if failing:
        facts[FOUND] = count(len(failing), "failing check")
    elif warning:
        facts[FOUND] = count(len(warning), "check") + " above a threshold"
    rates = [c.value for c in evaluation.edge if c.key == EDGE_KEY and c.value is not None]
    if rates:
        facts[EDGE_ERROR_RATE] = rates[0]
    return facts


@command("health", summary="Check every service of the stack, in parallel.", usage="/health", role=Role.viewer)
def health(ctx: Ctx, _args) -> Reply:
    stack = ctx.stack
    if not stack.config.probes and stack.compose is None:
        source = stack.config.source or ctx.settings.stack_file
        return Reply(f"No services to check: the stack file ({source}) names no Compose project and no probes; {STACK_FILE_HINT}")
    title = f"Health of {stack.compose_project}" if stack.compose_project else "Health"
    evaluation = evaluate(stack)
    reply = ctx.duties.freezes.with_banner(ctx.approvals.with_change_banner(report(title, evaluation)))
    return with_card(ctx, reply) if any(check.status == "fail" for check in evaluation.checks) else reply


def with_card(ctx: Ctx, reply: Reply) -> Reply:
    """A /health that finds a failure ends with what changed in the last hours: the first question after "what is down"."""
    card = ctx.changes.card(DEFAULT_WINDOW, ctx.clock()).reply()
    return replace(reply, text=f"{reply.text}\n\n{card.text}", blocks=reply.blocks + [blocks.divider(), *card.blocks])
