"""The catalogue of backups and the journal of restores, in the bot's own database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

# A backup's states: its file is being written; it is complete and checksummed; the dump failed
# (no file is left); retention deleted its file.
TAKING, OK, FAILED, DELETED = "taking", "ok", "failed", "deleted"


class Backup(Base):
    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stack: Mapped[str] = mapped_column(String(160))
    database: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # manual | safety (taken by /restore before it replaces the data)
    requested_by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    path: Mapped[str | None] = mapped_column(Text)
    copy_path: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    server_version: Mapped[str | None] = mapped_column(String(64))
    # Exact row counts of the largest tables, counted in the very snapshot the dump was taken from.
    table_counts: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verified_ok: Mapped[bool | None] = mapped_column(Boolean)
    verification: Mapped[str | None] = mapped_column(Text)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def label(self) -> str:
        return f"backup #{self.id}"


class RestoreRun(Base):
    """One /restore, step by step, so that a bot killed in the middle knows on its next start what it left."""

    __tablename__ = "restore_runs"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backup_id: Mapped[int | None] = mapped_column(Integer)  # None for a point in time (target says which)
    database: Mapped[str] = mapped_column(String(128))
    services: Mapped[list] = mapped_column(JSON)
    # swap: verify, create, fill, stop, rename, start, back (renaming back); in place: verify, safety, stop, restore,
    # start; then done, failed or interrupted
    step: Mapped[str] = mapped_column(String(16))
    safety_backup_id: Mapped[int | None] = mapped_column(Integer)
    exec_id: Mapped[str | None] = mapped_column(String(128))  # the restore's Docker exec, still inspectable after a crash
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[str | None] = mapped_column(String(16))  # swap | in_place
    new_database: Mapped[str | None] = mapped_column(String(128))  # filled beside live: <db>__restore_<job>
    old_database: Mapped[str | None] = mapped_column(String(128))  # live renamed to it, the kept copy: <db>__before_<job>
    target: Mapped[str | None] = mapped_column(Text)  # the point in time, described, for a point-in-time restore
    swap_refused: Mapped[str | None] = mapped_column(Text)  # why the swap could not be made (the restore went in place)
    filled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    app_stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the stop began
    app_back_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the services were healthy again
    dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # the kept copy was dropped after retention
