"""Runner processes: claim jobs from the table and run them on threads, away from the process that acks.

The process that answers Slack only verifies, inserts a job row and acks. A runner (a spawned process
at the lowest CPU priority, so command work never competes with acks for the interpreter lock or a
core) claims a job the moment it is stored: rung by its bot process, or on PostgreSQL woken by the
NOTIFY of whichever replica stored it. One heartbeat per runner (bot/jobs/heartbeat.py) keeps all its
jobs alive; it also expires approval requests nobody clicked, and marks the jobs of a runner that died
as interrupted. A job is never run twice: a claimed job that loses its runner is interrupted, not retried.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bot.backups.flows import drop_expired_copies, finish_abandoned as finish_abandoned_restores, sweep_undo_scratch
from bot.frame.config import ConfigError, Settings, StackConfig
from bot.deploy.service import finish_abandoned as finish_abandoned_releases
from bot.jobs.model import Job
from bot.jobs.queue import ANNOUNCER_TOKEN
from bot.jobs.wakeup import NotifiedWakeups
from bot.jobs.outage import OutageLog
from bot.frame.registry import Reply
from bot.adapters.slack.http import forget_old_requests
from bot.frame.undumpable import make_undumpable

log = logging.getLogger(__name__)

NICENESS = 19
STARTUP_SECONDS = 120
SWEEP_SECONDS = 2.0
FORGET_SECONDS = 60.0  # how often the signatures of old Slack requests are deleted
STALE_QUERY_SECONDS = 60.0  # a read-only command queued longer than this is dropped, not answered late
# Jobs are taken when a ring or a NOTIFY says one was stored; this slow look is only the safety net (a ring lost
# with a dead pipe, a NOTIFY lost with a dropped connection).
POLL_SECONDS = 5.0


class Runner:
    """Claims and runs jobs with a pool of threads; one per runner process."""

    def __init__(self, runtime, client, poll_seconds: float = POLL_SECONDS):
        self.rt = runtime
        self.client = client
        self.wake = threading.Event()  # a job may be waiting: a ring, a NOTIFY, or a thread that became free
        self.holder = runtime.holder
        self.poll_seconds = poll_seconds
        threads = runtime.settings.runner_threads
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="job")
        self.free = threading.Semaphore(threads)
        self.stopping = threading.Event()
        self._forget_at = 0.0
        self.outage = OutageLog(log)
        runtime.heartbeat.outage = self.outage  # one account of an outage per process

    # ---- the loop ------------------------------------------------------------------------------

    def recover(self) -> None:
        """At start: jobs of dead local holders are interrupted, stale queued questions dropped, late requests expired."""
        rt = self.rt
        rt.approvals.interrupted(rt.jobs.interrupt(local_dead=True))
        rt.approvals.interrupted(rt.jobs.interrupt(stale_after=rt.settings.job_lease_seconds))
        read_only = {name for name, cmd in rt.commands.items() if not cmd.changes}
        rt.approvals.dropped(rt.jobs.drop_stale(STALE_QUERY_SECONDS, read_only))
        rt.approvals.expire_due()

    def serve(self) -> None:
        """Take jobs as soon as they are stored; sweep every SWEEP_SECONDS; look for jobs unasked every poll."""
        next_sweep = next_poll = 0.0
        while not self.stopping.is_set():
            woken = self.wake.wait(timeout=max(0.0, min(next_sweep, next_poll) - time.monotonic()))
            if woken:  # cleared only when it rang: a ring just after a timed-out wait stays set for the next turn
                self.wake.clear()  # (the claim below runs after this, so a ring before it is seen there)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + SWEEP_SECONDS
            if woken or time.monotonic() >= next_poll:
                next_poll = time.monotonic() + self.poll_seconds
                self._claim_all()

    def _claim_all(self) -> None:
        """As many queued jobs as there are free threads, several per statement (a burst is claimed in a few)."""
        while True:
            free = 0
            while self.free.acquire(blocking=False):
                free += 1
            if not free:
                return
            try:
                jobs = self.rt.jobs.claim_many(self.holder, free)
                self.outage.ok()
            except Exception:
                self.outage.failed("claiming jobs")
                jobs = []
            for job in jobs:
                self.pool.submit(self._process, job)
            for _ in range(free - len(jobs)):
                self.free.release()
            if len(jobs) < free:
                return

    def _sweep(self) -> None:
        """Each part of the sweep on its own: one that fails (the store away, Slack down) is reported by the outage
        log and never keeps the others from running; the outage ends when a whole sweep has gone through."""
        rt = self.rt
        now = rt.duties.clock.now  # the scheduler's clock: tests move it for every time-driven part at once
        failed = False
        for part, what in (
            (self._settle_jobs, "the sweep of expired requests and lost jobs"),
            (lambda: (finish_abandoned_restores(rt.store), finish_abandoned_releases(rt.store, rt.settings)),
             "the sweep of release and restore rows left open"),
            (lambda: sweep_undo_scratch(rt.store, rt.backups), "the sweep of row undo's scratch databases"),  # its request ended
            (lambda: drop_expired_copies(rt.backups, rt.store, rt.settings.backup_keep_days, now()),
             "the drop of swap restores' kept copies past the backups' retention"),
            (rt.locks.hand_over_free, "the sweep of requests waiting for a free lock"),  # its holder crashed, or expired
            (rt.duties.tick, "the scheduler's tick"),  # a duty whose slot has come: the replica whose INSERT wins queues it
            (rt.duties.freezes.sweep, "the change freezes' starts and ends"),  # the replica whose UPDATE wins tells
            (lambda: rt.approvals.followup.sweep(now()), "the follow-up of requests nobody decided"),  # each once
            (lambda: rt.access.sweep(now()), "the sweep of roles granted for a while"),  # warned, then ended
            (lambda: rt.incidents.actions.remind(now()), "the reminders of overdue follow-ups"),  # once a local day each
            (lambda: rt.sampler.sweep(now()), "the sampling of the key metrics"),  # each minute by the replica whose INSERT wins
            (lambda: rt.scratches and rt.scratches.sweep(), "the sweep of scratch instances whose restore request ended"),
            # a request waiting for approval: the new database is filled from its scratch instance on a thread meanwhile
            (lambda: rt.scratches and rt.scratches.prefill_in_background(rt.at_fault), "the background copies of /restore --to"),
        ):
            try:
                part()
            except Exception:
                self.outage.failed(what)
                failed = True
        if not failed:  # the store answers again only when every part went through: some touch it only now and then
            self.outage.ok()

    def _settle_jobs(self) -> None:
        self.rt.approvals.expire_due()
        self.rt.approvals.interrupted(self.rt.jobs.interrupt(stale_after=self.rt.settings.job_lease_seconds))
        if time.monotonic() >= self._forget_at:
            self._forget_at = time.monotonic() + FORGET_SECONDS
            forget_old_requests(self.rt.store)

    # ---- one job -------------------------------------------------------------------------------

    def _process(self, job: Job) -> None:
        try:
            self._run(job)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("request #%s (/%s) failed in the runner [error id %s]", job.id, job.command, error_id)
            self.rt.jobs.finish(job.id, self.holder, "failed", "the runner failed", error_id)
            self._deliver(job, Reply(f"/{job.command} failed unexpectedly (error id {error_id}); the details are in the bot's log."))
        finally:
            self.free.release()
            self.wake.set()  # a thread is free: take the next queued job now

    def _run(self, job: Job) -> None:
        """Every claimed job walks the one pipeline: a command asked in Slack, an approved request, a duty."""
        self.rt.pipeline.run(job, self._publisher(job), holder=self.holder)

    def _publisher(self, job: Job):
        from bot.adapters.slack.client import ResponseUrl

        return ResponseUrl(self.client, self.rt.audit, job)

    def _deliver(self, job: Job, reply: Reply) -> None:
        self._publisher(job).publish(reply)


# ---- the process -------------------------------------------------------------------------------


def _exit_with_parent() -> None:
    """A runner whose bot process was killed (SIGKILL, OOM) exits too, instead of lingering as an orphan."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


