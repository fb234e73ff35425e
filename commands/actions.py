"""/actions: the open follow-ups of incidents (their owner, due date, overdue ones marked), and closing one."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from bot.frame import blocks
from bot.frame.registry import Reply, command
from bot.frame.roles import Role
from bot.incidents.actions import LISTED, due_day, overdue_by
from bot.incidents.text import slack_safe
from commands.context import Ctx


class ActionsArgs(BaseModel):
    action: Literal["list", "done"] = Field("list", description="list the open follow-ups, or close one", examples=["done"])
    action_id: int | None = Field(None, ge=1, description="the follow-up's number (done)", examples=[3])

    @model_validator(mode="after")
    def _shape(self) -> "ActionsArgs":
        if self.action == "done" and self.action_id is None:
            raise ValueError("done needs the follow-up's number, such as /actions done 3")
        if self.action == "list" and self.action_id is not None:
            raise ValueError("list takes nothing after it; /actions done 3 closes follow-up #3")
        return self


@command(
    "actions",
    summary="The open follow-ups of incidents, yours first; close one with done.",
    usage="/actions [done ID]",
    role=Role.viewer,
    args=ActionsArgs,
)
def actions(ctx: Ctx, args: ActionsArgs) -> Reply:
    follow_ups, user, now = ctx.incidents.actions, ctx.invocation.user_id, ctx.duties.clock.now()
    if args.action == "done":
        closed, incident = follow_ups.close(args.action_id, user, ctx.role is not None and ctx.role >= Role.admin, now)
        return Reply(f"✅ Follow-up #{closed.id} of incident #{incident.id} is done: {slack_safe(closed.text)}.")
    listed = follow_ups.open_ones(user)
    if not listed:
        return Reply('No follow-up is open; /incident action @owner "TEXT" --due 3d gives one.')
    lines = []
    for item in listed[:LISTED]:
        action = item.action
        late = overdue_by(action, now, ctx.tz)
        mark = "⚠️ *overdue*" + (f" by {late} day{'s' if late != 1 else ''}" if late else "") + " · " if late is not None else ""
        lines.append(
            f"#{action.id} {mark}<@{action.owner}> · due {due_day(action.due_at, ctx.tz)} · "
            f"incident #{action.incident_id} ({slack_safe(item.title)}): {slack_safe(action.text)}"
        )
    if len(listed) > LISTED:
        lines.append(f"… and {len(listed) - LISTED} more, due later.")
    head = f"*Open follow-ups* ({len(listed)}; yours first) · `/actions done ID` closes one"
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])
