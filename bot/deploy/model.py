"""The release ledger: every deploy the bot ran, newest last, and what each replaced."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

# What made a release: /restart with no service, /rollback, the commit found checked out at start, and the
# automatic way back after a rollback whose deploy was not healthy.
DEPLOY, ROLLBACK, RECORDED, REVERT = "deploy", "rollback", "recorded-at-start", "revert-after-failed-health"
GOOD, BAD, UNKNOWN = "good", "bad", "unknown"
OUTPUT_LIMIT = 1024 * 1024  # the deploy script's output kept with its release: its last megabyte


class Release(Base):
    __tablename__ = "releases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stack: Mapped[str] = mapped_column(String(160), index=True)
    commit: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(Text)  # what was asked for (/rollback REF), as typed
    kind: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str | None] = mapped_column(String(64))
    approved_by: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(Integer, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None while its deploy runs
    health: Mapped[str] = mapped_column(String(16))  # good, bad, unknown
    replaced_id: Mapped[int | None] = mapped_column(Integer)  # the release that was current before this one
    pid: Mapped[int | None] = mapped_column(Integer)  # the deploy script's process (group), for a bot that restarts mid-deploy
    process: Mapped[str | None] = mapped_column(String(200))  # the script as recovery knows it: pid, start time, PID namespace
    exit_code: Mapped[int | None] = mapped_column(Integer)  # None: not run, killed on timeout, or interrupted
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    output: Mapped[str | None] = mapped_column(Text)  # the deploy script's output (redacted), its last megabyte
    note: Mapped[str | None] = mapped_column(Text)  # what happened, in a sentence (timed out, interrupted, reverted)

    @property
    def short(self) -> str:
        return self.commit[:10]
