"""Storing and reading incidents and their timeline: each change is one short transaction of its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Insert, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from bot.incidents.model import (
    DEFAULT_SEVERITY, IMPORTED, OPEN, RESOLVED, SLACK_MESSAGE, Incident, Postmortem, TimelineEvent,
)
from bot.jobs.model import Job
from bot.store.engine import Store, utcnow


class AlreadyOpen(Exception):
    def __init__(self, incident: Incident):
        super().__init__(incident.label)
        self.incident = incident


_OPEN_ID = select(Incident.id).where(Incident.channel_id == bindparam("asked_channel"), Incident.state == OPEN).limit(1)
# The same, asked by each audit row's INSERT about the row's channel (AuditLog.ask_with_each_row).
OPEN_ID_OF_ROW = _OPEN_ID.scalar_subquery()


@dataclass
class Event:
    """A timeline event before it is stored."""

    kind: str
    occurred_at: datetime
    text: str
    actor: str | None = None
    details: dict | None = None
    channel_id: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    permalink: str | None = None


class Timeline:
    def __init__(self, store: Store):
        self._store = store

    # ---- incidents -------------------------------------------------------------------------------

    def open(self, channel_id: str, title: str, severity: int, by: str, *, at: datetime | None = None) -> Incident:
        """A new open incident in the channel, or AlreadyOpen with the one that is (the database decides races)."""
        current = self.open_in(channel_id)  # asked first: a refused insert would use up a number on PostgreSQL
        if current is not None:
            raise AlreadyOpen(current)
        incident = Incident(
            channel_id=channel_id, title=title, severity=severity, state=OPEN, started_at=at or utcnow(), started_by=by
        )
        try:
            with self._store.session.begin() as session:
                session.add(incident)
        except IntegrityError:
            current = self.open_in(channel_id)
            if current is None:  # resolved between the two statements
                return self.open(channel_id, title, severity, by, at=at)
            raise AlreadyOpen(current) from None
        return incident

    def add_resolved(self, channel_id: str, title: str, by: str, started_at: datetime, resolved_at: datetime) -> Incident:
        """An incident nobody declared, made from the channel's history: resolved from the start."""
        incident = Incident(
            channel_id=channel_id, title=title, severity=DEFAULT_SEVERITY, state=RESOLVED, started_at=started_at,
            started_by=by, resolved_at=resolved_at, imported=True,
        )
        with self._store.session.begin() as session:
            session.add(incident)
        return incident

    def open_in(self, channel_id: str | None) -> Incident | None:
        if not channel_id:
            return None
        with self._store.session() as session:
            return session.scalars(select(Incident).where(Incident.channel_id == channel_id, Incident.state == OPEN)).first()

    def open_id(self, channel_id: str | None) -> int | None:
        """open_in()'s id only: asked after every command's outcome row, so on the store's writer (one round trip on
        PostgreSQL), no ORM session."""
        if not channel_id:
            return None
        return self._store.ack_writer.read(_OPEN_ID, {"asked_channel": channel_id})

    def latest_in(self, channel_id: str) -> Incident | None:
        with self._store.session() as session:
            return session.scalars(select(Incident).where(Incident.channel_id == channel_id).order_by(Incident.id.desc())).first()

    def get(self, incident_id: int) -> Incident | None:
        with self._store.session() as session:
            return session.get(Incident, incident_id)

    def recent(self, limit: int = 10) -> list[Incident]:
        with self._store.session() as session:
            return list(session.scalars(select(Incident).order_by(Incident.id.desc()).limit(limit)))

    def change(self, incident_id: int, **values) -> Incident:
        with self._store.session.begin() as session:
            session.execute(update(Incident).where(Incident.id == incident_id).values(**values))
        return self.get(incident_id)

    def resolve(self, incident_id: int, by: str, summary: str | None, *, at: datetime | None = None) -> bool:
        """open -> resolved, once: False when someone resolved it first."""
        with self._store.session.begin() as session:
            result = session.execute(
                update(Incident)
                .where(Incident.id == incident_id, Incident.state == OPEN)
                .values(state=RESOLVED, resolved_at=at or utcnow(), resolved_by=by, summary=summary)
            )
            return result.rowcount == 1

    # ---- events ----------------------------------------------------------------------------------

    def add(self, incident_id: int, *events: Event) -> int:
        """Store events; one already stored (same incident, channel, ts and kind) is skipped. How many were new."""
        if not events:
            return 0
        now = utcnow()
        rows = [
            {
                "incident_id": incident_id, "recorded_at": now, "kind": e.kind, "occurred_at": e.occurred_at,
                "text": e.text, "actor": e.actor[:64] if e.actor else None, "details": e.details,
                "channel_id": e.channel_id, "ts": e.ts, "thread_ts": e.thread_ts, "permalink": e.permalink,
            }
            for e in events
        ]
        with self._store.session.begin() as session:
            before = self._count(session, incident_id)
            connection = session.connection()
            # Plain executemany (no RETURNING): the driver's own loop, fast for the ten thousand rows of a history import.
            connection.execute(self._insert_new(connection), rows)
            return self._count(session, incident_id) - before

    @staticmethod
    def _insert_new(connection) -> Insert:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        return dialect.insert(TimelineEvent).on_conflict_do_nothing()

    @staticmethod
    def _count(session, incident_id: int) -> int:
        return session.scalar(select(func.count()).select_from(TimelineEvent).where(TimelineEvent.incident_id == incident_id))

    def events(self, incident_id: int, *, latest: int | None = None, deleted: bool = False) -> list[TimelineEvent]:
        """The timeline in order of occurrence (all of it, or the latest few), as read-only rows with the
        event's attributes: plain rows load and read several times faster than ORM objects, which counts
        for the ten thousand messages of a post-mortem. Entries the lead deleted only with `deleted` (the export)."""
        columns = TimelineEvent.__table__.columns
        query = select(*columns).where(columns.incident_id == incident_id)
        if not deleted:
            query = query.where(columns.deleted_at.is_(None))
        with self._store.session() as session:
            if latest is None:
                return list(session.execute(query.order_by(columns.occurred_at, columns.id)))
            newest = session.execute(query.order_by(columns.occurred_at.desc(), columns.id.desc()).limit(latest))
            return list(reversed(list(newest)))

    def started_since(self, moment: datetime) -> list[Incident]:
        with self._store.session() as session:
            return list(session.scalars(select(Incident).where(Incident.started_at >= moment).order_by(Incident.id)))

    def actions(self, incident_ids: list[int]) -> dict[int, list[TimelineEvent]]:
        """The timelines of these incidents without their Slack messages (thousands of them, no action among
        them), each in order of occurrence, as events() reads them."""
        found: dict[int, list[TimelineEvent]] = {incident_id: [] for incident_id in incident_ids}
        if not incident_ids:
            return found
        columns = TimelineEvent.__table__.columns
        query = (
            select(*columns)
            .where(columns.incident_id.in_(incident_ids), columns.kind.not_in((SLACK_MESSAGE, IMPORTED)))
            .order_by(columns.occurred_at, columns.id)
        )
        with self._store.session() as session:
            for row in session.execute(query):
                found[row.incident_id].append(row)
        return found

    def count(self, incident_id: int) -> int:
        """Entries shown (the deleted ones left out)."""
        with self._store.session() as session:
            return session.scalar(
                select(func.count()).select_from(TimelineEvent)
                .where(TimelineEvent.incident_id == incident_id, TimelineEvent.deleted_at.is_(None))
            )

    def entry(self, entry_id: int) -> TimelineEvent | None:
        with self._store.session() as session:
            return session.get(TimelineEvent, entry_id)

    @staticmethod
    def _copies(entry: TimelineEvent):
        """The entry, and when it is a Slack message, its other copy (pinned, and read from the history)."""
        if entry.kind not in (SLACK_MESSAGE, IMPORTED) or entry.ts is None:
            return TimelineEvent.id == entry.id
        return or_(TimelineEvent.id == entry.id, and_(
            TimelineEvent.incident_id == entry.incident_id, TimelineEvent.channel_id == entry.channel_id,
            TimelineEvent.ts == entry.ts, TimelineEvent.kind.in_((SLACK_MESSAGE, IMPORTED)),
        ))

    def edit(self, entry: TimelineEvent, text: str, by: str, *, at: datetime | None = None) -> bool:
        """New text for an entry not deleted, its first text kept: one statement, False when it was deleted first."""
        with self._store.session.begin() as session:
            result = session.execute(
                update(TimelineEvent)
                .where(self._copies(entry), TimelineEvent.deleted_at.is_(None))
                .values(
                    text=text, original_text=func.coalesce(TimelineEvent.original_text, TimelineEvent.text),
                    edited_at=at or utcnow(), edited_by=by,
                )
            )
            return result.rowcount >= 1

    def delete(self, entry: TimelineEvent, reason: str, by: str, *, at: datetime | None = None) -> bool:
        """Leave an entry out of every view, kept as it was: once (False when someone deleted it first)."""
        with self._store.session.begin() as session:
            result = session.execute(
                update(TimelineEvent)
                .where(self._copies(entry), TimelineEvent.deleted_at.is_(None))
                .values(deleted_at=at or utcnow(), deleted_by=by, delete_reason=reason)
            )
            return result.rowcount >= 1

    def deleted_messages(self, incident_id: int) -> set[tuple[str | None, str | None]]:
        """(channel, ts) of the Slack messages the lead deleted: a later read of the history does not bring them back."""
        with self._store.session() as session:
            rows = session.execute(
                select(TimelineEvent.channel_id, TimelineEvent.ts)
                .where(TimelineEvent.incident_id == incident_id, TimelineEvent.deleted_at.is_not(None), TimelineEvent.ts.is_not(None))
            )
            return {(channel, ts) for channel, ts in rows}

    def job_results(self, job_ids: set[int]) -> dict[int, str]:
        """What the runs of these jobs replied (the first lines of a /restart's report, say)."""
        if not job_ids:
            return {}
        with self._store.session() as session:
            rows = session.execute(select(Job.id, Job.result).where(Job.id.in_(job_ids), Job.result.is_not(None)))
            return {job_id: result for job_id, result in rows}

    # ---- post-mortems ----------------------------------------------------------------------------

    def save_postmortem(self, incident_id: int, by: str, markdown: str, names: dict[str, str]) -> int:
        with self._store.session.begin() as session:
            session.execute(update(Incident).where(Incident.id == incident_id).values(names=names))
            row = Postmortem(incident_id=incident_id, created_at=utcnow(), created_by=by, markdown=markdown)
            session.add(row)
            session.flush()
            return row.id

    def set_postmortem_file(self, postmortem_id: int, file_id: str) -> None:
        with self._store.session.begin() as session:
            session.execute(update(Postmortem).where(Postmortem.id == postmortem_id).values(file_id=file_id))
