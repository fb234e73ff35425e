"""The restore that loses nothing: verify, safety backup, stop, restore in one transaction, start, report.

Each step is written to the restore's journal row before it begins, so that a bot killed at any step
knows on its next start what it left behind: it waits for a restore still running in the container
(the engine keeps the exec and its exit code), starts the app services and says what the database holds.
The journal never stands in the way of the work that brings the app back: a write the bot's own database
refuses (locked, unreachable) is kept and written with the next one, and once the services were stopped they
are started again whatever fails.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from bot.backups.service import RESTORE_OPTIONS, Backups, Progress, _quiet
from bot.backups.model import Backup, RestoreRun
from bot.backups.tools import Staged, last_lines, wait_for_exec
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


class Restore:
    def __init__(self, backups: Backups, stack: "Stack", store: "Store", services: list[str], fault: Callable[[str], None],
                 job_id: int, requested_by: str, progress: Progress = _quiet):
        if stack.compose is None:
            raise StackError("The stack file names no Compose project, so /restore cannot stop the app services.")
        self._stack, self._store, self._fault = stack, store, fault
        self._job_id, self._requested_by, self._progress = job_id, requested_by, progress
        self.backups = backups
        self.services = list(services)  # the app services stopped while it runs (FLOWSTATE_RESTORE_SERVICES)
        self.lines: list[str] = []
        self._unwritten: dict = {}  # journal values the bot's database refused, written with the next ones
        self._stopped = False  # the services are down because of us: whatever happens, they are started again

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

    # ---- the six steps -------------------------------------------------------------------------------

    def run(self, backup: Backup) -> bool:
        """True when the backup is restored and the services are healthy; self.lines says what happened."""
        with self._store.session.begin() as session:
            session.add(
                RestoreRun(job_id=self._job_id, backup_id=backup.id, database=self.backups.database, services=self.services,
                           step="verify", started_at=utcnow())
            )
        ok = False
        try:
            ok = self._run(backup)
        except Exception:
            self._say("🔴 The restore stopped on an unexpected error (the details are in the bot's log).")
            if self._stopped:
                self._start({}, "5.")
            raise
        finally:
            self._journal_final(step="done" if ok else "failed", finished_at=utcnow(), outcome="\n".join(self.lines)[:4000])
        return ok

    def _run(self, backup: Backup) -> bool:
        started = time.monotonic()
        try:
            with self._step("verify", f"1. Verifying {backup.label}…"):
                before = self._health_before()
                staged, entries = self.backups.check(backup, self._progress)
        except StackError as error:
            self._say(f"🔴 1. {error}")
            self._say("Nothing was stopped and the database was not touched.")
            return False
        self._say(f"🟢 1. Verified {backup.label}: size, SHA-256 and pg_restore --list ({entries} entries) ({elapsed(started)})")
        try:
            return self._replace_data(backup, staged, before)
        finally:
            self._quietly(lambda: self.backups.tools.unstage(staged))

    def _replace_data(self, backup: Backup, staged: Staged, before: dict[str, bool]) -> bool:
        started = time.monotonic()
        try:
            with self._step("safety", "2. Taking a safety backup of the live database…"):
                safety = self.backups.take(
                    self._requested_by, note=f"safety backup before restoring backup #{backup.id}", kind="safety",
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
        with self._step("restore", f"4. Restoring {backup.label} into {self.backups.database} in one transaction…"):
            code, errors = self._pg_restore(staged)
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
        self._say(f"🟢 4. Restored {backup.label} into {self.backups.database} in one transaction ({elapsed(started)})")
        reached(self._fault, "restore:after_restore")

        self._journal(step="start")
        if not self._start(before, "5."):
            self._say(f"The services are not healthy on the restored data; putting safety backup #{safety.id} back.")
            if self._stop("5."):
                self._put_back(safety)
            self._start(before, "5.")
            return False
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
    """What an interrupted /restore left: wait for a restore still running, start the services, say what the data is."""
    with store.session() as session:
        run = session.get(RestoreRun, job.id)
    backups.abandon(job.id)
    if run is None:
        return "It had not started: nothing was stopped and the database was not touched."
    safety = f" (safety backup #{run.safety_backup_id} holds the data from before)" if run.safety_backup_id else ""
    if run.step in ("verify", "safety", "stop"):
        data = f"The database {run.database} was not touched."
    elif run.step == "restore":
        code = wait_for_exec(backups.tools, run.exec_id, RECOVERY_WAIT_SECONDS) if run.exec_id else None
        if code == 0:
            data = f"The restore had completed: {run.database} holds backup #{run.backup_id}{safety}."
        elif code is None:
            data = (
                f"Whether the restore of backup #{run.backup_id} committed is unknown; it ran in one transaction, so "
                f"{run.database} holds either all of it or none of it{safety}."
            )
        else:
            data = f"The restore failed and its transaction rolled back: {run.database} is as it was{safety}."
    elif run.step == "failed":
        said = (run.outcome or "").splitlines()
        data = f"It had already failed and said: {said[-1] if said else 'nothing'}"
    else:
        data = f"{run.database} holds backup #{run.backup_id}{safety}."
    try:
        stack.compose.start(run.services)
        services = gate(stack, lambda _text: None).line.rstrip(".")
    except StackError as error:
        services = f"starting {', '.join(run.services)} failed: {error}; /restart {' '.join(run.services)} starts them"
    text = f"{data} Services: {services}."
    with store.session.begin() as session:
        session.execute(update(RestoreRun).where(RestoreRun.job_id == job.id).values(step="interrupted", finished_at=utcnow(), outcome=text))
    return text
