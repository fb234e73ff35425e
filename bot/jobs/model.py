"""The rows behind a job and the one-change lock."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.frame.registry import Invocation
from bot.store.engine import Base, UTCDateTime

# A job's states. Every change between them is one conditional UPDATE (see queue.py).
QUEUED = "queued"  # waiting for a runner thread
RUNNING = "running"  # held by one runner (holder: its bot_runners id), whose heartbeat keeps the job alive
PENDING = "pending_approval"  # waiting for a second person
WAITING = "waiting"  # approved, waiting for the stack's lock (waits_on) that another change holds; held by nobody
FINAL = ("succeeded", "failed", "refused", "denied", "cancelled", "expired", "interrupted", "dropped")


class Job(Base):
    __tablename__ = "bot_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Slack's trigger_id (or the click's): a redelivered request is the same job, not a second one.
    dedupe_key: Mapped[str | None] = mapped_column(String(128), unique=True)
    state: Mapped[str] = mapped_column(String(24), index=True)
    source: Mapped[str] = mapped_column(String(16))
    requester: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    arguments: Mapped[dict | None] = mapped_column(JSON)  # validated; set once the job passed its checks
    response_url: Mapped[str | None] = mapped_column(Text)
    break_glass: Mapped[str | None] = mapped_column(Text)  # the reason, when an admin ran it without approval
    # The approval rule it was asked under, resolved then (bot/approvals/policy.py): a later stack-file edit does
    # not change a waiting request. None on older rows: one approver with the approver role.
    policy: Mapped[dict | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)  # --reason "TEXT": why it is asked (a ticket)
    approver: Mapped[str | None] = mapped_column(String(64))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    message_channel: Mapped[str | None] = mapped_column(String(64))
    message_ts: Mapped[str | None] = mapped_column(String(32))
    holder: Mapped[str | None] = mapped_column(String(160))  # the runner (bot_runners.id) that runs it
    # The stack whose lock an approved request found held and waited for: it is checked again when it runs.
    waits_on: Mapped[str | None] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    result: Mapped[str | None] = mapped_column(Text)
    error_id: Mapped[str | None] = mapped_column(String(16))
    # The follow-up of a request nobody decides (bot/approvals/followup.py): each set once, by the sweep that sends it.
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def invocation(self) -> Invocation:
        return Invocation(self.requester, self.command, self.text, self.channel_id, self.source)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        return f"request #{self.id}"


class RunnerRow(Base):
    """A process that runs jobs (a runner process, or a console running its own): one heartbeat for all its jobs.
    Its jobs are alive while it beats; once it has been silent for a lease they are interrupted."""

    __tablename__ = "bot_runners"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)  # host~pid namespace/pid/token (queue.new_holder)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ChangeLock(Base):
    """One row per operated stack while a change runs: who holds it, for which job, until when."""

    __tablename__ = "change_locks"

    stack: Mapped[str] = mapped_column(String(160), primary_key=True)
    job_id: Mapped[int] = mapped_column(Integer)
    requester: Mapped[str] = mapped_column(String(64))
    command: Mapped[str] = mapped_column(Text)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
