"""/freeze: stop changes to the stack for a while (release day, a holiday), see the freeze, end it early."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from bot.duties.freeze import shown
from bot.frame import blocks
from bot.frame.durations import Duration
from bot.frame.registry import FreeText, Reply, command
from bot.frame.roles import Role
from commands.context import Ctx

LONGEST = "14d"
_USAGE = '/freeze [DURATION "REASON" | end]'


class FreezeArgs(BaseModel):
    what: str | None = Field(None, description='how long changes stay frozen (at most 14d), or end', examples=["2h"])
    reason: FreeText = Field("", max_length=300, description="why, in quotes: what every refusal names", examples=['"release day"'])

    @model_validator(mode="after")
    def _shape(self) -> "FreezeArgs":
        what, reason = (self.what or "").strip().lower(), self.reason.strip()
        if len(reason) >= 2 and reason[0] == reason[-1] and reason[0] in "\"'":
            reason = reason[1:-1].strip()
        self.reason = reason
        if what == "end":
            if reason:
                raise ValueError("/freeze end takes nothing after it")
            return self
        if not what:
            return self
        length = Duration.read(what)
        if length is None:
            raise ValueError(f"{what[:20]!r} is not a length of time for a freeze; give one such as 2h or 3d, at most {LONGEST}")
        if length.seconds > Duration.parse(LONGEST).seconds:
            raise ValueError(f"a freeze can last at most {LONGEST}; the stack file's [[freeze.window]] entries repeat every week")
        if not reason:
            raise ValueError('a freeze needs a reason in quotes, such as /freeze 2h "release day"')
        return self

    @property
    def length(self) -> Duration | None:
        return Duration.read(self.what) if self.what and self.what.lower() != "end" else None


@command(
    "freeze",
    summary=(
        "Freeze changes to the stack for a while, show the freeze, or end it early. Freezing and ending need the approver "
        "role: the people who say yes to a change are the ones who may say no to all of them for a while."
    ),
    usage=_USAGE,
    role=Role.viewer,
    args=FreezeArgs,
    role_for=lambda args: Role.approver if args.what else Role.viewer,
)
def freeze(ctx: Ctx, args: FreezeArgs) -> Reply:
    freezes, caller = ctx.duties.freezes, ctx.invocation.user_id
    if args.what is None:
        lines = shown(freezes)
        return Reply("\n".join(lines), blocks.sections(lines))
    if args.length is None:
        said = freezes.end(caller)
    else:
        said = freezes.freeze(caller, args.length.delta, args.reason)
    # The ops channel is told (bot/duties/freeze.py); the caller reads the same words here.
    return Reply("\n".join(said), blocks.sections(said))
