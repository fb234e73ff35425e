"""An incident's response times, read from its timeline alone (so every replica and the CLI compute the same):

- **acknowledged**: the first action of a person after the start, that is the first timeline entry at or after
  `started_at` that is a note, a status update, a severity change, a command run in the incident's channel (a look
  such as /health counts; a denied or rejected one does not), or a person's approval step (asked, approved, denied,
  cancelled, break-glass). Not the start itself (the starter's own later actions do count), not the resolve, not the
  bot's own entries (a request that waited, expired or was interrupted; a bot's message), and not Slack messages (what
  is pinned or read from the history is conversation, dated when it was posted, and the history is read only when
  the post-mortem is written).
- **mitigated**: the first /health that found everything green (no failing check, no threshold crossed) after a
  change on the timeline: a /restart (with or without services: the deploy), /rollback or /restore that ran (succeeded
  or failed). The watch writes nothing on a timeline, and a change's own gate may excuse checks that failed before it,
  so a /health run after the change is what says health was green again.
- **resolved**: the resolve.

Each is measured from `started_at`. One not reached (still open, nobody acted, no green /health after a change) is
None, shown "—" and left out of a median. An incident imported from a channel's history has no declared start and
no actions: none of its times are measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.frame.humanize import count, duration
from bot.frame.registry import DOWN, FOUND, GREEN
from bot.incidents.model import APPROVAL, COMMAND, NOTE, RESOLVED, SEVERITY, STATUS, Incident, TimelineEvent
from bot.incidents.timeline import Timeline

MEASURES = ("acknowledge", "mitigate", "resolve")
WINDOWS = (30, 90)  # days, for the medians
CHANGES = ("restart", "rollback", "restore")  # what can mitigate (the deploy is /restart without a service)
PERSON_STEPS = ("requested", "approved", "declined", "cancelled", "break-glass")
NOT_ACTED = ("denied", "rejected")
NONE = "—"


@dataclass(frozen=True)
class Measured:
    """Seconds from the start to each moment, None when it has not come (or the incident was imported)."""

    acknowledge: float | None = None
    mitigate: float | None = None
    resolve: float | None = None
    mitigated_by: str | None = None  # the change the green /health followed, as typed

    def of(self, measure: str) -> float | None:
        return getattr(self, measure)


@dataclass(frozen=True)
class Median:
    measure: str
    days: int
    seconds: float | None
    counted: int  # incidents that reached this moment
    started: int  # incidents started in the window


def _command(event: TimelineEvent) -> str:
    return ((event.details or {}).get("command") or "").lstrip("/").split(" ")[0]


def is_acknowledgement(event: TimelineEvent) -> bool:
    details = event.details or {}
    if event.actor is None or details.get("bot"):
        return False
    if event.kind == STATUS:
        return details.get("change") == "status"
    if event.kind in (NOTE, SEVERITY):
        return True
    if event.kind == COMMAND:
        return details.get("outcome") not in NOT_ACTED
    if event.kind == APPROVAL:
        return details.get("step") in PERSON_STEPS
    return False


def is_change(event: TimelineEvent) -> bool:
    details = event.details or {}
    return event.kind == COMMAND and details.get("outcome") in ("succeeded", "failed") and _command(event) in CHANGES


def is_green_health(event: TimelineEvent) -> bool:
    """A /health whose every check was green (its GREEN fact). Rows written before /health recorded it count when
    they checked containers (DOWN) and found nothing: a /health with nothing to check is never green."""
    details = event.details or {}
    if event.kind != COMMAND or _command(event) != "health" or details.get("outcome") != "succeeded":
        return False
    facts = details.get("facts") or {}
    return facts.get(GREEN) is True or (facts.get(DOWN) == [] and not facts.get(FOUND))


def measure(incident: Incident, events: list[TimelineEvent]) -> Measured:
    """The three times of one incident, from its events in order of occurrence (Timeline.events)."""
    if incident.imported:
        return Measured()
    start = incident.started_at
    acknowledged = mitigated = change = None
    for event in events:
        if event.occurred_at < start:
            continue
        if acknowledged is None and is_acknowledgement(event):
            acknowledged = event.occurred_at
        if change is None and is_change(event):
            change = event
        elif change is not None and is_green_health(event):
            mitigated = event.occurred_at
            break
    resolved = incident.resolved_at if incident.state == RESOLVED else None
    return Measured(
        acknowledge=_seconds(start, acknowledged), mitigate=_seconds(start, mitigated), resolve=_seconds(start, resolved),
        mitigated_by=(change.details or {}).get("command") if mitigated is not None else None,
    )


def _seconds(start: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else (moment - start).total_seconds()


def median(values: list[float]) -> float | None:
    """The middle value; with an even count, the mean of the two middle ones. None of nothing."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def medians(measured: list[tuple[Incident, Measured]], now: datetime) -> list[Median]:
    """Each measure's median over the incidents started in the last 30 and 90 days (imported ones left out)."""
    out = []
    for days in WINDOWS:
        since = now - timedelta(days=days)
        inside = [m for incident, m in measured if incident.started_at >= since and not incident.imported]
        for name in MEASURES:
            values = [m.of(name) for m in inside if m.of(name) is not None]
            out.append(Median(name, days, median(values), len(values), len(inside)))
    return out


