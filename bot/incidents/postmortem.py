"""The post-mortem as Markdown, from the stored incident and timeline alone (so the CLI writes it without Slack).

Sections in the order the operator guide asks for: the facts, summary, impact, detection and response
times, the timeline by date (pinned messages and key actions marked), what was done, resolution,
action items. Every piece of user text is escaped; times are in the configured zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from bot.frame.humanize import count, duration
from bot.incidents.actions import action_items
from bot.incidents.metrics import response_times
from bot.incidents.model import (
    APPROVAL, COMMAND, IMPORTED, NOTE, SEVERITY, SLACK_MESSAGE, STATUS, Incident, IncidentAction, TimelineEvent,
    is_key_action,
)
from bot.incidents.text import markdown_safe, to_markdown
from bot.incidents.when import clock, day, full
from bot.frame.registry import DOWN, EDGE_ERROR_RATE, FOUND

PINNED, KEY_ACTION, ANNOUNCED, NOTED = "📌", "🔧", "📣", "📝"
MESSAGES = (SLACK_MESSAGE, IMPORTED)
NOT_RUN = ("declined", "cancelled", "expired", "interrupted")


@dataclass
class Report:
    incident: Incident
    events: list[TimelineEvent]
    names: dict[str, str]
    job_results: dict[int, str]
    tz: tzinfo
    now: datetime
    actions: list[IncidentAction] = field(default_factory=list)  # its follow-ups (/incident action)
    chart: str | None = None  # the file of the chart of the incident's window; None: nothing was sampled in it


def chart_name(incident: Incident) -> str:
    """The file of the chart of an incident's window, posted beside its post-mortem."""
    return f"postmortem-incident-{incident.id}-trends.png"


def render(report: Report) -> str:
    events = _without_repeats(report.events)
    writer = _Writer(report, events)
    parts = [
        writer.facts(), writer.summary(), writer.impact(), writer.detection(), response_times(report.incident, events),
        writer.trends(), writer.timeline(),
        writer.what_was_done(), writer.resolution(), writer.action_items(),
    ]
    return "\n\n".join(parts) + "\n"


