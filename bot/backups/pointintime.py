"""/restore --to TIME: the recovery into a scratch instance while the request is prepared, its preview, the new
database filled from it in the background while the request waits, the approved run through a PointInTimeSource given
to swap's Restore (bot/backups/flows.py, journalled in restore_runs), the sweep of scratch instances and background
copies whose request ended, and the scratch a killed run left.

The scratch instance of a request is kept from its check (the recovery runs before anyone is asked, so a target the
archive cannot reach is refused with PostgreSQL's reason) to the end of its approved run; a request denied, expired
or refused leaves it to the runners' sweep, which removes every scratch instance whose job has ended.

The background copy: while the request waits, a runner claims it (`fill` = filling, `fill_holder` = its bot_runners
id), creates `<db>__restore_<job>` like live and fills it from the scratch instance (the logical copy that is most of
the run's time), on a thread of its own. The approved run waits for a copy a live runner is making and takes it over
(`fill` = taken: from then on restore_runs' journal owns the name), or makes the copy itself when there is none. The
sweep drops a copy whose runner stopped beating (killed mid-copy) or whose request ended, never one a live runner is
making; a copy that finishes after its request ended drops itself.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import JSON, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from bot.backups.archive import ArchiveError, archive_for
from bot.backups.recovery import BaseBackup, RecoveryError, Scratch, live_counts, postgres_time, preview
from bot.backups.swap import Databases, SwapError, names, no_room
from bot.backups.tools import PgTools, tools_for
from bot.frame.faults import reached
from bot.frame.humanize import elapsed
from bot.jobs.model import FINAL, PENDING, Job, RunnerRow
from bot.jobs.queue import ended_and_unlocked, holder_is_dead
from bot.stack.compose import StackError
from bot.store.engine import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from bot.jobs.heartbeat import RunnerHeartbeat
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
RECOVERING, READY, FAILED, REMOVED = "recovering", "ready", "failed", "removed"
# Where the background copy into <db>__restore_<job> stands (`fill`); FILLING and DROPPING are held by a runner.
FILLING, DROPPING, FILLED, DROPPED, TAKEN = "filling", "dropping", "filled", "dropped", "taken"
FINAL_WRITE_SECONDS = 60.0  # how long a background copy retries the write that ends it (the store away)
WAIT_SAID_SECONDS = 10.0  # how often the approved run says it still waits for the background copy


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
    # The background copy into <db>__restore_<job>: filling, dropping, filled, failed, dropped, taken (by the run)
    fill: Mapped[str | None] = mapped_column(String(16))
    fill_holder: Mapped[str | None] = mapped_column(String(160))  # the runner filling or dropping it
    fill_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fill_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    fill_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def at_label(target: datetime) -> str:
    return f"the state at {target.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


class Scratches:
    """The scratch instances of a stack: made by a request's check, read by its description, removed at its end."""

    def __init__(self, store: "Store", stack: "Stack", lease_seconds: float, heartbeat: "RunnerHeartbeat | None" = None):
        """`lease_seconds`: how long a runner may be silent before its background copy counts as abandoned;
        `heartbeat`: this process as a runner (the runtime's), which claims background copies and drops abandoned ones."""
        self._store, self._stack = store, stack
        self._lease, self._heartbeat = timedelta(seconds=lease_seconds), heartbeat
        self._filling: threading.Thread | None = None  # this process's background copy

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
        """The runners' sweep: the background copies a stopped runner or an ended request left, then every scratch
        instance whose job has ended (approved and run, denied, expired, failed) and that no live runner copies from."""
        self._drop_abandoned_fills()
        with self._store.session() as session:
            rows = list(session.scalars(
                select(PitrScratch).where(PitrScratch.removed_at.is_(None), PitrScratch.stack == self._stack.name,
                                          *ended_and_unlocked(PitrScratch.job_id))
            ))
        removed = []
        for row in rows:
            if self._busy(row):
                continue
            try:
                self.remove(row.job_id)
                removed.append(row.job_id)
            except Exception:
                log.exception("the scratch instance of job #%s could not be removed", row.job_id)
        return removed

    # ---- the background copy into <db>__restore_<job> ----------------------------------------------------

    def _alive(self, holder: str | None) -> bool:
        """Whether the runner still beats: its heartbeat within a lease, and (on this host) its process there."""
        if not holder or holder_is_dead(holder):
            return False
        with self._store.session() as session:
            return session.scalar(select(RunnerRow.id).where(RunnerRow.id == holder,
                                                             RunnerRow.heartbeat_at >= utcnow() - self._lease)) is not None

    def _busy(self, row: PitrScratch) -> bool:
        """A live runner is filling or dropping its copy."""
        return row.fill in (FILLING, DROPPING) and self._alive(row.fill_holder)

    def _set_fill(self, job_id: int, where: list, **values) -> bool:
        with self._store.session.begin() as session:
            return session.execute(update(PitrScratch).where(PitrScratch.job_id == job_id, *where).values(**values)).rowcount == 1

    def _end_fill(self, job_id: int, where: list, **values) -> bool:
        """The write that ends a background copy, tried again while the store refuses (a copy left FILLING by a live
        runner would keep its approved run waiting)."""
        deadline = time.monotonic() + FINAL_WRITE_SECONDS
        while True:
            try:
                return self._set_fill(job_id, where, fill_finished_at=utcnow(), **values)
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                log.warning("the end of the background copy of job #%s could not be written now; trying again", job_id)
                time.sleep(1.0)

    def prefill_in_background(self, fault: Callable[[str], None]) -> int | None:
        """The runners' sweep: claim the background copy of one request waiting for approval whose scratch instance is
        ready, and make it on a thread of its own (one at a time per process); the job claimed, or None."""
        if self._heartbeat is None or (self._filling is not None and self._filling.is_alive()):
            return None
        pending = select(Job.id).where(Job.state == PENDING)
        waiting = [PitrScratch.stack == self._stack.name, PitrScratch.state == READY, PitrScratch.removed_at.is_(None),
                   PitrScratch.fill.is_(None)]
        with self._store.session() as session:
            job_id = session.scalar(select(PitrScratch.job_id).where(*waiting, PitrScratch.job_id.in_(pending))
                                    .order_by(PitrScratch.job_id).limit(1))
        if job_id is None:
            return None
        self._heartbeat.start()  # the claim is alive while this process beats
        holder = self._heartbeat.id
        # FOR SHARE (PostgreSQL): an approval committing meanwhile waits for the claim, or the claim sees it
        claimed = [*waiting, PitrScratch.job_id.in_(pending.with_for_update(read=True))]
        if not self._set_fill(job_id, claimed, fill=FILLING, fill_holder=holder, fill_started_at=utcnow(), fill_finished_at=None,
                              fill_error=None):
            return None  # another runner's
        self._filling = threading.Thread(target=self._prefill, args=(job_id, holder, fault), name=f"prefill-{job_id}", daemon=True)
        self._filling.start()
        return job_id

    def wait_for_prefill(self) -> None:
        """Until this process's background copy has ended (tests and benches)."""
        if self._filling is not None:
            self._filling.join()

    def _prefill(self, job_id: int, holder: str, fault: Callable[[str], None]) -> None:
        row = self.row(job_id)
        new, old = names(row.database, job_id)
        mine = [PitrScratch.fill == FILLING, PitrScratch.fill_holder == holder]
        databases, created = Databases(self._stack.config.database.dsn), False
        try:
            refused = databases.why_not(row.database, new, old) or no_room(tools_for(self._stack), databases, row.database)
            if refused:
                raise SwapError(refused)
            databases.create_like(row.database, new)
            created = True
            reached(fault, "prefill:after_create")
            self._scratch(job_id).dump_into(row.database, new, tools_for(self._stack))
            reached(fault, "prefill:after_fill")
            ended = PitrScratch.job_id.in_(select(Job.id).where(Job.state.in_(FINAL)))
            if self._end_fill(job_id, [*mine, ~ended], fill=FILLED):
                log.info("the background copy into %s for request #%s is filled", new, job_id)
                return
            databases.drop(new)  # its request ended while it copied: nobody will take it
            self._end_fill(job_id, mine, fill=DROPPED, fill_error="its request ended while it was copied")
        except Exception as error:
            log.warning("the background copy into %s for request #%s failed: %s", new, job_id, error)
            if created:
                Scratch._quietly(lambda: databases.drop(new))
            reason = str(error) if isinstance(error, StackError) else "an unexpected error (the details are in the bot's log)"
            self._end_fill(job_id, mine, fill=FAILED, fill_error=reason[:4000])

    def _drop_abandoned_fills(self) -> None:
        """A copy whose runner stopped beating (filling or dropping it), or a finished one whose request ended: dropped,
        once (the sweep whose conditional UPDATE wins drops it, as a live runner the approved run waits for)."""
        if self._heartbeat is None:
            return
        ended = select(Job.id).where(Job.state.in_(FINAL))
        with self._store.session() as session:
            rows = list(session.scalars(select(PitrScratch).where(
                PitrScratch.stack == self._stack.name,
                (PitrScratch.fill.in_((FILLING, DROPPING))) | ((PitrScratch.fill == FILLED) & PitrScratch.job_id.in_(ended)))))
        for row in rows:
            if row.fill != FILLED and self._alive(row.fill_holder):
                continue
            self._heartbeat.start()
            me = self._heartbeat.id
            if not self._set_fill(row.job_id, [PitrScratch.fill == row.fill, PitrScratch.fill_holder == row.fill_holder],
                                  fill=DROPPING, fill_holder=me):
                continue
            why = "its request ended" if row.fill == FILLED else "its runner stopped while it was copied"
            try:
                Databases(self._stack.config.database.dsn).drop(names(row.database, row.job_id)[0])
            except Exception:  # left as it was, for the next sweep
                self._set_fill(row.job_id, [PitrScratch.fill == DROPPING, PitrScratch.fill_holder == me], fill=row.fill,
                               fill_holder=row.fill_holder)
                raise
            self._end_fill(row.job_id, [PitrScratch.fill == DROPPING, PitrScratch.fill_holder == me], fill=DROPPED, fill_error=why)
            log.info("the background copy for request #%s is dropped: %s", row.job_id, why)

    # ---- the approved run's side of it ----------------------------------------------------------------------

    def settle(self, job_id: int, progress: Progress) -> PitrScratch | None:
        """Wait while a live runner fills (or drops) this job's background copy, saying so; then its row."""
        started, said = time.monotonic(), 0.0
        while True:
            row = self.row(job_id)
            if row is None or not self._busy(row):
                return row
            if time.monotonic() - said >= WAIT_SAID_SECONDS:
                said = time.monotonic()
                progress(f"2. Waiting for the copy into {names(row.database, job_id)[0]} that runs in the background "
                         f"({elapsed(started)})…")
            time.sleep(0.5)

    def take(self, job_id: int, progress: Progress) -> float | None:
        """The approved run takes the background copy over (from then on its journal owns the name): the seconds the
        copy took when it is filled, None when there is none to use (whatever it left under the name is the run's to
        drop)."""
        while True:
            row = self.settle(job_id, progress)
            if row is None or row.fill is None:
                return None
            if self._set_fill(job_id, [PitrScratch.fill == row.fill, PitrScratch.fill_holder == row.fill_holder], fill=TAKEN):
                if row.fill != FILLED:
                    return None
                return (row.fill_finished_at - row.fill_started_at).total_seconds()
            # a sweep claimed an abandoned copy meanwhile: wait for its drop

    def prefilled(self, job_id: int) -> bool:
        """Whether a database under the job's new name may be its background copy (made, being made or dropped by a
        runner), which a swap takes over instead of refusing."""
        row = self.row(job_id)
        return row is not None and row.fill in (FILLING, DROPPING, FILLED)


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

    def settle(self, progress: Progress) -> bool:
        self.scratches.settle(self.job_id, progress)
        return self.scratches.prefilled(self.job_id)

    def take(self, progress: Progress) -> float | None:
        return self.scratches.take(self.job_id, progress)

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