def measure_all(timeline: Timeline, incidents: list[Incident]) -> list[tuple[Incident, Measured]]:
    actions = timeline.actions([i.id for i in incidents if not i.imported])
    return [(incident, measure(incident, actions.get(incident.id, []))) for incident in incidents]


def recent_medians(timeline: Timeline, now: datetime) -> list[Median]:
    """The medians of the last WINDOWS days, read from the store (what /incidents --stats and /metrics show)."""
    return medians(measure_all(timeline, timeline.started_since(now - timedelta(days=max(WINDOWS)))), now)


def shown(seconds: float | None) -> str:
    return NONE if seconds is None else duration(seconds)


def suffix(measured: Measured) -> str:
    """The short form of /incidents: ack 4 min · mitigated 12 min · resolved 40 min."""
    return f"ack {shown(measured.acknowledge)} · mitigated {shown(measured.mitigate)} · resolved {shown(measured.resolve)}"


LABELS = {"acknowledge": "time to acknowledge", "mitigate": "time to mitigate", "resolve": "time to resolve"}


def stats_lines(found: list[Median]) -> list[str]:
    """/incidents --stats: one line per window, saying how many incidents each median counts."""
    lines = []
    for days in WINDOWS:
        rows = [m for m in found if m.days == days]
        total = rows[0].started if rows else 0
        parts = [f"{LABELS[m.measure]} {shown(m.seconds)} ({m.counted} of {total})" for m in rows]
        lines.append(f"Last {days} days, {count(total, 'incident')}: median " + " · ".join(parts))
    return lines


def response_times(incident: Incident, events: list[TimelineEvent]) -> str:
    """The post-mortem's "Response times" section."""
    measured = measure(incident, events)
    if incident.imported:
        note = "_Not measured: this incident was imported from the channel's history, with no declared start or actions._"
        return f"## Response times\n\n{note}"
    mitigated = shown(measured.mitigate)
    if measured.mitigated_by:
        mitigated += f" (the first green /health after `{measured.mitigated_by.replace('`', '')}`)"
    elif measured.mitigate is None:
        mitigated += " (no /health found everything green after a /restart, /rollback or /restore)"
    acknowledged = shown(measured.acknowledge) + ("" if measured.acknowledge is not None else " (no one acted after the start)")
    resolved = shown(measured.resolve) + ("" if measured.resolve is not None else " (still open)")
    lines = [
        f"- Time to acknowledge: {acknowledged}",
        f"- Time to mitigate: {mitigated}",
        f"- Time to resolve: {resolved}",
        "",
        "_From the start: acknowledged at the first note, status, severity change, command or approval step of a person; "
        "mitigated at the first /health with every check green after a change._",
    ]
    return "## Response times\n\n" + "\n".join(lines)
