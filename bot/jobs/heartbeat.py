"""One heartbeat per process that runs jobs: its row in bot_runners, renewed by one thread for all its jobs.

A job points at its runner (bot_jobs.holder is the runner's id). While the runner beats, its running jobs are
alive and the stack locks they hold are renewed; once it has been silent for a lease (job_lease_seconds), the
sweep of any runner interrupts its jobs, and their locks expire. One write every sixth of a lease per process,
however many jobs it runs.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import delete, select, update

from bot.jobs.model import RUNNING, ChangeLock, Job, RunnerRow
from bot.store.engine import Store, utcnow
from bot.jobs.outage import OutageLog

log = logging.getLogger(__name__)


class RunnerHeartbeat:
    def __init__(self, store: Store, runner_id: str, lease_seconds: float):
        self._store = store
        self.id = runner_id
        self._lease = timedelta(seconds=lease_seconds)
        self._every = lease_seconds / 6
        self._start_lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        # How its failures are said: a runner process gives its own, so that an outage is said once per process.
        self.outage = OutageLog(log)

    def start(self) -> None:
        """Register this runner and keep beating; the first beat is written before this returns. Idempotent, so
        whatever first holds a job in this process (a runner's claim, a console's change) can call it."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None or self._done.is_set():
                return
            self.beat()
            thread = threading.Thread(target=self._run, name="runner-heartbeat", daemon=True)
            thread.start()
            self._thread = thread

    def beat(self) -> None:
        now = utcnow()
        with self._store.session.begin() as session:
            if session.execute(update(RunnerRow).where(RunnerRow.id == self.id).values(heartbeat_at=now)).rowcount == 0:
                session.add(RunnerRow(id=self.id, started_at=now, heartbeat_at=now))  # new, or forgotten after a long pause
            # The stack lock of a change lasts as long as the runner running it lives.
            mine = select(Job.id).where(Job.holder == self.id, Job.state == RUNNING)
            session.execute(update(ChangeLock).where(ChangeLock.job_id.in_(mine)).values(expires_at=now + self._lease))

    def _run(self) -> None:
        while not self._done.wait(self._every):
            try:
                self.beat()
                self.outage.ok()
            except Exception:
                self.outage.failed(f"renewing the heartbeat of runner {self.id}")

    def stop(self) -> None:
        """A clean exit: stop beating and leave the table (the jobs it ran have ended)."""
        self._done.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return
        thread.join(timeout=5)
        try:
            with self._store.session.begin() as session:
                session.execute(delete(RunnerRow).where(RunnerRow.id == self.id))
        except Exception:
            log.warning("runner %s could not leave the runners table; the sweep forgets it after a lease", self.id)
