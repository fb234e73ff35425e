"""The rows behind the duties: one per duty and slot (its unique key is the exactly-once), and the watch's state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

# A run's states: queued as a job, running in a runner, then one of the final ones. `missed`: its slot
# passed while no replica was up and is past the grace window; it never runs.
QUEUED, RUNNING, SUCCEEDED, FAILED, MISSED, INTERRUPTED = "queued", "running", "succeeded", "failed", "missed", "interrupted"


class DutyRun(Base):
    __tablename__ = "duty_runs"
    __table_args__ = (UniqueConstraint("duty", "slot", name="uq_duty_runs_duty_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    duty: Mapped[str] = mapped_column(String(32))
    slot: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16), index=True)
    job_id: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str] = mapped_column(String(160))  # the process whose INSERT won the slot
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message: Mapped[str | None] = mapped_column(Text)  # the result in one line (what /schedule shows)


class WatchState(Base):
    """One watched key (a threshold of /stats or a check of /health): its streaks, whether it fires, its mute."""

    __tablename__ = "watch_state"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    bad_count: Mapped[int] = mapped_column(Integer)  # consecutive bad checks
    good_count: Mapped[int] = mapped_column(Integer)  # consecutive good checks
    firing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    alerted: Mapped[bool] = mapped_column(Boolean)  # the alert of this firing was posted (so its recovery will be)
    alert_ts: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)  # what the last check saw
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    muted_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    muted_by: Mapped[str | None] = mapped_column(String(64))


class Freeze(Base):
    """One change freeze: typed (/freeze) or one occurrence of a stack file window (its `key`, unique, is the
    exactly-once of its row). Its start and its end are each handled once: by the replica whose conditional UPDATE
    set `started_at` (the ops channel told, a backup queued) or `ended_at` (the summary posted)."""

    __tablename__ = "freezes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str | None] = mapped_column(String(160), unique=True)  # window:START:END; None for a typed one
    kind: Mapped[str] = mapped_column(String(16))  # typed | window
    reason: Mapped[str] = mapped_column(Text)
    frozen_by: Mapped[str] = mapped_column(String(64))  # a user id, or the scheduler for a window
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    backup_job_id: Mapped[int | None] = mapped_column(Integer)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_by: Mapped[str | None] = mapped_column(String(64))  # who ended it early, or the scheduler at its time


class FreezeAlert(Base):
    """A watch alert that fired during a freeze: not posted then, summarised when the freeze ends."""

    __tablename__ = "freeze_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    freeze_id: Mapped[int] = mapped_column(Integer, index=True)
    key: Mapped[str] = mapped_column(String(160))
    detail: Mapped[str | None] = mapped_column(Text)
    fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
