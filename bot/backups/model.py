"""The catalogue of backups and the journal of restores, in the bot's own database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

# A backup's states: its file is being written; it is complete and checksummed; the dump failed
# (no file is left); retention deleted its file.
TAKING, OK, FAILED, DELETED = "taking", "ok", "failed", "deleted"
# A base backup (point-in-time recovery): a tar of the data directory, restored with the WAL archive after it.
BASE = "base"


class Backup(Base):
    __tablename__ = "backups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stack: Mapped[str] = mapped_column(String(160))
    database: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # manual | safety (taken by /restore before it replaces the data) | base (bot/backups/archive.py)
    kind: Mapped[str] = mapped_column(String(16))
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
    # A base backup's first WAL segment and location, and when the server's backup began and ended: a point in time
    # after its end is reachable from it through every archived segment from wal_start_file on.
    wal_start_file: Mapped[str | None] = mapped_column(String(24))
    wal_start_lsn: Mapped[str | None] = mapped_column(String(32))
    base_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    base_ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

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


class RowRestore(Base):
    """One /restore --table: the rows recovered into a scratch database, what the request showed, and the write-back."""

    __tablename__ = "row_restores"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack: Mapped[str] = mapped_column(String(160))
    database: Mapped[str] = mapped_column(String(128))
    table_name: Mapped[str] = mapped_column(String(160))  # schema.table
    backup_id: Mapped[int | None] = mapped_column(Integer)  # the source: a backup, or (None) the point in time `target`
    target: Mapped[str | None] = mapped_column(Text)
    selection: Mapped[str] = mapped_column(Text)  # the --where expression, or "deleted since TIME"
    scratch: Mapped[str] = mapped_column(String(128))  # <db>__undo_<job> on the live server
    # preparing, prepared, writing (the transaction is open; xid names it), done, failed, interrupted
    step: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int | None] = mapped_column(Integer)  # the rows selected, as the request showed them
    summary: Mapped[list | None] = mapped_column(JSON)  # the request's lines (count, redacted sample)
    xid: Mapped[str | None] = mapped_column(String(32))  # the write-back's transaction on the live server
    written: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    dropped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # when the scratch database was dropped
    outcome: Mapped[str | None] = mapped_column(Text)
