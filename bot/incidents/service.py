"""The incidents as the runtime holds them: the lifecycle, capture of Slack messages, and the post-mortem."""

from __future__ import annotations

import logging
import re
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from slack_sdk.errors import SlackApiError

from bot.incidents.actions import FollowUps
from bot.incidents.capture import AuditCapture, AuditHost, message_event
from bot.frame.humanize import count
from bot.incidents.export import as_csv, as_json, entries
from bot.incidents.model import (
    IMPORTED, NOTE, RECORDED_BY_THE_BOT, SEVERITY, SLACK_MESSAGE, STATUS, Incident, TimelineEvent,
)
from bot.incidents.postmortem import Report, chart_name, render
from bot.incidents.slack_reader import SlackReader
from bot.incidents.text import slack_safe
from bot.incidents.timeline import AlreadyOpen, Event, Timeline
from bot.incidents.views import summary
from bot.incidents.when import from_ts, full
from bot.frame.registry import CommandError, Notifier, Reply
from bot.stack.chart import save
from bot.stack.trends import sampled
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.frame.config import Settings
    from bot.frame.dispatcher import Dispatcher
    from bot.stack.chart import Chart
    from bot.store.engine import Store


class Host(AuditHost, Protocol):
    """What incidents use of the composition root (bot/runtime.py), read when used: Slack's parts are set once the
    adapter connects. A domain may not import the root."""

    store: "Store"
    settings: "Settings"
    dispatcher: "Dispatcher"
    notifier: Notifier | None
    slack: "WebClient | None"

    def trend_chart(self, start: datetime, end: datetime, title: str) -> "Chart | None": ...

log = logging.getLogger(__name__)

# Channel noise, not conversation: joins and leaves, topic changes, deleted messages kept for their threads.
SKIPPED_SUBTYPES = {
    "channel_join", "channel_leave", "group_join", "group_leave", "channel_topic", "channel_purpose",
    "channel_name", "tombstone", "message_deleted", "pinned_item", "unpinned_item",
}
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)")
MENTIONED_NAMES = 50  # names looked up for people who are only mentioned, at most