class Doorbell:
    """Wakes one runner process: a byte down a pipe that never blocks the one who rings.

    (A multiprocessing.Event would: its set() waits for every sleeper to wake, and a runner killed
    while it slept never does, which would hang the acks.)
    """

    def __init__(self, context):
        self.reader, self._writer = context.Pipe(duplex=False)
        os.set_blocking(self._writer.fileno(), False)

    def ring(self) -> None:
        try:
            os.write(self._writer.fileno(), b"\0")
        except OSError:  # full (it will wake anyway) or its runner is gone
            pass

    def close(self) -> None:
        self._writer.close()


def _listen(reader, runner: Runner) -> None:
    """Turn rings into the runner's local wake-up; an empty read means the bot process is gone."""
    fd = reader.fileno()
    while True:
        try:
            if not os.read(fd, 4096):
                os._exit(0)
        except OSError:
            os._exit(0)
        runner.wake.set()


def runner_main(settings: Settings, stack: StackConfig, doorbell, ready, rung_by: str | None = None) -> None:
    make_undumpable()  # the bot's was undone when this process was executed
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    os.nice(NICENESS)
    from bot.frame.redact import configure_logging
    from bot.runtime import Runtime
    from bot.adapters.slack.client import SlackNotifier, group_members, web_client

    configure_logging(settings.log_level)
    client = web_client(settings)
    # The parent migrated the database before starting any runner.
    runtime = Runtime.build(
        settings, stack, group_members=group_members(client), migrate=False, notifier=SlackNotifier(client), slack=client
    )
    runner = Runner(runtime, client)
    runtime.wake = runner.wake.set
    threading.Thread(target=_listen, args=(doorbell, runner), name="doorbell", daemon=True).start()
    notifications = NotifiedWakeups(settings.effective_database_url, runner.wake.set, runner.outage, rung_by)  # PostgreSQL only
    # SIGTERM (the bot stopping): take no new job, let the running ones finish.
    signal.signal(signal.SIGTERM, lambda *_: (runner.stopping.set(), runner.wake.set()))
    runtime.heartbeat.start()
    runner.recover()
    ready.set()
    runner.serve()
    runner.pool.shutdown(wait=True)
    notifications.close()
    runtime.heartbeat.stop()