def _without_repeats(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """A message both pinned and read from the history shows once, as pinned."""
    pinned = {(e.channel_id, e.ts) for e in events if e.kind == SLACK_MESSAGE}
    return [e for e in events if not (e.kind == IMPORTED and (e.channel_id, e.ts) in pinned)]


class _Writer:
    def __init__(self, report: Report, events: list[TimelineEvent]):
        self.r = report
        self.incident = report.incident
        self.events = events
        self.tz = report.tz
        self._names: dict[str | None, str] = {None: "flowstate-bot"}
        self._minutes: dict[int, tuple[str, str]] = {}

    # ---- small pieces ----------------------------------------------------------------------------

    def name(self, user_id: str | None) -> str:
        if user_id not in self._names:
            self._names[user_id] = markdown_safe(self.r.names.get(user_id) or user_id)
        return self._names[user_id]

    def minute(self, moment: datetime) -> tuple[str, str]:
        """(day header, clock) of a moment; a timeline of thousands of messages shares its minutes."""
        key = int(moment.timestamp()) // 60
        if key not in self._minutes:
            self._minutes[key] = (day(moment, self.tz), clock(moment, self.tz))
        return self._minutes[key]

    def by(self, user_id: str | None) -> str:
        """ by someone; an imported incident was resolved by nobody in particular."""
        return f" by {self.name(user_id)}" if user_id else ""

    def text(self, event: TimelineEvent) -> str:
        edited = " _(edited)_" if event.edited_at else ""  # the lead's correction (/incident timeline edit)
        return to_markdown(event.text, self.r.names) + edited

    def author(self, event: TimelineEvent) -> str:
        bot = (event.details or {}).get("bot")
        if bot:
            return f"{markdown_safe(self.r.names.get(bot) or bot)} (bot)"
        return self.name(event.actor)

    @property
    def end(self) -> datetime:
        return self.incident.resolved_at or self.r.now

    def participants(self) -> list[str]:
        seen: dict[str, None] = {self.incident.started_by: None}
        for event in self.events:
            if event.actor and not (event.details or {}).get("bot"):
                seen.setdefault(event.actor, None)
        if self.incident.resolved_by:
            seen.setdefault(self.incident.resolved_by, None)
        return [self.name(user) for user in seen]

    # ---- sections --------------------------------------------------------------------------------

    def facts(self) -> str:
        i = self.incident
        resolved = f"{full(i.resolved_at, self.tz)}{self.by(i.resolved_by)}" if i.resolved_at else "still open"
        source = " (imported from the channel's history)" if i.imported else ""
        rows = [
            ("Severity", f"SEV{i.severity}"),
            ("Started", f"{full(i.started_at, self.tz)} by {self.name(i.started_by)}{source}"),
            ("Resolved", resolved),
            ("Duration", duration((self.end - i.started_at).total_seconds()) + ("" if i.resolved_at else " so far")),
            ("Participants", ", ".join(self.participants())),
        ]
        table = "\n".join(f"| {key} | {value} |" for key, value in rows)
        return (
            f"# Post-mortem: {markdown_safe(i.title)} (incident #{i.id})\n\n"
            f"_A draft by flowstate-bot from the incident's timeline and the channel's history; times in {self.tz}._\n\n"
            f"| | |\n|---|---|\n{table}"
        )

    def summary(self) -> str:
        said = markdown_safe(self.incident.summary) if self.incident.summary else "_To be written._"
        return f"## Summary\n\n{said}"

    def impact(self) -> str:
        lines = [f"- Duration: {duration((self.end - self.incident.started_at).total_seconds())}"]
        severities = [e for e in self.events if e.kind == SEVERITY]
        if severities:
            changes = "; ".join(f"{self.text(e)} at {clock(e.occurred_at, self.tz)} by {self.name(e.actor)}" for e in severities)
            lines.append(f"- Severity: SEV{self.incident.severity} ({changes})")
        else:
            lines.append(f"- Severity: SEV{self.incident.severity}")
        lines += [self.edge_error_rate(), self.services_down()]
        updates = [e for e in self.events if e.kind == STATUS and (e.details or {}).get("change") == "status"]
        if updates:
            lines.append("- Status updates:")
            lines.extend(f"  - {clock(e.occurred_at, self.tz)} {self.name(e.actor)}: {self.text(e)}" for e in updates)
        return "## Impact\n\n" + "\n".join(lines)

    def _measured(self, fact: str) -> list[tuple[datetime, object]]:
        """A fact of what the commands of the timeline found (Reply.facts, kept in their audit rows), with its time."""
        return [
            (e.occurred_at, facts[fact]) for e in self.events
            if e.kind == COMMAND and fact in (facts := (e.details or {}).get("facts") or {})
        ]

    def edge_error_rate(self) -> str:
        rates = self._measured(EDGE_ERROR_RATE)
        if not rates:
            return "- Edge error rate: not measured (no /health or /stats during the incident recorded it)"
        at, peak = max(rates, key=lambda measured: measured[1])
        return f"- Edge error rate: peak {peak:.1f}% at {clock(at, self.tz)} ({count(len(rates), 'measurement')})"

    def services_down(self) -> str:
        """Each service from the first /health that found it down to the first that found it up again."""
        checks = self._measured(DOWN)
        if not checks:
            return "- Services down: not checked (no /health during the incident)"
        since: dict[str, datetime] = {}
        spans: list[str] = []
        for at, down in checks:
            for service in down:
                since.setdefault(service, at)
            for service in [s for s in since if s not in down]:
                start = since.pop(service)
                spans.append(f"{markdown_safe(service)} from {clock(start, self.tz)} to {clock(at, self.tz)} "
                             f"({duration((at - start).total_seconds())})")
        last = checks[-1][0]
        for service, start in since.items():
            spans.append(f"{markdown_safe(service)} from {clock(start, self.tz)}, still down at the last check at "
                         f"{clock(last, self.tz)} (at least {duration((last - start).total_seconds())})")
        if not spans:
            return "- Services down: none (every container was up at each /health)"
        return "- Services down (from the first /health that found each down to the first that found it up): " + "; ".join(spans)

    def detection(self) -> str:
        start = self.incident.started_at
        first = next((e for e in self.events if e.kind in MESSAGES), None)
        actions = [
            e for e in self.events
            if e.kind in (COMMAND, APPROVAL) and e.occurred_at >= start and (e.details or {}).get("outcome") not in ("denied", "rejected")
        ]
        lines = []
        if first is not None:
            lines.append(f"- First alert or message: {full(first.occurred_at, self.tz)}, {self.author(first)}: {self.text(first)}")
            if first.occurred_at < start:
                lines.append(f"- Detection to start: {duration((start - first.occurred_at).total_seconds())}")
            else:
                lines.append("- Detection to start: the incident was started before any message about it")
        else:
            lines.append("- First alert or message: none in the channel")
        if actions:
            action = actions[0]
            lines.append(
                f"- Start to first action: {duration((action.occurred_at - start).total_seconds())} "
                f"({self.text(action)}, {self.name(action.actor)})"
            )
        else:
            lines.append("- Start to first action: no command was run")
        if self.incident.resolved_at:
            lines.append(f"- Start to resolution: {duration((self.incident.resolved_at - start).total_seconds())}")
        return "## Detection and response\n\n" + "\n".join(lines)

    def trends(self) -> str:
        if self.r.chart is None:
            return ("## Trends\n\nNo metric samples are stored for the incident's window, so there is no chart (the bot samples "
                    "the key metrics each minute and keeps them FLOWSTATE_SAMPLE_DAYS days).")
        return (f"## Trends\n\n![Key metrics of incident #{self.incident.id}]({self.r.chart})\n\n_The 5xx rate at the edge and "
                "the backend, CPU and memory per service, database connections and the AI worker queue, sampled each minute; "
                "releases and restarts are the dashed lines._")

    def timeline(self) -> str:
        out = [f"## Timeline\n\n{PINNED} pinned message · {KEY_ACTION} key action · {ANNOUNCED} status or severity · {NOTED} note"]
        current_day = None
        for event in self.events:
            this_day, at = self.minute(event.occurred_at)
            if this_day != current_day:
                out.append(f"\n### {this_day}\n")
                current_day = this_day
            out.append(f"- {at} {self.line(event)}")
        if current_day is None:
            out.append("\nNothing was recorded.")
        return "\n".join(out)

    def line(self, event: TimelineEvent) -> str:
        details = event.details or {}
        link = f" ([message]({event.permalink}))" if event.permalink else ""
        if event.kind in MESSAGES:
            mark = f"{PINNED} " if event.kind == SLACK_MESSAGE and not details.get("in_thread_of") else ""
            thread = "↳ " if event.thread_ts else ""
            extras = []
            if details.get("files"):
                extras.append("files: " + ", ".join(markdown_safe(f) for f in details["files"]))
            if details.get("edited") and not event.edited_at:  # edited in Slack; the lead's edit is marked already
                extras.append("edited")
            extra = f" _({'; '.join(extras)})_" if extras else ""
            return f"{mark}{thread}{self.author(event)}: {self.text(event)}{extra}{link}"
        if is_key_action(event.kind, details):
            glass = " **break-glass**" if details.get("break_glass") is not None and event.kind == APPROVAL else ""
            return f"{KEY_ACTION}{glass} **{self.name(event.actor)}** {self.text(event)}"
        if event.kind == COMMAND:  # a look that found nothing: on the timeline, not marked
            return f"{self.name(event.actor)} {self.text(event)}"
        if event.kind in (STATUS, SEVERITY):
            return f"{ANNOUNCED} **{self.name(event.actor)}** {self.text(event)}"
        if event.kind == NOTE:
            return f"{NOTED} {self.name(event.actor)}: {self.text(event)}{link}"
        return f"{self.name(event.actor)}: {self.text(event)}"

    def what_was_done(self) -> str:
        lines = []
        for event in self.events:
            details = event.details or {}
            if event.kind == COMMAND and is_key_action(event.kind, details):
                lines.append(f"- {clock(event.occurred_at, self.tz)} {self.command_result(event, details)}")
            elif event.kind == APPROVAL and details.get("step") in NOT_RUN:
                lines.append(f"- {clock(event.occurred_at, self.tz)} {self.text(event)}; not run")
        if not lines:
            lines.append("- No command from the channel changed anything or found a problem.")
        return "## What was done\n\n" + "\n".join(lines)

    def command_result(self, event: TimelineEvent, details: dict) -> str:
        who = self.name(event.actor)
        how = []
        if details.get("approved_by"):
            how.append(f"approved by {self.name(details['approved_by'])}")
        if details.get("break_glass") is not None:
            how.append(f"**break-glass** ({markdown_safe(details['break_glass'])})")
        request = f" (request #{details['job_id']}, {', '.join(how)})" if how else ""
        outcome = details.get("outcome", "")
        took = f" in {details['duration_ms'] / 1000:.1f} s" if outcome in ("succeeded", "failed") else ""
        found = (details.get("facts") or {}).get(FOUND)
        if found and outcome == "succeeded":
            outcome = f"found {markdown_safe(found)}"
        result = ""
        if details.get("error"):
            result = f": {markdown_safe(details['error'])}"
        elif details.get("job_id") in self.r.job_results:
            said = [line.strip() for line in self.r.job_results[details["job_id"]].splitlines() if line.strip()]
            result = ": " + " · ".join(to_markdown(line, self.r.names) for line in said[:4])
        command = details.get("command", "")
        return f"`{command.replace('`', '')}` by {who}{request}: {outcome}{took}{result}"

    def resolution(self) -> str:
        i = self.incident
        if not i.resolved_at:
            return "## Resolution\n\nThe incident is still open."
        said = f": {markdown_safe(i.summary)}" if i.summary else "."
        return (
            f"## Resolution\n\nResolved {full(i.resolved_at, self.tz)}{self.by(i.resolved_by)}, "
            f"{duration((i.resolved_at - i.started_at).total_seconds())} after the start{said}"
        )

    def action_items(self) -> str:
        return action_items(self.r.actions, self.name, self.r.names, self.tz, self.r.now)
