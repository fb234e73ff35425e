"""/restore --to TIME: the recovery into a scratch instance while the request is prepared, its preview, the approved
run through a PointInTimeSource, the sweep of scratch instances whose request ended, and what a killed run left.

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

import psycopg
from psycopg import sql
from sqlalchemy import JSON, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.backups.model import OK, Backup
from bot.backups.recovery import BaseBackup, RecoveryError, Scratch, live_counts, postgres_time, preview, reachable, start_segment_of
from bot.backups.tools import PgTools, tools_for
from bot.frame.faults import reached
from bot.frame.humanize import elapsed
from bot.jobs.queue import ended_and_unlocked
from bot.stack.compose import StackError
from bot.stack.health import gate
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
    step: Mapped[str | None] = mapped_column(String(16))  # the approved run: prepare, fill, stop, swap, start, done, failed
    old_database: Mapped[str | None] = mapped_column(String(128))  # live's data, renamed aside by the swap
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
    # LEAD: at merge this becomes archive's Archive(config.pitr).check_reachable(target) -> Backup (kind "base"), then
    # BaseBackup(Path(b.path), b.wal_start_file, b.base_ended_at, b.id); on this branch a base backup is a Backup row of
    # kind "base" whose file is pg_basebackup's tar (its start segment read from its backup_label).

    def base_for(self, target: datetime) -> BaseBackup:
        self._scratch(0)  # the sections it needs, refused first
        with self._store.session() as session:
            found = session.scalars(
                select(Backup).where(Backup.kind == "base", Backup.state == OK, Backup.database == self.database,
                                     Backup.finished_at < target).order_by(Backup.finished_at.desc()).limit(1)
            ).first()
        if found is None:
            raise RecoveryError(
                f"No base backup of {self.database} ended before {postgres_time(target)[:19]} UTC, so that moment cannot be recovered."
            )
        path = Path(found.path)
        if not path.is_file():
            raise RecoveryError(f"The file of base backup #{found.id} is missing ({path.name}).")
        base = BaseBackup(path, start_segment_of(path), found.finished_at, found.id)
        reachable(self._stack.config.pitr.archive_dir, base, target)
        return base

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
        started = time.monotonic()
        self.scratches.prepare(self.job_id, self.at, progress)  # kept from the request, or recovered again
        return f"Recovered {self.label} into scratch instance flowstate-pitr-{self.job_id} ({elapsed(started)})"

    def fill(self, tools: PgTools, database: str, progress: Progress) -> None:
        self.scratches._scratch(self.job_id).dump_into(self.scratches.database, database, tools, progress=progress)

    def close(self) -> None:
        self.scratches.remove(self.job_id)


# ---- LEAD: the swap below stands in for swap's Restore(...).run(source) until the merge; replace it there. --------


def _admin(stack: "Stack") -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(stack.config.database.dsn, dbname="postgres"), autocommit=True, connect_timeout=10)


def _rename(stack: "Stack", old: str, new: str, end_sessions: bool = False) -> None:
    with _admin(stack) as conn:
        if end_sessions:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (old,))
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


def _exists(stack: "Stack", name: str) -> bool:
    with _admin(stack) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _create_beside(stack: "Stack", live: str, new: str) -> None:
    with _admin(stack) as conn:
        owner, encoding, collate, ctype = conn.execute(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            (live,),
        ).fetchone()
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Identifier(new), sql.Identifier(owner), sql.Literal(encoding), sql.Literal(collate), sql.Literal(ctype)))


def _drop(stack: "Stack", name: str) -> None:
    with _admin(stack) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class SwapRun:
    """Fill a new database beside live from the source, stop the app, swap the two by rename, start, health gate;
    each step journalled in pitr_scratch.step, and each with its way back."""

    def __init__(self, stack: "Stack", scratches: Scratches, services: list[str], fault: Callable[[str], None], job_id: int,
                 progress: Progress):
        self._stack, self._scratches, self._fault, self._job = stack, scratches, fault, job_id
        self.services, self._progress = list(services), progress
        self.database = stack.config.database.name
        self.new, self.old = f"{self.database}__restore_{job_id}", f"{self.database}__before_{job_id}"
        self.lines: list[str] = []

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self._progress(line)

    def _step(self, step: str, **values) -> None:
        try:
            self._scratches._set(self._job, step=step, **values)
        except Exception:
            log.warning("the journal of restore #%s could not be written (step %s)", self._job, step)

    def run(self, source: PointInTimeSource) -> bool:
        try:
            return self._run(source)
        except Exception:
            self._say("🔴 The restore stopped on an unexpected error (the details are in the bot's log).")
            self._step(FAILED)
            raise
        finally:
            Scratch._quietly(source.close)

    def _run(self, source: PointInTimeSource) -> bool:
        started = time.monotonic()
        self._step("prepare", services=self.services)
        try:
            states = {state.service: state.ok for state in self._stack.compose.states()}
            before = {service: states.get(service, False) for service in self.services}
            self._say(f"🟢 1. {source.prepare(self._progress)}")
        except StackError as error:
            self._say(f"🔴 1. {error}")
            self._say("Nothing was stopped and the database was not touched.")
            self._step(FAILED)
            return False
        started = time.monotonic()
        self._step("fill")
        try:
            _create_beside(self._stack, self.database, self.new)
            source.fill(tools_for(self._stack), self.new, self._progress)
        except (StackError, psycopg.Error) as error:
            Scratch._quietly(lambda: _drop(self._stack, self.new))
            self._say(f"🔴 2. Filling {self.new} failed: {str(error).splitlines()[0] if str(error) else error}")
            self._say("Nothing was stopped and the database was not touched.")
            self._step(FAILED)
            return False
        self._say(f"🟢 2. Restored {source.label} into {self.new} beside live, the app still running ({elapsed(started)})")
        reached(self._fault, "restore:after_fill")

        started = time.monotonic()
        self._step("stop")
        try:
            self._stack.compose.stop(self.services)
        except StackError as error:
            self._say(f"🔴 3. Stopping {', '.join(self.services)} failed: {error}")
            self._start(before)
            _drop(self._stack, self.new)
            self._step(FAILED)
            return False
        reached(self._fault, "restore:after_stop")
        self._step("swap", old_database=self.old)
        try:
            _rename(self._stack, self.database, self.old, end_sessions=True)
            try:
                _rename(self._stack, self.new, self.database)
            except psycopg.Error:
                _rename(self._stack, self.old, self.database)
                raise
        except psycopg.Error as error:
            self._say(f"🔴 3. The swap failed, and {self.database} is as it was: {str(error).splitlines()[0]}")
            self._start(before)
            Scratch._quietly(lambda: _drop(self._stack, self.new))
            self._step(FAILED)
            return False
        self._say(f"🟢 3. Swapped {self.database} for {self.new} by rename with {', '.join(self.services)} stopped ({elapsed(started)})")
        reached(self._fault, "restore:after_swap")

        self._step("start")
        if not self._start(before):
            self._say(f"The services are not healthy on the restored data; putting {self.database} back.")
            self._stack.compose.stop(self.services)
            _rename(self._stack, self.database, self.new, end_sessions=True)
            _rename(self._stack, self.old, self.database)
            self._start(before)
            self._step(FAILED)
            return False
        self._step("done")
        self._say(f"5. {self.database} now holds {source.label}; the data it replaced is kept as database {self.old}.")
        return True

    def _start(self, before: dict[str, bool]) -> bool:
        started = time.monotonic()
        try:
            self._stack.compose.start(self.services)
            outcome = gate(self._stack, self._progress, excused=[s for s in self.services if not before.get(s)])
        except StackError as error:
            self._say(f"🔴 4. Starting {', '.join(self.services)} failed: {error}")
            return False
        if not outcome.ok:
            self._say(f"🔴 4. {outcome.line.removeprefix('🔴 ')}")
            return False
        self._say(f"🟢 4. Started {', '.join(self.services)}; healthy again ({elapsed(started)})")
        return True


def recover(stack: "Stack", scratches: Scratches, job: "Job") -> str | None:
    """What a killed /restore --to left (None: this job was no point-in-time restore): live put back by name if the
    swap was cut in half, the services started, the scratch instance removed."""
    row = scratches.row(job.id)
    if row is None:
        return None
    database, new, old = row.database, f"{row.database}__restore_{job.id}", f"{row.database}__before_{job.id}"
    services = list(row.services or [])
    try:
        if not _exists(stack, database) and _exists(stack, old):  # killed between the two renames
            _rename(stack, old, database)
            data = f"The swap was cut in half; {database} is back as it was."
        elif row.step in ("swap", "start", "done") and _exists(stack, old):
            data = f"{database} holds {at_label(row.target)}; the data it replaced is kept as database {old}."
        else:
            data = f"The database {database} was not touched."
        if _exists(stack, new):
            _drop(stack, new)
    except (psycopg.Error, StackError) as error:
        data = f"What {database} holds could not be checked: {str(error).splitlines()[0]}"
    Scratch._quietly(lambda: scratches.remove(job.id))
    try:
        if services:
            stack.compose.start(services)
        said = gate(stack, lambda _text: None).line.rstrip(".")
    except StackError as error:
        said = f"starting {', '.join(services)} failed: {error}; /restart {' '.join(services)} starts them"
    scratches._set(job.id, step="interrupted")
    return f"{data} Services: {said}."