class RunnerProcesses:
    """Starts the runner processes, restarts one that dies, and says what it was running."""

    def __init__(self, settings: Settings, stack: StackConfig, runtime):
        self._settings, self._stack, self._runtime = settings, stack, runtime
        # spawn, not fork: the parent runs server threads, and a forked copy of a held lock deadlocks.
        self._context = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.Process] = []
        self._doorbells: dict[int, Doorbell] = {}  # by runner pid
        self._stopping = threading.Event()
        for _ in range(settings.runner_processes):
            self.processes.append(self._start())
        self._watch = threading.Thread(target=self._supervise, name="runner-watch", daemon=True)
        self._watch.start()

    def _start(self) -> multiprocessing.Process:
        ready = self._context.Event()  # only the two of us, and only once: no sleeper can die holding it
        doorbell = Doorbell(self._context)
        process = self._context.Process(
            target=runner_main, args=(self._settings, self._stack, doorbell.reader, ready, ANNOUNCER_TOKEN), name="flowstate-runner", daemon=True
        )
        process.start()
        doorbell.reader.close()  # the runner has its copy; ours would keep the pipe open after it died
        deadline = time.monotonic() + STARTUP_SECONDS
        while not ready.wait(0.1):
            if not process.is_alive() or time.monotonic() > deadline:
                process.kill()
                doorbell.close()
                raise ConfigError("FLOWSTATE_RUNNER_PROCESSES: a runner process could not start; its error is in the log above")
        self._doorbells[process.pid] = doorbell
        return process

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            sentinels = {process.sentinel: process for process in self.processes}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=1.0)
            if self._stopping.is_set():
                return
            for sentinel in ready:
                dead = sentinels[sentinel]
                dead.join(timeout=1)
                doorbell = self._doorbells.pop(dead.pid, None)
                if doorbell is not None:
                    doorbell.close()
                log.error("a runner process (pid %s) died with exit code %s; starting another", dead.pid, dead.exitcode)
                try:
                    flow = self._runtime.approvals
                    flow.interrupted(self._runtime.jobs.interrupt(local_dead=True))
                except Exception:
                    log.exception("could not mark the dead runner's jobs interrupted; its lease will")
                index = self.processes.index(dead)
                try:
                    self.processes[index] = self._start()
                except ConfigError:
                    log.exception("a new runner process did not start; retrying in 5 s")
                    time.sleep(5)
                    continue
                self.notify()

    def notify(self) -> None:
        for doorbell in list(self._doorbells.values()):
            doorbell.ring()

    def shutdown(self) -> None:
        self._stopping.set()
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.join(timeout=10)
