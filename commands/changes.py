"""/changes [WINDOW]: what changed in the stack (releases, the engine's events, the stack file and services'
environment, the bot's changing commands), the card /incident start, a failing /health and the watch's alerts post."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field

from bot.frame.durations import Duration, duration_field
from bot.frame.registry import Reply, command
from bot.frame.roles import Role
from commands.context import Ctx

WindowField = duration_field("7d", noun="time window")


class ChangesArgs(BaseModel):
    window: WindowField = Field(Duration.parse("6h"), description="how far back, at most 7d", examples=["6h"])


@command("changes", summary="What changed in the stack: releases, restarts, OOM kills, health flips, the stack file, commands.",
         usage="/changes [window, e.g. 6h]", role=Role.viewer, args=ChangesArgs)
def changes(ctx: Ctx, args: ChangesArgs) -> Reply:
    return ctx.changes.card(timedelta(seconds=args.window.seconds), ctx.clock()).reply()
