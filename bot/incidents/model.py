"""The rows of an incident, its timeline and its post-mortems."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

OPEN, RESOLVED = "open", "resolved"

# Timeline event kinds.
COMMAND = "command"  # a command run in the incident's channel, with its outcome
APPROVAL = "approval"  # a step of a request that needs a second person (or a break-glass run)
STATUS = "status"  # started, a status update, resolved
SEVERITY = "severity"
NOTE = "note"
SLACK_MESSAGE = "slack_message"  # a message someone pinned to the timeline (reaction or shortcut)
IMPORTED = "imported_message"  # a message read from the channel's history for the post-mortem
ACTION = "action"  # a follow-up given to an owner (/incident action), or closed (/actions done)
KINDS = (COMMAND, APPROVAL, STATUS, SEVERITY, NOTE, SLACK_MESSAGE, IMPORTED, ACTION)


def is_key_action(kind: str, details: dict | None) -> bool:
    """A command or approval step, except a look that changed nothing and found nothing wrong (a green /health)."""
    return kind in (COMMAND, APPROVAL) and (details or {}).get("key") is not False


SEVERITIES = (1, 2, 3, 4)
DEFAULT_SEVERITY = 3


class Incident(Base):
    __tablename__ = "incidents"
    # One open incident per channel, held by the database itself (two starts at once: one wins).
    __table_args__ = (
        Index(
            "ux_incidents_open_channel", "channel_id", unique=True,
            sqlite_where=text("state = 'open'"), postgresql_where=text("state = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    severity: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    status: Mapped[str | None] = mapped_column(Text)  # the latest status update
    summary: Mapped[str | None] = mapped_column(Text)  # what the resolver said
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_by: Mapped[str] = mapped_column(String(64))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32))  # the summary message, updated in place
    imported: Mapped[bool] = mapped_column(Boolean, default=False)  # made from a channel's history after the fact
    names: Mapped[dict | None] = mapped_column(JSON)  # user id -> name, as resolved for the last post-mortem

    @property
    def label(self) -> str:
        return f"incident #{self.id}"


class TimelineEvent(Base):
    __tablename__ = "incident_events"
    # A message captured twice (Slack's retries, two people reacting) is stored once.
    __table_args__ = (
        UniqueConstraint("incident_id", "channel_id", "ts", "kind", name="uq_incident_events_message"),
        Index("ix_incident_events_incident_occurred", "incident_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(24))
    actor: Mapped[str | None] = mapped_column(String(64))  # a Slack user id; None for the bot itself
    text: Mapped[str] = mapped_column(Text)  # Slack mrkdwn as written (mentions as <@U...>)
    details: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))  # SQL NULL, not JSON null: nothing to decode
    channel_id: Mapped[str | None] = mapped_column(String(64))
    ts: Mapped[str | None] = mapped_column(String(32))
    thread_ts: Mapped[str | None] = mapped_column(String(32))
    permalink: Mapped[str | None] = mapped_column(Text)
    # The incident lead's corrections (migration 0019): `text` is what is shown, the first text is kept.
    original_text: Mapped[str | None] = mapped_column(Text)
    edited_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    edited_by: Mapped[str | None] = mapped_column(String(64))
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # left out of every view; kept, and exported
    deleted_by: Mapped[str | None] = mapped_column(String(64))
    delete_reason: Mapped[str | None] = mapped_column(Text)


# What the bot recorded itself: the audit has the same; a lead deletes such an entry, never rewrites it.
RECORDED_BY_THE_BOT = (COMMAND, APPROVAL, SEVERITY)


class Postmortem(Base):
    """Every post-mortem written, as posted: the CLI can write the same file again without Slack."""

    __tablename__ = "incident_postmortems"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(64))
    markdown: Mapped[str] = mapped_column(Text)
    file_id: Mapped[str | None] = mapped_column(String(32))


class IncidentAction(Base):
    """A follow-up of an incident with one owner and a due time (/incident action, /actions). Closing it and its daily
    reminder are each one conditional UPDATE (`done_at IS NULL`; `reminded_on` not today), so of two clicks or two
    replicas one acts."""

    __tablename__ = "incident_actions"
    __table_args__ = (Index("ix_incident_actions_open_due", "done_at", "due_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    text: Mapped[str] = mapped_column(Text)  # as typed (Slack mrkdwn), shown escaped
    owner: Mapped[str] = mapped_column(String(64))  # a Slack user id
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    done_by: Mapped[str | None] = mapped_column(String(64))
    reminded_on: Mapped[date | None] = mapped_column(Date)  # the local date of the last reminder: one a day
