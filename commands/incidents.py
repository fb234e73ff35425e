"""/incident, /incidents and /postmortem: an incident's lifecycle, its timeline, and the post-mortem."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from bot.changes.service import DEFAULT_WINDOW as CARD_WINDOW
from bot.incidents.model import DEFAULT_SEVERITY, SEVERITIES
from bot.incidents.views import SHOWN_EVENTS, glance, listing, summary, timeline
from bot.frame.durations import MomentField
from bot.frame.registry import CommandError, FreeText, Option, Reply, command
from bot.frame.roles import Role
from bot.store.engine import utcnow
from commands.context import Ctx

_TS = re.compile(r"\d{1,12}\.\d{1,6}")
OPERATOR_ACTIONS = ("start", "status", "sev", "resolve")


def _one_line(title: str) -> None:
    """A title heads the summary message and the post-mortem: a second line there would be markup of its own."""
    if len(title.splitlines()) > 1:  # every line break Python knows, \u2028 included (titles arrive stripped)
        raise ValueError("the title should be one line")


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“":
        return text[1:-1].strip()
    return text


def _severity(value: object) -> int:
    if str(value).upper().removeprefix("SEV") not in {str(s) for s in SEVERITIES}:
        raise ValueError(f"severity should be 1 (worst) to 4, not {str(value)[:10]!r}")
    return int(str(value).upper().removeprefix("SEV"))


Severity = Annotated[int, BeforeValidator(_severity)]


class IncidentArgs(BaseModel):
    action: Literal["show", "start", "status", "sev", "note", "resolve", "timeline", "add-message"] = Field(
        "show", examples=["start"]
    )
    text: FreeText = Field("", max_length=3000, description="the title, status, note or summary", examples=["Checkout failing"])
    sev: Annotated[Severity | None, Option("--sev", "1..4")] = Field(
        None, description=f"the severity of a new incident, 1 (worst) to 4 (default {DEFAULT_SEVERITY})", examples=[2]
    )

    @model_validator(mode="after")
    def _shape(self) -> "IncidentArgs":
        text = self.text.strip()
        if self.action in ("show", "timeline") and text:
            raise ValueError(f"{self.action} takes nothing after it")
        if self.action in ("status", "note") and not text:
            raise ValueError(f"{self.action} needs a text, such as /incident {self.action} checkout errors back to normal")
        if self.action == "start":
            title = self.title()
            if not title:
                raise ValueError("start needs a title, such as /incident start Checkout failing --sev 2")
            if len(title) > 200:
                raise ValueError("the title should be at most 200 characters")
            _one_line(title)
            self.severity()
        if self.action == "sev":
            _severity(text)
        if self.sev is not None and self.action != "start":
            raise ValueError("--sev goes with start; /incident sev N changes the open incident's severity")
        if self.action == "add-message" and not _TS.fullmatch(text.split(" ")[0]):
            raise ValueError("add-message needs a message ts")
        return self

    def severity(self) -> int:
        """`--sev N` of a start, or the default."""
        if self.action == "sev":
            return _severity(self.text.strip())
        return self.sev or DEFAULT_SEVERITY

    def title(self) -> str:
        return _unquoted(self.text)

    def words(self) -> str:
        return _unquoted(self.text)


def _role(args: IncidentArgs) -> Role:
    return Role.operator if args.action in OPERATOR_ACTIONS else Role.viewer


@command(
    "incident",
    summary="The channel's incident: start, status, severity, notes, resolve, its timeline.",
    usage="/incident [start TITLE [--sev 1..4] | status TEXT | sev N | note TEXT | resolve [SUMMARY] | timeline]",
    role=Role.viewer,
    role_for=_role,
    args=IncidentArgs,
)
def incident(ctx: Ctx, args: IncidentArgs) -> Reply:
    flow, channel, user = ctx.incidents, ctx.invocation.channel_id, ctx.invocation.user_id
    tz, now = ctx.tz, utcnow()
    if not channel:
        raise CommandError("Incidents belong to a channel; run this in the incident's channel.")
    if args.action == "show":
        current = flow.current(channel)
        return glance(current, flow.timeline.events(current.id, latest=8), tz, now)
    if args.action == "timeline":
        shown = flow.which(channel, None)
        return timeline(shown, flow.timeline.events(shown.id, latest=SHOWN_EVENTS), flow.timeline.count(shown.id), tz)
    if args.action == "note":
        noted = flow.note(channel, args.words(), user)
        return Reply(f"📝 Noted on the timeline of incident #{noted.id}.")
    if args.action == "add-message":
        ts, _, via = args.text.strip().partition(" ")
        return flow.add_message(channel, ts, via or "command", user)
    if args.action == "start":
        changed = flow.start(channel, args.title(), args.severity(), user)
        said = f"You started incident #{changed.id} (SEV{changed.severity}); the timeline records itself from now on."
        card = ctx.changes.card(CARD_WINDOW, now, f"What changed before incident #{changed.id}")
        if not ctx.changes.post(channel, card):  # no Slack (the console): the card comes with the reply
            said = f"{said}\n\n{card.reply().text}"
    elif args.action == "status":
        changed = flow.status(channel, args.words(), user)
        said = f"The status of incident #{changed.id} is updated."
    elif args.action == "sev":
        changed = flow.severity(channel, args.severity(), user)
        said = f"Incident #{changed.id} is SEV{changed.severity} now."
    else:
        changed = flow.resolve(channel, args.words() or None, user)
        said = f"Incident #{changed.id} is resolved. /postmortem writes its post-mortem."
    if changed.message_ts:  # the channel's summary message shows the change
        return Reply(said)
    shown = summary(changed, tz, now)
    return Reply(f"{said}\n{shown.text}", shown.blocks)


class IncidentsArgs(BaseModel):
    count: int = Field(10, ge=1, le=50, description="how many incidents")


@command("incidents", summary="The recent incidents of every channel.", usage="/incidents [count]", role=Role.viewer, args=IncidentsArgs)
def incidents(ctx: Ctx, args: IncidentsArgs) -> Reply:
    return listing(ctx.incidents.timeline.recent(args.count), ctx.tz, utcnow())


class PostmortemArgs(BaseModel):
    text: FreeText = Field("", max_length=500, description="an incident's number, or with --since the new incident's title")
    since: Annotated[MomentField | None, Option("--since", "TIME")] = Field(
        None, description="imports the channel's history from then as a new, resolved incident", examples=["3h"]
    )
    until: Annotated[MomentField | None, Option("--until", "TIME")] = Field(None, description="the end of that history (default now)")

    @model_validator(mode="after")
    def _shape(self) -> "PostmortemArgs":
        if self.until is not None and self.since is None:
            raise ValueError("--until needs --since, such as /postmortem --since 3h --until 1h")
        if self.since is None and self.text.strip() and not self.text.strip().lstrip("#").isdigit():
            raise ValueError("give an incident's number, or --since TIME to import the channel's history")
        _one_line(self.title() or "")
        return self

    def incident_id(self) -> int | None:
        word = self.text.strip().lstrip("#")
        return int(word) if word.isdigit() and self.since is None else None

    def title(self) -> str | None:
        return _unquoted(self.text) or None


@command(
    "postmortem",
    summary="Write the post-mortem of an incident, or of a stretch of the channel's history, as a Markdown file.",
    usage="/postmortem [INCIDENT_ID] | /postmortem --since TIME [--until TIME] [TITLE]",
    role=Role.operator,
    args=PostmortemArgs,
)
def postmortem(ctx: Ctx, args: PostmortemArgs) -> Reply:
    flow, channel, user = ctx.incidents, ctx.invocation.channel_id, ctx.invocation.user_id
    if args.since is not None:
        tz, now = ctx.tz, utcnow()
        since = args.since.resolve(tz, now)
        until = args.until.resolve(tz, now) if args.until is not None else now
        if since >= until:
            raise CommandError("--since must be before --until.")
        if not channel:
            raise CommandError("Run /postmortem --since in the channel whose history it should read.")
        chosen = flow.import_window(channel, since, until, args.title(), user)
    else:
        chosen = flow.which(channel, args.incident_id())
    return flow.postmortem(chosen, channel, user)