class Incidents:
    def __init__(self, runtime: Host):
        self._rt = runtime
        self.timeline = Timeline(runtime.store)
        self.on_audit = AuditCapture(runtime, self.timeline)
        self.actions = FollowUps(runtime, self.timeline)

    @property
    def tz(self):
        return self._rt.settings.tz

    # ---- which incident ----------------------------------------------------------------------------

    def current(self, channel: str | None) -> Incident:
        incident = self.timeline.open_in(channel)
        if incident is None:
            raise CommandError("There is no open incident in this channel; /incident start TITLE opens one.")
        return incident

    # ---- the lifecycle -----------------------------------------------------------------------------

    def start(self, channel: str, title: str, severity: int, by: str) -> Incident:
        try:
            incident = self.timeline.open(channel, title, severity, by)
        except AlreadyOpen as already:
            open_ = already.incident
            raise CommandError(
                f"Incident #{open_.id} ({slack_safe(open_.title)}, SEV{open_.severity}) has been open in this channel since "
                f"{full(open_.started_at, self.tz)}; resolve it with /incident resolve before starting another."
            ) from None
        self.timeline.add(
            incident.id,
            Event(STATUS, incident.started_at, f"started the incident: {title} (SEV{severity})", by, {"change": "started"}, channel),
        )
        return self.show(incident)

    def status(self, channel: str, text: str, by: str) -> Incident:
        incident = self.current(channel)
        self.timeline.add(incident.id, Event(STATUS, utcnow(), text, by, {"change": "status"}, channel))
        return self.show(self.timeline.change(incident.id, status=text))

    def severity(self, channel: str, severity: int, by: str) -> Incident:
        incident = self.current(channel)
        if incident.severity == severity:
            raise CommandError(f"Incident #{incident.id} is already SEV{severity}.")
        text = f"changed the severity from SEV{incident.severity} to SEV{severity}"
        self.timeline.add(incident.id, Event(SEVERITY, utcnow(), text, by, {"from": incident.severity, "to": severity}, channel))
        return self.show(self.timeline.change(incident.id, severity=severity))

    def note(self, channel: str, text: str, by: str) -> Incident:
        incident = self.current(channel)
        self.timeline.add(incident.id, Event(NOTE, utcnow(), text, by, None, channel))
        return incident

    def resolve(self, channel: str, said: str | None, by: str) -> Incident:
        incident = self.current(channel)
        now = utcnow()
        if not self.timeline.resolve(incident.id, by, said, at=now):
            raise CommandError(f"Incident #{incident.id} was resolved a moment ago by someone else.")
        text = f"resolved the incident: {said}" if said else "resolved the incident"
        self.timeline.add(incident.id, Event(STATUS, now, text, by, {"change": "resolved"}, channel))
        return self.show(self.timeline.get(incident.id))

    def show(self, incident: Incident) -> Incident:
        """Post the summary message, or update it in place; a Slack hiccup never fails the change."""
        notifier = self._rt.messages
        if notifier is None:
            return incident
        reply = summary(incident, self.tz, utcnow())
        try:
            if incident.message_ts:
                notifier.update(incident.channel_id, incident.message_ts, reply)
            else:
                ts = notifier.post(incident.channel_id, reply)
                if ts:
                    incident = self.timeline.change(incident.id, message_ts=ts)
        except Exception:
            log.exception("could not show the summary of incident #%s", incident.id)
        return incident

    # ---- Slack messages on the timeline --------------------------------------------------------------

    def _reader(self) -> SlackReader:
        if self._rt.slack is None:
            raise CommandError("This needs Slack: the console has no channel history to read.")
        return SlackReader(self._rt.slack)

    def add_message(self, channel: str, ts: str, via: str, by: str) -> Reply:
        """A message someone pinned (reaction or shortcut), with its thread's replies if it starts one."""
        incident = self.current(channel)
        reader = self._reader()
        try:
            found = reader.message(channel, ts)
        except SlackApiError as error:
            raise CommandError(self._cannot_read(error)) from None
        if found is None:
            raise CommandError("That message is gone (deleted?), so it was not added to the timeline.")
        message, replies = found
        pinned = message_event(SLACK_MESSAGE, channel, message, permalink=reader.permalink(channel, ts), details={"pinned_by": by, "via": via})
        if not self.timeline.add(incident.id, pinned):
            return Reply(f"That message is already on the timeline of incident #{incident.id}.")
        in_thread = [
            message_event(SLACK_MESSAGE, channel, reply, permalink=reader.permalink_of(channel, reply), details={"in_thread_of": ts})
            for reply in replies
        ]
        added = self.timeline.add(incident.id, *in_thread)
        thread = f" with {added} {'reply' if added == 1 else 'replies'} of its thread" if added else ""
        return Reply(f"📌 Added the message{thread} to the timeline of incident #{incident.id}.")

    @staticmethod
    def _cannot_read(error: SlackApiError) -> str:
        reason = error.response.get("error", "an error")
        return f"Slack did not let the bot read this channel ({reason}); invite the bot to the channel and try again."

    def _read(self, reader: SlackReader, channel: str, oldest: datetime, latest: datetime) -> list[dict]:
        """The conversation of a window of the channel's history: no joins, no deleted messages, nothing of ours."""
        try:
            return [
                m for m in reader.history(channel, oldest, latest)
                if m.get("subtype") not in SKIPPED_SUBTYPES and not m.get("hidden") and not reader.is_ours(m)
            ]
        except SlackApiError as error:
            raise CommandError(self._cannot_read(error)) from None

    def _store(self, reader: SlackReader, incident: Incident, messages: list[dict]) -> None:
        channel = incident.channel_id
        deleted = self.timeline.deleted_messages(incident.id)  # the lead took them off the timeline (pinned, say)
        messages = [m for m in messages if (channel, m["ts"]) not in deleted]
        self.timeline.add(incident.id, *(message_event(IMPORTED, channel, m, permalink=reader.permalink_of(channel, m)) for m in messages))

    # ---- the post-mortem ----------------------------------------------------------------------------

    def which(self, channel: str | None, incident_id: int | None) -> Incident:
        incident = self.timeline.get(incident_id) if incident_id else (self.timeline.latest_in(channel) if channel else None)
        if incident is None:
            if incident_id:
                raise CommandError(f"There is no incident #{incident_id}; /incidents lists them.")
            raise CommandError(
                "No incident was started in this channel; give its number (/incidents lists them), "
                "or import the channel's history with /postmortem --since 3h."
            )
        return incident

    def import_window(self, channel: str, since: datetime, until: datetime, title: str | None, by: str) -> Incident:
        """After the fact: a window of the channel's history becomes a new, resolved incident."""
        reader = self._reader()
        messages = self._read(reader, channel, since, until)
        if not messages:
            raise CommandError(
                f"This channel has no messages between {full(since, self.tz)} and {full(until, self.tz)}; nothing to import."
            )
        first, last = from_ts(messages[0]["ts"]), from_ts(messages[-1]["ts"])
        title = title or f"Imported from the channel, {full(first, self.tz)} to {full(last, self.tz)}"
        incident = self.timeline.add_resolved(channel, title, by, first, last)
        self._store(reader, incident, messages)
        return incident

    def report(self, incident: Incident, names: dict[str, str], events: list[TimelineEvent] | None = None) -> str:
        events = self.timeline.events(incident.id) if events is None else events
        job_ids = {e.details["job_id"] for e in events if e.details and e.details.get("job_id")}
        chart = chart_name(incident) if sampled(self._rt.store, incident.started_at, self._end(incident)) else None
        actions = self.actions.of_incident(incident.id)
        return render(Report(incident, events, names, self.timeline.job_results(job_ids), self.tz, utcnow(), actions=actions, chart=chart))

    @staticmethod
    def _end(incident: Incident) -> datetime:
        return incident.resolved_at or utcnow()

    def _chart(self, incident: Incident, reader: SlackReader | None, channel: str | None) -> str:
        """The key metrics of the incident's window drawn, posted to the channel (in the console: a file under the bot's
        home); a sentence for the reply ("" when nothing was sampled: the report says so)."""
        chart = self._rt.trend_chart(incident.started_at, self._end(incident), f"Incident #{incident.id}: {incident.title[:80]}")
        if chart is None:
            return ""
        filename = chart_name(incident)
        if reader is None or not channel:
            return f" Its chart: {save(chart.png, self._rt.settings.home / 'charts', filename)}."
        try:
            reader.upload(channel, filename, f"Key metrics of incident #{incident.id}", chart.png,
                          f"📈 The key metrics of incident #{incident.id}, for its post-mortem.")
        except Exception as error:
            reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
            log.exception("could not upload the chart of incident #%s", incident.id)
            return f" Its chart could not be posted ({reason}); /stats with a window draws one."
        return f" Its chart is posted as {filename}."

    def postmortem(self, incident: Incident, channel: str | None, by: str) -> Reply:
        """Read the channel (in Slack), write the report, store it, post it as a file."""
        reader = self._reader() if self._rt.slack is not None else None
        names = dict(incident.names or {})
        if reader is not None and not incident.imported:
            end = incident.resolved_at or utcnow()
            self._store(reader, incident, self._read(reader, incident.channel_id, incident.started_at, end))
        events = self.timeline.events(incident.id)
        if reader is not None:
            names = reader.names(sorted(self._people(incident, events)))
        drawn = self._chart(incident, reader, channel)
        markdown = self.report(incident, names, events)
        postmortem_id = self.timeline.save_postmortem(incident.id, by, markdown, names)
        filename = f"postmortem-incident-{incident.id}.md"
        again = f"`flowstate-bot postmortem {incident.id} --out {filename}` writes it again"
        if reader is None or not channel:
            return Reply(f"Post-mortem #{postmortem_id} of incident #{incident.id} is stored; {again}.{drawn}\n\n{markdown}")
        try:
            file_id = reader.upload(
                channel, filename, f"Post-mortem: {incident.title} (incident #{incident.id})", markdown,
                f"📄 Post-mortem draft of incident #{incident.id}, asked for by <@{by}>: fill in the summary and the action items.",
            )
        except Exception as error:
            reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
            log.exception("could not upload the post-mortem of incident #%s", incident.id)
            return Reply(f"Post-mortem #{postmortem_id} of incident #{incident.id} is stored, but Slack did not take the file ({reason}); {again}.", failed=True)
        if file_id:
            self.timeline.set_postmortem_file(postmortem_id, file_id)
        return Reply(f"Post-mortem of incident #{incident.id} posted to the channel as {filename} (stored as post-mortem #{postmortem_id}; {again}).{drawn}")

    # ---- the timeline as data, and the lead's corrections ------------------------------------------------

    def export(self, incident: Incident, channel: str | None, by: str) -> Reply:
        """Every entry, deleted ones too, as CSV and JSON: uploaded to the channel, or files under FLOWSTATE_HOME."""
        rows = entries(self.timeline.events(incident.id, deleted=True), incident.names or {}, self.tz)
        name = f"timeline-incident-{incident.id}"
        files = [(f"{name}.csv", as_csv(rows)), (f"{name}.json", as_json(incident, rows, self.tz))]
        what = f"The timeline of incident #{incident.id} ({count(len(rows), 'entry', 'entries')})"
        if self._rt.slack is None or not channel:
            folder = self._rt.settings.home / "exports"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            paths = []
            for filename, content in files:
                path = folder / filename
                path.touch(mode=0o600)
                path.write_text(content, encoding="utf-8")
                paths.append(str(path))
            return Reply(f"{what} is written to {paths[0]} and {paths[1]}.")
        title = f"Timeline of incident #{incident.id}: {incident.title}"
        try:
            self._reader().upload_files(
                channel, [(filename, title, content) for filename, content in files],
                f"🗂 {what} as CSV and JSON, asked for by <@{by}>.",
            )
        except Exception as error:
            reason = error.response.get("error") if isinstance(error, SlackApiError) else type(error).__name__
            log.exception("could not upload the timeline of incident #%s", incident.id)
            return Reply(f"Slack did not take the timeline files of incident #{incident.id} ({reason}); try again in a minute.", failed=True)
        return Reply(f"{what} is posted to the channel as {files[0][0]} and {files[1][0]}.")

    def _entry_to_change(self, channel: str, entry_id: int, by: str, admin: bool) -> tuple[Incident, TimelineEvent]:
        entry = self.timeline.entry(entry_id)
        incident = self.timeline.get(entry.incident_id) if entry is not None else None
        if incident is None or incident.channel_id != channel:
            raise CommandError(f"This channel's incidents have no timeline entry #{entry_id}; /incident timeline shows their numbers.")
        if by != incident.started_by and not admin:
            raise CommandError(
                f"Only the lead of incident #{incident.id} (<@{incident.started_by}>, who started it) or an admin can change "
                "its timeline; ask them, or add what you know with /incident note TEXT."
            )
        if entry.deleted_at is not None:
            raise CommandError(f"Timeline entry #{entry_id} was deleted by <@{entry.deleted_by}> already; nothing changed.")
        return incident, entry

    def edit_entry(self, channel: str, entry_id: int, text: str, by: str, *, admin: bool) -> Reply:
        """The lead's correction of an entry's text; the first text is kept, the post-mortem marks it (edited)."""
        incident, entry = self._entry_to_change(channel, entry_id, by, admin)
        if entry.kind in RECORDED_BY_THE_BOT:
            raise CommandError(
                f"Timeline entry #{entry_id} is the bot's own record, as the audit has it, so it is not rewritten; "
                f"delete it with /incident timeline delete {entry_id} REASON, or add a note with /incident note TEXT."
            )
        if entry.text == text:
            raise CommandError(f"Timeline entry #{entry_id} already says that; nothing changed.")
        if not self.timeline.edit(entry, text, by):
            raise CommandError(f"Timeline entry #{entry_id} was deleted a moment ago; nothing changed.")
        return Reply(
            f"✏️ Timeline entry #{entry_id} of incident #{incident.id} is edited; the timeline and the post-mortem mark it "
            "(edited), and its original text is kept.",
            facts={"timeline_entry": entry_id, "incident": incident.id, "change": "edited", "before": entry.text},
        )

    def delete_entry(self, channel: str, entry_id: int, reason: str, by: str, *, admin: bool) -> Reply:
        """The lead takes an entry off the timeline and the post-mortem; it is kept, and exported as deleted."""
        incident, entry = self._entry_to_change(channel, entry_id, by, admin)
        if not self.timeline.delete(entry, reason, by):
            raise CommandError(f"Timeline entry #{entry_id} was deleted a moment ago by someone else; nothing changed.")
        return Reply(
            f"🗑 Timeline entry #{entry_id} of incident #{incident.id} is deleted; the timeline and the post-mortem leave it "
            "out, and /incident timeline --export keeps it with your reason.",
            facts={"timeline_entry": entry_id, "incident": incident.id, "change": "deleted", "reason": reason},
        )

    def _people(self, incident: Incident, events: list[TimelineEvent]) -> set[str]:
        """Whose names to look up: everyone who acted, and the first MENTIONED_NAMES people mentioned (one
        message can mention thousands; past the cap a mention shows its user id)."""
        people = {incident.started_by} | ({incident.resolved_by} if incident.resolved_by else set())
        people |= {action.owner for action in self.actions.of_incident(incident.id)}
        mentioned: dict[str, None] = {}
        for event in events:
            if event.actor:
                people.add(event.actor)
            details = event.details or {}
            for key in ("approved_by", "pinned_by"):
                if details.get(key):
                    people.add(details[key])
            for user_id in _MENTION.findall(event.text):
                if len(mentioned) >= MENTIONED_NAMES:
                    break
                mentioned.setdefault(user_id)
        return people | set(mentioned)
