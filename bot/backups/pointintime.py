"""/restore --to TIME: the recovery into a scratch instance while the request is prepared, its preview, the approved
run through a PointInTimeSource given to swap's Restore (bot/backups/flows.py, journalled in restore_runs), the sweep
of scratch instances whose request ended, and the scratch a killed run left.

The scratch instance of a request is kept from its check (the recovery runs before anyone is asked, so a target the
archive cannot reach is refused with PostgreSQL's reason) to the end of its approved run; a request denied, expired
or refused leaves it to the runners' sweep, which removes every scratch instance whose job has ended.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import JSON, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.backups.archive import ArchiveError, archive_for
from bot.backups.recovery import BaseBackup, RecoveryError, Scratch, live_counts, postgres_time, preview
from bot.backups.tools import PgTools
from bot.frame.humanize import elapsed
from bot.jobs.queue import ended_and_unlocked
from bot.stack.compose import StackError
from bot.store.engine import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from bot.jobs.model import Job
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
RECOVERING, READY, FAILED, REMOVED = "recovering", "ready", "failed", "removed"


class PitrScratch(Base):
    """The scratch instance of one /restore --to request, and the steps of its approved run."""

    __tablename__ = "pitr_scratch"

    job_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    stack: Mapped[str] = mapped_column(String(160))
    database: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(64))  # flowstate-pitr-<job>
    target: Mapped[datetime] = mapped_column(UTCDateTime())
    base_backup_id: Mapped[int | None] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))  # recovering, ready, failed, removed
    preview: Mapped[list | None] = mapped_column(JSON)  # the request's lines: row counts live vs at the target
    error: Mapped[str | None] = mapped_column(Text)
    # Unused since the approved run is swap's Restore, journalled in restore_runs; kept to leave migration 0023 as it is.
    step: Mapped[str | None] = mapped_column(String(16))
    old_database: Mapped[str | None] = mapped_column(String(128))
    services: Mapped[list | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def at_label(target: datetime) -> str:
    return f"the state at {target.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


class Scratches:
    """The scratch instances of a stack: made by a request's check, read by its description, removed at its end."""

    def __init__(self, store: "Store", stack: "Stack"):
        self._store, self._stack = store, stack

    def _scratch(self, job_id: int) -> Scratch:
        config = self._stack.config
        if config.pitr is None:
            raise RecoveryError("The stack file has no [pitr] section, so there is no WAL archive to recover from.")
        if self._stack.compose is None or config.database is None or not config.database.compose_service:
            raise RecoveryError("A point-in-time restore needs the [database] section's compose_service: the scratch instance runs in that container.")
        return Scratch(self._stack.compose, config.database, config.pitr, job_id)

    @property
    def database(self) -> str:
        return self._stack.config.database.name

    def row(self, job_id: int) -> PitrScratch | None:
        with self._store.session() as session:
            return session.get(PitrScratch, job_id)

    def _set(self, job_id: int, **values) -> None:
        with self._store.session.begin() as session:
            session.execute(update(PitrScratch).where(PitrScratch.job_id == job_id).values(**values))

    # ---- the base backup to start from ---------------------------------------------------------------

    def base_for(self, target: datetime) -> BaseBackup:
        """The newest base backup that ended before the target, from the archive, or RecoveryError in one sentence
        (before the oldest base backup, past the newest archived change, a gap between them)."""
        self._scratch(0)  # the sections it needs, refused first
        try:
            found = archive_for(self._stack, self._store).check_reachable(target)
        except ArchiveError as error:
            raise RecoveryError(str(error)) from None
        path = Path(found.path)
        if not path.is_file():
            raise RecoveryError(f"The file of base backup #{found.id} is missing ({path.name}).")
        return BaseBackup(path, found.wal_start_file, found.base_ended_at, found.id)

    # ---- the request ------------------------------------------------------------------------------------

    def prepare(self, job_id: int, target: datetime, progress: Progress = lambda _text: None) -> list[str]:
        """Recover into the job's scratch instance (once; a ready one that still runs is kept) and compare it with live:
        the request's lines. RecoveryError (one sentence, PostgreSQL's reason) when the target cannot be reached."""
        scratch = self._scratch(job_id)
        row = self.row(job_id)
        if row is not None and row.state == READY and row.target == target and scratch.running():
            return list(row.preview or [])
        with self._store.session.begin() as session:
            values = dict(stack=self._stack.name, database=self.database, name=scratch.name, target=target, state=RECOVERING,
                          preview=None, error=None, created_at=utcnow(), removed_at=None)
            if row is None:
                session.add(PitrScratch(job_id=job_id, **values))
            else:
                session.execute(update(PitrScratch).where(PitrScratch.job_id == job_id).values(**values))
        started = time.monotonic()
        try:
            base = self.base_for(target)
            self._set(job_id, base_backup_id=base.backup_id)
            scratch.recover(base, target, progress)
            lines = [f"Recovered into scratch instance {scratch.name} from {base.label} and the WAL archive ({elapsed(started)})."]
            lines += preview(live_counts(scratch.tools, self.database), scratch.counts(self.database))
        except StackError as error:
            self._set(job_id, state=FAILED, error=str(error)[:4000], removed_at=utcnow())
            Scratch._quietly(scratch.remove)
            raise RecoveryError(str(error)) from None
        self._set(job_id, state=READY, preview=lines)
        return lines

    def table_at(self, job_id: int, target: datetime, table: str, into: str, live: PgTools,
                 progress: Progress = lambda _text: None) -> None:
        """Undo's FROM a time: one table (schema.table) as it was at the target, copied into the EMPTY database `into` of
        the live server through the job's scratch instance, which is removed at the end (or by the sweep, if killed)."""
        scratch = self._scratch(job_id)
        with self._store.session.begin() as session:
            session.merge(PitrScratch(job_id=job_id, stack=self._stack.name, database=self.database, name=scratch.name, target=target,
                                      state=RECOVERING, created_at=utcnow(), removed_at=None))
        try:
            base = self.base_for(target)
            self._set(job_id, base_backup_id=base.backup_id)
            scratch.recover(base, target, progress)
            progress(f"Copying {table} as it was at {postgres_time(target)[:19]} UTC out of {scratch.name}…")
            scratch.dump_table(self.database, table, into, live)
        finally:
            self.remove(job_id)

    def remove(self, job_id: int) -> None:
        try:
            self._scratch(job_id).remove()
        finally:
            self._set(job_id, state=REMOVED, removed_at=utcnow())

    def sweep(self) -> list[int]:
        """The runners' sweep: every scratch instance whose job has ended (approved and run, denied, expired, failed)."""
        with self._store.session() as session:
            jobs = list(session.scalars(
                select(PitrScratch.job_id).where(PitrScratch.removed_at.is_(None), PitrScratch.stack == self._stack.name,
                                                 *ended_and_unlocked(PitrScratch.job_id))
            ))
        removed = []
        for job_id in jobs:
            try:
                self.remove(job_id)
                removed.append(job_id)
            except Exception:
                log.exception("the scratch instance of job #%s could not be removed", job_id)
        return removed


