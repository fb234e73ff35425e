"""The restore that loses nothing and keeps the app down for seconds: verify, fill a new database beside live while
the app keeps running, stop, swap the two by rename, start; on failure rename back.

A swap restore: (1) the source is verified (a backup: size, SHA-256, pg_restore --list); (2) `<db>__restore_<job>`
is created like live (owner, encoding, locale, settings, grants: bot/backups/swap.py) and filled, the app running on
live all the while; (3) the app services stop; (4) the sessions left on live end and both renames run in one
transaction: live becomes `<db>__before_<job>`, the kept copy that stands in for a safety backup, and the new one
live; (5) the services start and must be healthy, or the names are swapped back; (6) the report. The kept copy is
dropped by the runners' sweep once the backups' retention is past (FLOWSTATE_BACKUP_KEEP_DAYS); /backups lists it.

When a swap cannot be made (bot/backups/swap.py says why: a session that will not end, a subscription, an extension
bound to the database, a user that may not create databases...) a backup is restored in place, as before swaps
existed, and the reason is said: a safety backup, stop, pg_restore --clean in one transaction, start.

Each step is written to the restore's journal row before it begins, so that a bot killed at any step knows on its
next start what it left behind (`recover`). The journal never stands in the way of the work that brings the app back:
a write the bot's own database refuses (locked, unreachable) is kept and written with the next one, and once the
services were stopped they are started again whatever fails.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from bot.backups.service import RESTORE_OPTIONS, Backups, Progress, _quiet
from bot.backups.model import Backup, RestoreRun
from bot.backups.swap import Databases, SwapError, names, no_room
from bot.backups.tools import PgTools, Staged, last_lines, wait_for_exec
from bot.backups.undo import sweep_scratch as sweep_undo_scratch  # noqa: F401 (the runners' sweep takes the backups' parts from here)
from bot.stack.compose import StackError
from bot.frame.faults import reached
from bot.stack.health import gate
from bot.frame.humanize import elapsed, size as human_size
from bot.jobs.queue import ended_and_unlocked
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.jobs.model import Job
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

RECOVERY_WAIT_SECONDS = 3600.0  # how long a restarted bot waits for a restore it left running in the container
FINAL_JOURNAL_SECONDS = 60.0  # how long the last journal write is retried; after that the runners' sweep finishes the row
SWAP, IN_PLACE = "swap", "in_place"


class RestoreSource(Protocol):
    """What a restore brings back: a backup (BackupSource) or the state at a point in time."""

    label: str  # how messages name it: "backup #12", "the state at 2026-12-05 14:03:05 UTC"
    backup_id: int | None  # the journal's backup_id (None for a point in time)
    target: str | None  # the journal's target text for a point in time

    def prepare(self, progress: Progress) -> str:
        """Step 1 (verify); returns its line. StackError: nothing was stopped."""

    def settle(self, progress: Progress) -> bool:
        """Wait for a copy into the new database that runs in the background (while the request waited); True when a
        database under the new name may be that copy."""

    def take(self, progress: Progress) -> float | None:
        """Take that copy over: the seconds it took when it is filled, None when the run must fill the new database."""

    def fill(self, tools: PgTools, database: str, progress: Progress) -> None:
        """Fill the EMPTY database `database` on the live server; StackError on failure."""

    def close(self) -> None:
        """Always called at the end (unstage a file, stop a scratch instance)."""


class BackupSource:
    """A dump backup of the catalogue, checked once and restored from the very bytes that were checked. It can also
    replace live in place (`staged`), which is how a restore goes when a swap cannot be made."""

    target = None

    def __init__(self, backups: Backups, backup: Backup):
        self._backups, self.backup = backups, backup
        self.label, self.backup_id = backup.label, backup.id
        self.staged: Staged | None = None

    def prepare(self, progress: Progress) -> str:
        self.staged, entries = self._backups.check(self.backup, progress)
        return f"Verified {self.label}: size, SHA-256 and pg_restore --list ({entries} entries)"

    def settle(self, progress: Progress) -> bool:
        return False  # a backup is restored by the run itself

    def take(self, progress: Progress) -> float | None:
        return None

    def fill(self, tools: PgTools, database: str, progress: Progress) -> None:
        progress(f"pg_restore of {self.label} into {database}…")
        outcome, _out = tools.run(["pg_restore", *tools.connection(), f"--dbname={database}", *RESTORE_OPTIONS, self.staged.path])
        if outcome.exit_code != 0:
            raise StackError(f"pg_restore of {self.label} into {database} failed: {last_lines(outcome.stderr)}")

    def close(self) -> None:
        if self.staged is not None:
            self._backups.tools.unstage(self.staged)
            self.staged = None


class Restore:
    def __init__(self, backups: Backups, stack: "Stack", store: "Store", services: list[str], fault: Callable[[str], None],
                 job_id: int, requested_by: str, progress: Progress = _quiet):
        if stack.compose is None:
            raise StackError("The stack file names no Compose project, so /restore cannot stop the app services.")
        self._stack, self._store, self._fault = stack, store, fault
        self._job_id, self._requested_by, self._progress = job_id, requested_by, progress
        self.backups = backups
        self.databases = Databases(stack.config.database.dsn)
        self.services = list(services)  # the app services stopped while it runs (FLOWSTATE_RESTORE_SERVICES)
        self.lines: list[str] = []
        self._unwritten: dict = {}  # journal values the bot's database refused, written with the next ones
        self._stopped = False  # the services are down because of us: whatever happens, they are started again
        self._stopped_once = False

    # ---- the journal ---------------------------------------------------------------------------------

    def _journal(self, **values) -> bool:
        """Write to the journal; when the bot's database refuses, keep the values for the next write and go on."""
        self._unwritten.update(values)
        try:
            with self._store.session.begin() as session:
                session.execute(update(RestoreRun).where(RestoreRun.job_id == self._job_id).values(**self._unwritten))
        except SQLAlchemyError as error:
            log.warning("the journal of restore #%s could not be written now (%s); keeping it for the next write", self._job_id, error)
            return False
        self._unwritten = {}
        return True

    def _journal_final(self, **values) -> None:
        deadline = time.monotonic() + FINAL_JOURNAL_SECONDS
        while not self._journal(**values) and time.monotonic() < deadline:
            time.sleep(1.0)

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self._progress(line)

    @contextmanager
    def _step(self, name: str, announce: str):
        self._journal(step=name)
        self._progress(announce)
        yield

    # ---- the steps -----------------------------------------------------------------------------------

    def run(self, source: RestoreSource) -> bool:
        """True when the source is restored and the services are healthy; self.lines says what happened."""
        with self._store.session.begin() as session:
            session.add(
                RestoreRun(job_id=self._job_id, backup_id=source.backup_id, target=source.target, database=self.backups.database,
                           services=self.services, step="verify", started_at=utcnow())
            )
        ok = False
        try:
            ok = self._run(source)
        except Exception:
            self._say("🔴 The restore stopped on an unexpected error (the details are in the bot's log).")
            if self._stopped:
                self._start({}, "5.")
            raise
        finally:
            self._quietly(source.close)
            self._journal_final(step="done" if ok else "failed", finished_at=utcnow(), outcome="\n".join(self.lines)[:4000])
        return ok

    def _run(self, source: RestoreSource) -> bool:
        started = time.monotonic()
        try:
            with self._step("verify", f"1. Verifying {source.label}…"):
                before = self._health_before()
                line = source.prepare(self._progress)
        except StackError as error:
            self._say(f"🔴 1. {error}")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        self._say(f"🟢 1. {line} ({elapsed(started)})")
        reached(self._fault, "restore:after_verify")
        database = self.backups.database
        new, old = names(database, self._job_id)
        prefilled = source.settle(self._progress)  # before the journal names `new`: a recovery would drop it
        try:
            refused = self.databases.why_not(database, new, old, prefilled=prefilled)
            if not refused and not prefilled:  # a copy made while the request waited has its room already
                refused = no_room(self.backups.tools, self.databases, database)
        except StackError as error:
            refused = str(error).rstrip(".")
        if refused:
            return self._fall_back(source, before, refused)
        self._journal(mode=SWAP, new_database=new, old_database=old)
        return self._swap(source, before, new, old, prefilled)

    def _fall_back(self, source: RestoreSource, before: dict[str, bool], reason: str) -> bool:
        """A swap cannot be made: a backup goes in place, as before swaps existed; other sources cannot."""
        self._journal(mode=IN_PLACE, swap_refused=reason[:2000])
        if not isinstance(source, BackupSource):
            self._say(f"🔴 A swap cannot be made: {reason}; {source.label} can only be restored by a swap.")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        self._say(f"⚠️ A swap cannot be made: {reason}. So {source.label} is restored in place, after a safety backup.")
        return self._in_place(source, before)

    # ---- swap: fill beside live, stop, rename, start ------------------------------------------------

    def _swap(self, source: RestoreSource, before: dict[str, bool], new: str, old: str, prefilled: bool) -> bool:
        database, started = self.backups.database, time.monotonic()
        try:
            self._journal(step="create")  # from here a recovery drops `new`: the run owns what it takes over
            seconds = source.take(self._progress) if prefilled else None
            if seconds is not None and not self.databases.present(new):
                seconds = None
        except StackError as error:
            self._quietly(lambda: self.databases.drop(new))  # what it took over is the run's
            self._say(f"🔴 2. {error}")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        if seconds is not None:
            self._say(f"🟢 2. {new} was filled with {source.label} while the request waited ({seconds:.1f} s), beside {database}")
        elif not self._create_and_fill(source, before, new, prefilled, started):
            return False
        self._journal(filled_at=utcnow())
        reached(self._fault, "restore:after_fill")

        if not self._stop("3."):
            self._start(before, "3.")
            self._quietly(lambda: self.databases.drop(new))
            self._say(f"{database} was not touched; {new} is dropped.")
            return False
        reached(self._fault, "restore:after_stop")

        started = time.monotonic()
        try:
            with self._step("rename", f"4. Ending the sessions on {database} and swapping it with {new}…"):
                self.databases.swap(database, new, old, self._fault)
        except StackError as error:  # nothing was renamed: both renames are one transaction
            self._say(f"🔴 4. The swap could not be made: {str(error).rstrip('.')}. {database} was not touched.")
            healthy = self._start(before, "5.")
            self._quietly(lambda: self.databases.drop(new))
            if healthy and isinstance(error, SwapError) and isinstance(source, BackupSource):
                return self._fall_back(source, before, str(error))
            return False
        self._say(f"🟢 4. Swapped: {database} is {source.label} now, and the data it held is kept as {old} ({elapsed(started)})")
        reached(self._fault, "restore:after_rename")

        self._journal(step="start")
        if not self._start(before, "5."):
            self._say(f"The services are not healthy on the restored data; swapping {database} back.")
            self._swap_back(before, new, old)
            return False
        self._say(
            f"6. {database} now holds {source.label}; the data it replaced is kept as database {old} until the backups' retention "
            f"drops it (/backups lists it)."
        )
        return True

    def _create_and_fill(self, source: RestoreSource, before: dict[str, bool], new: str, leftover: bool, started: float) -> bool:
        """Step 2 made by the run: `new` created like live (whatever a background copy left under the name dropped
        first) and filled from the source, the app running on live all the while."""
        database = self.backups.database
        try:
            with self._step("create", f"2. Creating {new} like {database} and restoring {source.label} into it; the app keeps running…"):
                if leftover:
                    self.databases.drop(new)
                self.databases.create_like(database, new)
        except SwapError as error:
            return self._fall_back(source, before, str(error))
        except StackError as error:
            self._say(f"🔴 2. {error}")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        try:
            with self._step("fill", f"2. Restoring {source.label} into {new}…"):
                source.fill(self.backups.tools, new, self._progress)
        except StackError as error:
            self._quietly(lambda: self.databases.drop(new))
            self._say(f"🔴 2. {error}")
            self._say(f"Nothing was stopped and {database} was not touched; {new} is dropped.")
            return False
        self._say(f"🟢 2. Restored {source.label} into {new}, beside {database}, while the app kept running ({elapsed(started)})")
        return True

    def _swap_back(self, before: dict[str, bool], new: str, old: str) -> None:
        database, started = self.backups.database, time.monotonic()
        if not self._stop("5."):
            self._start(before, "5.")
            self._say(f"🔴 {database} still holds the restored data: the data from before is kept as {old}.")
            return
        try:
            with self._step("back", f"5. Swapping {database} back…"):
                self.databases.swap_back(database, new, old)
        except StackError as error:
            self._say(f"🔴 Swapping back failed: {error}. {database} holds the restored data; the data from before is kept as {old}.")
        else:
            self._say(f"🟢 Swapped back: {database} is as it was before ({elapsed(started)})")
            self._quietly(lambda: self.databases.drop(new))
        self._start(before, "5.")

    # ---- in place: safety backup, stop, pg_restore --clean, start -------------------------------------

    def _in_place(self, source: BackupSource, before: dict[str, bool]) -> bool:
        started = time.monotonic()
        try:
            with self._step("safety", "2. Taking a safety backup of the live database…"):
                safety = self.backups.take(
                    self._requested_by, note=f"safety backup before restoring backup #{source.backup_id}", kind="safety",
                    job_id=self._job_id, progress=self._progress,
                )
        except StackError as error:
            self._say(f"🔴 2. The safety backup failed: {error}")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        self._journal(safety_backup_id=safety.id)
        self._say(f"🟢 2. Safety backup #{safety.id} of the live database ({human_size(safety.size)}) ({elapsed(started)})")
        reached(self._fault, "restore:after_safety")

        if not self._stop("3."):
            self._start(before, "3.")
            self._say("The database was not touched.")
            return False
        reached(self._fault, "restore:after_stop")

        started = time.monotonic()
        with self._step("restore", f"4. Restoring {source.label} into {self.backups.database} in one transaction…"):
            code, errors = self._pg_restore(source.staged)
        if code != 0:
            if code is None:
                self._say(f"🔴 4. The restore's outcome is unknown ({errors}); putting safety backup #{safety.id} back.")
                self._put_back(safety)
            else:
                self._say(
                    f"🔴 4. pg_restore failed and its transaction rolled back, so {self.backups.database} is exactly as it was "
                    f"({elapsed(started)}): {last_lines(errors)}"
                )
            self._start(before, "5.")
            return False
        self._say(f"🟢 4. Restored {source.label} into {self.backups.database} in one transaction ({elapsed(started)})")
        reached(self._fault, "restore:after_restore")

        self._journal(step="start")
        if not self._start(before, "5."):
            self._say(f"The services are not healthy on the restored data; putting safety backup #{safety.id} back.")
            if self._stop("5."):
                self._put_back(safety)
            self._start(before, "5.")
            return False
        backup = source.backup
        self._say(
            f"6. {self.backups.database} now holds {backup.label} (taken {backup.started_at:%Y-%m-%d %H:%M} UTC); "
            f"the data it replaced is in safety backup #{safety.id}."
        )
        return True

    def _health_before(self) -> dict[str, bool]:
        """Each service to stop, and whether it was healthy: only those must be healthy again afterwards."""
        states = {state.service: state.ok for state in self._stack.compose.states()}
        missing = [service for service in self.services if service not in states]
        if missing:
            raise StackError(f"{', '.join(missing)} {'is not a service' if len(missing) == 1 else 'are not services'} of {self._stack.compose.project}.")
        return {service: states[service] for service in self.services}

    def _stop(self, number: str) -> bool:
        started = time.monotonic()
        try:
            with self._step("stop", f"{number} Stopping {', '.join(self.services)}…"):
                self._stopped = True  # even a stop that fails part way may have stopped some
                if not self._stopped_once:
                    self._stopped_once = True
                    self._journal(app_stopped_at=utcnow())
                self._stack.compose.stop(self.services)
        except StackError as error:
            self._say(f"🔴 {number} Stopping {', '.join(self.services)} failed: {error}")
            return False
        self._say(f"🟢 {number} Stopped {', '.join(self.services)} ({elapsed(started)})")
        return True

    def _start(self, before: dict[str, bool], number: str) -> bool:
        """Start the services and wait for each; True when every one that was healthy before is healthy again."""
        started = time.monotonic()
        self._progress(f"{number} Starting {', '.join(self.services)} and waiting until healthy…")
        try:
            self._stack.compose.start(self.services)
            self._stopped = False
            # The one health gate; a service that was not healthy before the restore need not be healthy after it.
            outcome = gate(self._stack, self._progress, excused=[s for s in self.services if not before.get(s)])
        except StackError as error:
            down = "" if not self._stopped else f"; they are stopped: /restart {' '.join(self.services)} starts them"
            self._say(f"🔴 {number} Starting {', '.join(self.services)} failed: {error}{down}")
            return False
        if not outcome.ok:
            self._say(f"🔴 {number} {outcome.line.removeprefix('🔴 ')}")
            return False
        self._journal(app_back_at=utcnow())
        self._say(f"🟢 {number} Started {', '.join(self.services)}; healthy again ({elapsed(started)})")
        return True

    def _pg_restore(self, staged: Staged) -> tuple[int | None, str]:
        """Replace the live database's objects with the dump's in one transaction: all of it or nothing."""
        tools = self.backups.tools
        argv = ["pg_restore", *tools.connection(), f"--dbname={self.backups.database}", "--clean", "--if-exists", *RESTORE_OPTIONS, staged.path]
        exec_ids: list[str] = []

        def started(exec_id: str) -> None:
            exec_ids.append(exec_id)
            self._journal(exec_id=exec_id)

        try:
            outcome = tools.stream(argv, lambda _chunk: None, on_start=started)
            return outcome.exit_code, outcome.stderr
        except StackError as error:  # the engine stopped answering; the restore may still be running
            code = wait_for_exec(tools, exec_ids[0], RECOVERY_WAIT_SECONDS) if exec_ids else None
            return code, str(error)

    def _put_back(self, safety: Backup) -> None:
        started = time.monotonic()
        try:
            staged, _entries = self.backups.check(self.backups.get(safety.id))
            try:
                code, errors = self._pg_restore(staged)
            finally:
                self._quietly(lambda: self.backups.tools.unstage(staged))
        except StackError as error:
            code, errors = -1, str(error)
        if code == 0:
            self._say(f"🟢 Safety backup #{safety.id} put back: {self.backups.database} is as it was before ({elapsed(started)})")
        else:
            self._say(
                f"🔴 Putting safety backup #{safety.id} back failed too ({last_lines(errors)}): restore it by hand with "
                f"/restore {safety.id}."
            )

    @staticmethod
    def _quietly(action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            log.exception("cleaning up after a restore failed")


# ---- the kept copies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeptCopy:
    name: str
    size: int
    job_id: int
    restored: str  # what the restore brought back: "backup #12", a point in time
    kept_since: datetime
    dropped_after: datetime


def kept_copies(backups: Backups, store: "Store", keep_days: float) -> list[KeptCopy]:
    """The kept copies of live on the server that a swap restore left, newest first, with when the duty drops them."""
    on_server = dict(Databases(backups.dsn).kept_copies(backups.database))
    with store.session() as session:
        runs = list(session.scalars(
            select(RestoreRun).where(RestoreRun.mode == SWAP, RestoreRun.database == backups.database,
                                     RestoreRun.old_database.in_(list(on_server)), RestoreRun.dropped_at.is_(None))
            .order_by(RestoreRun.job_id.desc())
        ))
    return [
        KeptCopy(run.old_database, on_server[run.old_database], run.job_id, _restored(run), run.finished_at or run.started_at,
                 (run.finished_at or run.started_at) + timedelta(days=keep_days))
        for run in runs
    ]


def drop_expired_copies(backups: Backups | None, store: "Store", keep_days: float, now: datetime | None = None) -> list[str]:
    """The runners' sweep: a kept copy whose restore ended more than the backups' retention (days) ago is dropped, once
    (the replica whose UPDATE wins drops it; a drop that fails is tried again by the next sweep)."""
    if backups is None:
        return []
    cutoff = (now or utcnow()) - timedelta(days=keep_days)
    with store.session() as session:
        due = list(session.scalars(
            select(RestoreRun).where(RestoreRun.mode == SWAP, RestoreRun.database == backups.database, RestoreRun.dropped_at.is_(None),
                                     RestoreRun.finished_at.is_not(None), RestoreRun.finished_at < cutoff)
        ))
    dropped = []
    for run in due:
        with store.session.begin() as session:
            won = session.execute(
                update(RestoreRun).where(RestoreRun.job_id == run.job_id, RestoreRun.dropped_at.is_(None)).values(dropped_at=utcnow())
            ).rowcount
        if not won:
            continue
        try:
            Databases(backups.dsn).drop(run.old_database)
        except Exception:
            with store.session.begin() as session:
                session.execute(update(RestoreRun).where(RestoreRun.job_id == run.job_id).values(dropped_at=None))
            raise
        log.info("kept copy %s of restore #%s dropped after the backups' retention", run.old_database, run.job_id)
        dropped.append(run.old_database)
    return dropped


def _restored(run: RestoreRun) -> str:
    return f"backup #{run.backup_id}" if run.backup_id is not None else (run.target or "a point in time")


# ---- after the bot was killed mid-restore ---------------------------------------------------------------


def finish_abandoned(store: "Store") -> None:
    """The runners' sweep: a journal its job left open (its writes refused to the end, its recovery failed) is closed."""
    with store.session.begin() as session:
        session.execute(
            update(RestoreRun)
            .where(RestoreRun.finished_at.is_(None), *ended_and_unlocked(RestoreRun.job_id))
            .values(step="interrupted", finished_at=utcnow(),
                    outcome="Closed by the bot: its request had ended without finishing this journal; /health shows the services.")
        )


def recover(backups: Backups, stack: "Stack", store: "Store", job: "Job") -> str:
    """What an interrupted /restore left: wait for a restore still running, put the names right, start the services,
    say what the data is."""
    with store.session() as session:
        run = session.get(RestoreRun, job.id)
    if run is None:
        backups.abandon(job.id)
        return "It had not started: nothing was stopped and the database was not touched."
    swap_back = None
    if run.mode == SWAP and run.step not in ("done", "failed"):
        try:  # first: the live name may be missing, and abandon() connects to it
            data, swap_back = _recover_swap(Databases(backups.dsn), run)
        except StackError as error:
            data = f"The names of {run.database} and its copies could not be checked ({error}); check them by hand."
        backups.abandon(job.id)
    else:
        backups.abandon(job.id)
        data = _recover_in_place(backups, run)
        if run.mode == SWAP:  # ended (an unexpected error): an unfinished new database beside live goes
            try:
                if {run.database, run.new_database} <= Databases(backups.dsn).present(run.database, run.new_database):
                    Databases(backups.dsn).drop(run.new_database)
            except StackError as error:
                data += f" Whether {run.new_database} is left could not be checked: {error}"
    try:
        stack.compose.start(run.services)
        outcome = gate(stack, lambda _text: None)
        if not outcome.ok and swap_back is not None:
            stack.compose.stop(run.services)
            data += " " + swap_back()
            stack.compose.start(run.services)
            outcome = gate(stack, lambda _text: None)
        services = outcome.line.rstrip(".")
    except StackError as error:
        services = f"starting {', '.join(run.services)} failed: {error}; /restart {' '.join(run.services)} starts them"
    text = f"{data} Services: {services}."
    with store.session.begin() as session:
        session.execute(update(RestoreRun).where(RestoreRun.job_id == job.id).values(step="interrupted", finished_at=utcnow(), outcome=text))
    return text


def _recover_swap(databases: Databases, run: RestoreRun) -> tuple[str, Callable[[], str] | None]:
    """A swap cut off: which names exist says how far it got (both renames are one transaction). Unswapped: live is as
    it was and the new database is dropped. Swapped: the swap is finished (the services start on the restored data,
    which was complete before any rename) and renamed back if they are not healthy on it."""
    live, new, old, restored = run.database, run.new_database, run.old_database, _restored(run)
    found = databases.names(live, new, old)

    def back() -> str:
        try:
            databases.swap_back(live, new, old)
        except StackError as error:
            return f"They were not healthy on it, and swapping back failed ({error}): the data from before is kept as {old}."
        databases.drop(new)
        return f"They were not healthy on it, so {live} was swapped back: it is as it was before the restore."

    if run.step in ("verify", "create", "fill", "stop") or (found.live and found.new and not found.old):
        if found.new:
            databases.drop(new)
        when = "before the swap" if run.step != "rename" else "before the swap committed (both renames are one transaction)"
        return f"It was cut off {when}: {live} was not touched; the unfinished {new} is dropped.", None
    if run.step == "back":
        if found.live and found.old and not found.new:
            databases.swap_back(live, new, old)
        if databases.names(live, new, old).new:
            databases.drop(new)
        return f"It was swapping back: {live} is as it was before the restore.", None
    if found.live and found.old and not found.new:
        return f"The swap had been made: {live} holds {restored}; the data it replaced is kept as {old}.", back
    if not found.live and found.old and found.new:
        databases.finish_half_swap(live, new)
        return (f"{live} was missing ({old} and {new} were there): the swap was finished, because {new} was complete before "
                f"any rename; {live} holds {restored} and the data it replaced is kept as {old}."), back
    present = ", ".join(name for name, there in ((live, found.live), (new, found.new), (old, found.old)) if there) or "none of them"
    return f"The databases are not as the journal expects (present: {present}); nothing was renamed: check them by hand.", None


def _recover_in_place(backups: Backups, run: RestoreRun) -> str:
    safety = f" (safety backup #{run.safety_backup_id} holds the data from before)" if run.safety_backup_id else ""
    if run.step in ("verify", "safety", "stop"):
        return f"The database {run.database} was not touched."
    if run.step == "restore":
        code = wait_for_exec(backups.tools, run.exec_id, RECOVERY_WAIT_SECONDS) if run.exec_id else None
        if code == 0:
            return f"The restore had completed: {run.database} holds backup #{run.backup_id}{safety}."
        if code is None:
            return (
                f"Whether the restore of backup #{run.backup_id} committed is unknown; it ran in one transaction, so "
                f"{run.database} holds either all of it or none of it{safety}."
            )
        return f"The restore failed and its transaction rolled back: {run.database} is as it was{safety}."
    if run.step == "failed":
        said = (run.outcome or "").splitlines()
        return f"It had already failed and said: {said[-1] if said else 'nothing'}"
    return f"{run.database} holds backup #{run.backup_id}{safety}."
