"""/approvals: the pending requests, and deciding on one by its number (what the buttons do, typed)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from bot.frame import blocks
from bot.frame.registry import Reply, command
from bot.frame.roles import Role
from commands.context import Ctx


class ApprovalsArgs(BaseModel):
    action: Literal["list", "approve", "deny", "cancel"] = Field("list", examples=["approve"])
    id: int | None = Field(None, ge=1, le=2**31 - 1, description="the request's number", examples=[12])

    @model_validator(mode="after")
    def _shape(self) -> "ApprovalsArgs":
        if self.action != "list" and self.id is None:
            raise ValueError(f"{self.action} needs the request's number, such as /approvals {self.action} 12")
        if self.action == "list" and self.id is not None:
            raise ValueError("list takes nothing after it")
        return self


@command(
    "approvals",
    summary="List pending requests; approve, deny or cancel one by its number.",
    usage="/approvals [approve ID | deny ID | cancel ID]",
    role=Role.viewer,
    args=ApprovalsArgs,
)
def approvals(ctx: Ctx, args: ApprovalsArgs) -> Reply:
    flow = ctx.approvals
    if args.action == "list":
        flow.expire_due()
        pending, waiting = ctx.jobs.pending(), ctx.jobs.waiting()
        if not pending and not waiting:
            return Reply("No request is waiting for approval.")
        # Each with what its message shows an approver in Slack: nobody approves blind from the console either.
        lines = []
        for job in pending:
            lines.append(f"#{job.id} `{flow.command_line(job)}` asked by <@{job.requester}>, expires {flow.when(job.expires_at)}")
            lines.extend(f"    {detail}" for detail in flow.waiting(job))
        parts = [blocks.section("*Waiting for approval*"), *blocks.sections(lines)] if pending else []
        approved = [
            f"#{job.id} `{flow.command_line(job)}` asked by <@{job.requester}>, approved by <@{job.approver}>, waiting for "
            f"the change before it to finish (expires {flow.when(job.expires_at)})"
            for job in waiting
        ]
        if approved:
            parts += [blocks.section("*Approved, waiting for the stack*"), *blocks.sections(approved)]
        return Reply("\n".join(lines + approved), parts)
    if args.action == "approve":
        return flow.approve(args.id, ctx.invocation, ctx.role)
    if args.action == "deny":
        return flow.deny(args.id, ctx.invocation, ctx.role)
    return flow.cancel(args.id, ctx.invocation)