# ---- the approved run -------------------------------------------------------------------------------------


@dataclass
class PointInTimeSource:
    """A RestoreSource (swap's Restore.run): the app database as it was at a moment, from the job's scratch instance."""

    scratches: Scratches
    job_id: int
    at: datetime
    backup_id: int | None = None

    @property
    def label(self) -> str:
        return at_label(self.at)

    @property
    def target(self) -> str:
        return postgres_time(self.at)

    def prepare(self, progress: Progress) -> str:
        self.scratches.prepare(self.job_id, self.at, progress)  # kept from the request, or recovered again
        return f"Recovered {self.label} into scratch instance flowstate-pitr-{self.job_id}"

    def fill(self, tools: PgTools, database: str, progress: Progress) -> None:
        self.scratches._scratch(self.job_id).dump_into(self.scratches.database, database, tools, progress=progress)

    def close(self) -> None:
        self.scratches.remove(self.job_id)


# ---- after the bot was killed mid-run ------------------------------------------------------------------------


def remove_after_kill(scratches: Scratches, job: "Job") -> bool:
    """What a killed /restore --to leaves beside what swap's recover puts right: its scratch instance, removed here.
    False when this job was no point-in-time restore."""
    if scratches.row(job.id) is None:
        return False
    Scratch._quietly(lambda: scratches.remove(job.id))
    return True
