"""/incident, /incidents and /postmortem: an incident's lifecycle, its timeline, and the post-mortem."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, TypeAdapter, ValidationError, model_validator

from bot.changes.service import DEFAULT_WINDOW as CARD_WINDOW
from bot.incidents.actions import due_day
from bot.incidents.metrics import measure_all, recent_medians
from bot.incidents.model import DEFAULT_SEVERITY, OPEN, SEVERITIES
from bot.incidents.text import slack_safe
from bot.incidents.views import SHOWN_EVENTS, glance, listing, stats, summary, timeline
from bot.frame.durations import Duration, MomentField, duration_field
from bot.frame.registry import CommandError, FreeText, Option, Reply, UserId, command
from bot.frame.roles import Role
from bot.store.engine import utcnow
from commands.context import Ctx

_TS = re.compile(r"\d{1,12}\.\d{1,6}")
OPERATOR_ACTIONS = ("start", "status", "sev", "resolve", "action")
TIMELINE_CHANGES = ("edit", "delete")  # /incident timeline edit ENTRY_ID TEXT, /incident timeline delete ENTRY_ID REASON
DEFAULT_DUE = Duration.parse("7d")
_OWNER = TypeAdapter(UserId)
_ACTION_USAGE = '/incident action @owner "TEXT" --due 3d'



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
    action: Literal["show", "start", "status", "sev", "note", "resolve", "timeline", "add-message", "action"] = Field(
        "show", examples=["start"]
    )
    text: FreeText = Field("", max_length=3000, description="the title, status, note or summary", examples=["Checkout failing"])
    sev: Annotated[Severity | None, Option("--sev", "1..4")] = Field(
        None, description=f"the severity of a new incident, 1 (worst) to 4 (default {DEFAULT_SEVERITY})", examples=[2]
    )
    deadline: Annotated[duration_field("52w") | None, Option("--due", "TIME")] = Field(
        None, description=f"when a follow-up (action) is due, from now (default {DEFAULT_DUE})"
    )
    incident: Annotated[int | None, Option("--incident", "ID")] = Field(
        None, ge=1, description="the incident a follow-up belongs to (default: the channel's open one, else its latest)"
    )
    export: Annotated[bool, Option("--export")] = Field(
        False, description="with timeline: upload the whole timeline as CSV and JSON files (deleted entries with their state)"
    )

    @model_validator(mode="after")
    def _shape(self) -> "IncidentArgs":
        text = self.text.strip()
        if self.action == "show" and text:
            raise ValueError("show takes nothing after it")
        if self.action == "timeline" and text:
            self.timeline_change()
        if self.export and (self.action != "timeline" or text):
            raise ValueError("--export goes with timeline alone: /incident timeline --export")
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
        if self.action == "action":
            self.follow_up()
        elif self.deadline is not None or self.incident is not None:
            raise ValueError(f"--due and --incident go with action, such as {_ACTION_USAGE}")
        return self

    def follow_up(self) -> tuple[str, str]:
        """(owner, text) of `action @owner "TEXT"`; ValueError in one sentence when either is missing."""
        first, _, rest = self.text.strip().partition(" ")
        try:
            owner = _OWNER.validate_python(first)
        except ValidationError:
            raise ValueError(f"action needs an owner first (@name in Slack, a user id in the console), such as {_ACTION_USAGE}") from None
        said = _unquoted(rest)
        if not said:
            raise ValueError(f"action needs a text after its owner, such as {_ACTION_USAGE}")
        if len(said) > 500:
            raise ValueError("the follow-up's text should be at most 500 characters")
        _one_line(said)
        return owner, said

    def severity(self) -> int:
        """`--sev N` of a start, or the default."""
        if self.action == "sev":
            return _severity(self.text.strip())
        return self.sev or DEFAULT_SEVERITY

    def title(self) -> str:
        return _unquoted(self.text)

    def words(self) -> str:
        return _unquoted(self.text)

    def timeline_change(self) -> tuple[str, int, str]:
        """(edit or delete, the entry's id, the new text or the reason) of `timeline edit|delete ENTRY_ID TEXT`."""
        verb, entry, words = (self.text.strip().split(None, 2) + ["", ""])[:3]
        if verb not in TIMELINE_CHANGES:
            raise ValueError("timeline takes --export, edit ENTRY_ID TEXT or delete ENTRY_ID REASON after it")
        said = "the new text" if verb == "edit" else "a reason"
        if not entry.lstrip("#").isdigit() or len(entry) > 12:
            raise ValueError(f"timeline {verb} needs an entry's number (/incident timeline shows them) and {said}")
        if not _unquoted(words):
            raise ValueError(f"timeline {verb} needs {said} after the entry's number, such as /incident timeline {verb} {entry} \"...\"")
        return verb, int(entry.lstrip("#")), _unquoted(words)


def _role(args: IncidentArgs) -> Role:
    changes_timeline = args.action == "timeline" and args.text.strip()
    return Role.operator if args.action in OPERATOR_ACTIONS or changes_timeline else Role.viewer


@command(
    "incident",
    summary="The channel's incident: start, status, severity, notes, resolve, its timeline.",
    usage=(
        "/incident [start TITLE [--sev 1..4] | status TEXT | sev N | note TEXT | resolve [SUMMARY] | timeline [--export]"
        " | timeline edit ENTRY_ID TEXT | timeline delete ENTRY_ID REASON"
        ' | action @owner "TEXT" [--due 3d] [--incident ID]]'
    ),
    role=Role.viewer,
    role_for=_role,
    args=IncidentArgs,
)
def incident(ctx: Ctx, args: IncidentArgs) -> Reply:
    flow, channel, user = ctx.incidents, ctx.invocation.channel_id, ctx.invocation.user_id
    tz, now = ctx.tz, utcnow()
    if args.action == "action":
        return _follow_up(ctx, args)
    if not channel:
        raise CommandError("Incidents belong to a channel; run this in the incident's channel.")
    if args.action == "show":
        current = flow.current(channel)
        return glance(current, flow.timeline.events(current.id, latest=8), tz, now)
    if args.action == "timeline" and args.text.strip():
        verb, entry_id, words = args.timeline_change()
        admin = ctx.role == Role.admin  # an admin may correct any incident's timeline, as its lead may
        if verb == "edit":
            return flow.edit_entry(channel, entry_id, words, user, admin=admin)
        return flow.delete_entry(channel, entry_id, words, user, admin=admin)
    if args.action == "timeline":
        shown = flow.which(channel, None)
        if args.export:
            return flow.export(shown, channel, user)
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


def _follow_up(ctx: Ctx, args: IncidentArgs) -> Reply:
    """A follow-up for `--incident ID`, else the channel's open incident, else the channel's latest (after the resolve)."""
    flow, channel = ctx.incidents, ctx.invocation.channel_id
    owner, text = args.follow_up()
    if args.incident is not None:
        chosen = flow.which(None, args.incident)
    else:
        chosen = (flow.timeline.open_in(channel) or flow.timeline.latest_in(channel)) if channel else None
    if chosen is None:
        raise CommandError("No incident was started in this channel; name one with --incident ID (/incidents lists them).")
    due = args.deadline or DEFAULT_DUE
    added = flow.actions.add(chosen, owner, text, due.delta, ctx.invocation.user_id, ctx.duties.clock.now())
    state = "" if chosen.state == OPEN else " (resolved)"
    return Reply(
        f"📋 Follow-up #{added.id} of incident #{chosen.id}{state} is <@{owner}>'s, due {due_day(added.due_at, ctx.tz)}: "
        f"{slack_safe(text)}; /actions lists the open ones.",
        in_channel=True,
    )


class IncidentsArgs(BaseModel):
    count: int = Field(10, ge=1, le=50, description="how many incidents")
    stats: Annotated[bool, Option("--stats")] = Field(
        False, description="the median times to acknowledge, mitigate and resolve over the last 30 and 90 days instead"
    )

    @model_validator(mode="after")
    def _shape(self) -> "IncidentsArgs":
        if self.stats and "count" in self.model_fields_set:
            raise ValueError("--stats takes no count: it measures every incident of the last 90 days")
        return self


@command(
    "incidents",
    summary="The recent incidents of every channel, with their response times.",
    usage="/incidents [count] [--stats]",
    role=Role.viewer,
    args=IncidentsArgs,
)
def incidents(ctx: Ctx, args: IncidentsArgs) -> Reply:
    timeline = ctx.incidents.timeline
    if args.stats:
        return stats(recent_medians(timeline, utcnow()))
    return listing(measure_all(timeline, timeline.recent(args.count)), ctx.tz, utcnow())


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
