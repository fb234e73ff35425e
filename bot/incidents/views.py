"""What Slack and the console show of an incident: its summary message, the timeline, the list."""

from __future__ import annotations

from datetime import datetime, tzinfo

from bot.frame import blocks
from bot.frame.humanize import duration
from bot.incidents.metrics import Measured, Median, stats_lines, suffix
from bot.incidents.model import (
    ACTION, APPROVAL, COMMAND, NOTE, OPEN, SEVERITY, SLACK_MESSAGE, STATUS, Incident, TimelineEvent, is_key_action,
)
from bot.incidents.text import slack_safe
from bot.incidents.when import clock, day, full
from bot.frame.registry import Reply

MARKS = {SLACK_MESSAGE: "📌", COMMAND: "🔧", APPROVAL: "🔧", STATUS: "📣", SEVERITY: "📣", NOTE: "📝", ACTION: "📋"}
LOOKED = "🔎"  # a command that changed nothing and found nothing wrong: not a key action
SHOWN_EVENTS = 60  # a Slack message holds about this many lines comfortably


def headline(incident: Incident) -> str:
    icon = "🚨" if incident.state == OPEN else "✅"
    return f"{icon} *Incident #{incident.id}: {slack_safe(incident.title)}* · SEV{incident.severity}"


def summary(incident: Incident, tz: tzinfo, now: datetime) -> Reply:
    """The incident's one message in its channel, updated in place as it changes."""
    started = f"Started {full(incident.started_at, tz)} by <@{incident.started_by}>"
    if incident.state == OPEN:
        state = f"Open for {duration((now - incident.started_at).total_seconds())}"
        status = f"*Status:* {slack_safe(incident.status)}" if incident.status else "*Status:* investigating"
        hint = "/incident status TEXT · /incident note TEXT · react with the pin emoji or use “Add to incident timeline” on a message"
    else:
        state = f"Resolved {full(incident.resolved_at, tz)} by <@{incident.resolved_by}> after " + duration(
            (incident.resolved_at - incident.started_at).total_seconds()
        )
        status = f"*Summary:* {slack_safe(incident.summary)}" if incident.summary else "*Resolved.*"
        hint = "/postmortem writes the post-mortem"
    parts = [blocks.section(headline(incident)), blocks.section(status), blocks.context(f"{started} · {state}"), blocks.context(hint)]
    text = f"Incident #{incident.id}: {slack_safe(incident.title)} (SEV{incident.severity}, {incident.state})"
    return Reply(text, parts, in_channel=True)


def event_line(event: TimelineEvent, tz: tzinfo, *, numbered: bool = False) -> str:
    mark = LOOKED if event.kind == COMMAND and not is_key_action(event.kind, event.details) else MARKS.get(event.kind, "💬")
    who = f"<@{event.actor}>" if event.actor else "flowstate-bot"
    if (event.details or {}).get("bot"):
        who = f"{slack_safe(event.details['bot'])} (bot)"
    number = f"`#{event.id}` " if numbered else ""  # what /incident timeline edit and delete name
    edited = " _(edited)_" if event.edited_at else ""
    return f"{number}{clock(event.occurred_at, tz)} {mark} {who}: {slack_safe(event.text)}{edited}"


def dated_lines(events: list[TimelineEvent], tz: tzinfo, *, numbered: bool = False) -> list[str]:
    lines, current = [], None
    for event in events:
        this_day = day(event.occurred_at, tz)
        if this_day != current:
            lines.append(f"*{this_day}*")
            current = this_day
        lines.append(event_line(event, tz, numbered=numbered))
    return lines


def glance(incident: Incident, latest: list[TimelineEvent], tz: tzinfo, now: datetime) -> Reply:
    reply = summary(incident, tz, now)
    lines = dated_lines(latest, tz) or ["Nothing on the timeline yet."]
    reply.blocks += [blocks.divider(), *blocks.sections(lines)]
    reply.text += "\n" + "\n".join(lines)
    reply.in_channel = False
    return reply


def timeline(incident: Incident, events: list[TimelineEvent], total: int, tz: tzinfo) -> Reply:
    lines = dated_lines(events, tz, numbered=True)
    head = f"*Timeline of incident #{incident.id}: {slack_safe(incident.title)}* (times in {tz})"
    if total > len(events):
        lines.insert(0, f"_… {total - len(events)} earlier events; /postmortem or /incident timeline --export has the whole timeline._")
    if not lines:
        lines = ["Nothing on the timeline yet."]
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])


def listing(incidents: list[tuple[Incident, Measured]], tz: tzinfo, now: datetime) -> Reply:
    if not incidents:
        return Reply("No incident has been started yet; /incident start TITLE opens one.")
    lines = []
    for incident, measured in incidents:
        end = incident.resolved_at or now
        state = "open" if incident.state == OPEN else "resolved"
        lines.append(
            f"#{incident.id} SEV{incident.severity} {state} · <#{incident.channel_id}> · {slack_safe(incident.title)} · "
            f"{full(incident.started_at, tz)}, {duration((end - incident.started_at).total_seconds())} · {suffix(measured)}"
        )
    return Reply("\n".join(lines), [blocks.section("*Recent incidents*"), *blocks.sections(lines)])


def stats(medians: list[Median]) -> Reply:
    head = "*Incident response times* (medians of the incidents started in each window; a time not reached is not counted)"
    lines = stats_lines(medians)
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])
