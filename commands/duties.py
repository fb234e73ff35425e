"""/schedule and /watch: the scheduled duties, their next run and last result; what the watch sees and what fires."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from bot.frame import blocks
from bot.frame.humanize import ago
from bot.frame.durations import duration_field
from bot.frame.registry import CommandError, Reply, command
from bot.frame.roles import Role
from bot.store.engine import utcnow
from commands.context import Ctx

MUTE_LIMIT = "7d"
MARK = {"succeeded": "🟢", "failed": "🔴", "missed": "🟠", "interrupted": "🟠", "queued": "⏳", "running": "▶️"}


@command("schedule", summary="The scheduled duties: whether each is on, its next run and its last result.", usage="/schedule", role=Role.viewer)
def schedule(ctx: Ctx, _args) -> Reply:
    duties, settings = ctx.duties, ctx.settings
    if duties.channel:
        head = (
            f"Scheduled duties, posted to <#{duties.channel}> (times in {settings.timezone}; a slot missed while the bot was down "
            f"still runs up to {settings.duty_grace_minutes:g} min late)"
        )
    else:
        head = "No duty runs: set FLOWSTATE_OPS_CHANNEL to the id of the channel they post to."
    last = duties.last_runs()
    lines = []
    for duty in duties.all:
        if duty.schedule is None:
            lines.append(f"⚪ *{duty.title}*: off ({duty.setting}=off)" if duty.name != "watch-check" else f"⚪ *{duty.title}*: off ({duty.setting}=0)")
            continue
        upcoming = duties.next_run(duty)
        line = f"*{duty.title}*: {duty.schedule.describe()}; next {duties.when(upcoming) if upcoming else 'never (no ops channel)'}"
        run = last.get(duty.name)
        if run is None:
            line += "; has not run yet"
        else:
            line += f"; last {MARK.get(run.state, '')} {run.state} for {duties.when(run.slot)}" + (f": {run.message}" if run.message else "")
        lines.append(line)
    return Reply("\n".join([head, *lines]), [blocks.section(f"*{head}*"), *blocks.sections(lines)])


MuteLength = duration_field(MUTE_LIMIT)


class WatchArgs(BaseModel):
    action: Literal["mute"] | None = Field(None, description="silences one alert for a while", examples=["mute"])
    key: str | None = Field(None, description="a watched key, as /watch lists them", examples=["cpu:backend"])
    duration: MuteLength | None = Field(None, description="how long no alert for it is posted", examples=["1h"])

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, data: object) -> object:
        # Checked before the fields, so a word in the wrong place gets the usage rather than a type's complaint.
        if isinstance(data, dict) and data and (data.get("action") != "mute" or data.get("duration") is None):
            raise ValueError("use /watch to see what is watched, or /watch mute KEY DURATION such as /watch mute cpu:backend 1h")
        return data

    @property
    def mute(self) -> tuple[str, timedelta] | None:
        return None if self.action is None else (self.key, self.duration.delta)


@command(
    "watch",
    summary="What the watch checks and what is firing; `mute KEY DURATION` silences one alert for a while.",
    usage="/watch [mute KEY DURATION]",
    role=Role.viewer,
    args=WatchArgs,
    role_for=lambda args: Role.operator if args.action else Role.viewer,
)
def watch(ctx: Ctx, args: WatchArgs) -> Reply:
    duties = ctx.duties
    states = duties.watch.states()
    if args.mute is not None:
        key, length = args.mute
        known = [state.key for state in states]
        if key not in known:
            listed = ", ".join(known[:40]) if known else "none yet (the watch has not run)"
            raise CommandError(f"There is no watched key {key[:60]!r}; the keys are: {listed}.")
        until = duties.clock.now() + length
        duties.watch.mute(key, until, ctx.invocation.user_id)
        text = f"🔇 {key} is muted until {duties.when(until)} by <@{ctx.invocation.user_id}>: no alert for it is posted until then."
        return Reply(text, [blocks.section(text)], in_channel=True)
    settings, limits = ctx.settings, ctx.stack.config.thresholds
    off = not settings.watch_minutes or not duties.channel
    if off:
        head = "⚪ The watch is off (FLOWSTATE_WATCH_MINUTES=0 or no FLOWSTATE_OPS_CHANNEL): nothing is watched, so no alert will come."
    else:
        head = (
            f"The watch checks every {settings.watch_minutes} min: every /health check, and the /stats thresholds (API 5xx above "
            f"{limits.error_rate_percent:g}%, CPU and memory above {limits.cpu_percent:g}% / {limits.memory_percent:g}%, database "
            f"connections above {limits.connections_percent:g}%, queries longer than {limits.long_query_seconds:g} s, queue above "
            f"{limits.queue_length:,}). One alert after {settings.watch_checks} bad checks in a row, one recovery after "
            f"{settings.watch_checks} good ones."
        )
    now = duties.clock.now()
    firing, quiet = [], []
    for state in states:
        if state.firing_since is None:
            quiet.append(state.key)
            continue
        muted = f" (🔇 muted until {duties.when(state.muted_until)})" if state.muted_until and state.muted_until > now else ""
        firing.append(f"🔴 *{state.key}*: {state.detail} (firing since {duties.when(state.firing_since)}){muted}")
    lines = [f"Firing ({len(firing)}):", *firing] if firing else ["Nothing is firing, as of its last run." if off else "🟢 Nothing is firing."]
    if quiet:
        last = max(state.checked_at for state in states)
        lines.append(f"Not firing ({len(quiet)}, last checked {ago(last, utcnow()) if last <= utcnow() else duties.when(last)}): " + ", ".join(quiet))
    elif not states:
        lines.append("Nothing has been checked yet.")
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])
