"""/restart SERVICE...: the emergency restart, one Compose service at a time, each until healthy again.
/restart with no service: the operator guide's full restart, the deploy script, gated on every app service's health."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field, field_validator

from bot.deploy.flows import check_deploy, describe_deploy, run_deploy
from bot.deploy.service import recover as recover_deploy
from bot.frame import blocks
from bot.frame.faults import reached
from bot.frame.registry import CommandError, Reply, command
from bot.frame.roles import Role
from bot.stack.compose import StackError
from bot.stack.health import evaluate, gate
from commands.context import Ctx


class RestartArgs(BaseModel):
    services: list[str] = Field(
        [], description="Compose services, restarted one at a time; none: the deploy script", examples=["frontend"]
    )

    @field_validator("services")
    @classmethod
    def _names(cls, services: list[str]) -> list[str]:
        for name in services:
            if len(name) > 64 or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise ValueError(f"{name[:64]!r} is not a Compose service name")
        return list(dict.fromkeys(services))  # a service named twice restarts once


def _known_services(ctx: Ctx, args: RestartArgs) -> None:
    """Refused before any request is made: nobody should approve a restart of a service that does not exist."""
    if not args.services:
        check_deploy(ctx.releases_or_refuse())
        return
    ctx.stack.refuse_unknown_services(args.services, "there is nothing to restart")


def recover_restart(ctx: Ctx, job) -> str:
    """What an interrupted /restart left: a service caught between its stop and its start is started again."""
    services = (job.arguments or {}).get("services") or []
    if not services:
        return recover_deploy(ctx.releases, ctx.store, job)
    compose = ctx.stack.compose
    try:
        stopped = [s.service for s in compose.states() if s.service in services and s.status != "running"]
        if stopped:
            compose.start(stopped)
        states = [compose.wait_healthy(service, ctx.stack.healthy_timeout) for service in services]
    except StackError as error:
        return f"{error} {', '.join(services)} may be stopped: /restart {' '.join(services)} starts them."
    shown = ", ".join(f"{s.service} {s.health or s.status}" for s in states)
    started = f"Started {', '.join(stopped)} again. " if stopped else ""
    return f"{started}Services: {shown}."


@command(
    "restart",
    summary="Restart Compose services, each until it is healthy again; with no service, run the deploy script.",
    usage="/restart [SERVICE...]",
    role=Role.operator,
    args=RestartArgs,
    needs_approval=True,
    needs=lambda args: () if args.services else ("deploy",),
    check=_known_services,
    describe=lambda ctx, args: [] if args.services else describe_deploy(ctx.releases_or_refuse()),
    recover=recover_restart,
)
def restart(ctx: Ctx, args: RestartArgs) -> Reply:
    if not args.services:
        return run_deploy(ctx.releases_or_refuse(), ctx.job_id, ctx.invocation.user_id, ctx.approver(), ctx.progress)
    docker = ctx.stack.compose
    if docker is None:
        raise CommandError("The stack file names no Compose project, so there is nothing to restart.")
    lines, failed = [], False
    # A restart must not leave the stack worse, not cure what it does not touch: checks that failed before it
    # (another service down) are not counted, the restarted services' own containers always are.
    restarted = {f"container:{'-'.join(service.split())}" for service in args.services}
    before = {c.key for c in evaluate(ctx.stack).checks if not c.holds} - restarted
    for position, service in enumerate(args.services):
        started = time.monotonic()
        ctx.progress(f"Restarting {service}…")
        try:
            docker.restart([service])
            reached(ctx.fault, "restart:after_restart")
            outcome = gate(ctx.stack, ctx.progress, excused=args.services[position + 1:], already_failing=before)
        except StackError as error:
            lines.append(f"🔴 *{service}*: {error}")
            failed = True
            break  # the next services wait: an operator decides what to do after a failure
        took = time.monotonic() - started
        if outcome.ok:
            stable = ctx.stack.stable_seconds
            before_text = f" (failing before and not counted: {', '.join(outcome.not_counted)})" if outcome.not_counted else ""
            lines.append(f"🟢 *{service}* is healthy again after {took:.1f} s; every check held for {stable:g} s{before_text}")
            ctx.progress(lines[-1])
        else:
            lines.append(f"🔴 *{service}* was restarted, but the stack is not healthy: {outcome.line.removeprefix('🔴 ')}")
            failed = True
            break
    skipped = args.services[len(lines):]
    if skipped:
        lines.append(f"Not restarted after that failure: {', '.join(skipped)}.")
    title = "Restart failed" if failed else "Restarted"
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=failed)
