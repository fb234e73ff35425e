"""Runners and their jobs: one heartbeat per runner, one-statement claims, wake-ups, and the acks' group commit.

What is promised: a runner that is killed leaves its jobs running only until its lease runs out, then they are
interrupted and the stack lock one of them held is free again; two runner processes taking from one queue never
win the same job; on PostgreSQL a job stored anywhere wakes an idle runner at once, not at its next poll; and on
SQLite a burst of concurrent acks, written in groups, keeps every acknowledged row exactly once.
"""

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from bot.frame.registry import Invocation
from bot.jobs.heartbeat import RunnerHeartbeat
from bot.jobs.model import QUEUED, RUNNING, Job, RunnerRow
from bot.jobs.queue import ChangeLocks, JobQueue, ReplayedRequest, new_holder
from bot.store.engine import SeenRequest, Store
from tests.waiting import eventually

LEASE = 5.0  # the shortest lease the settings accept
_spawn = multiprocessing.get_context("spawn")


def _queue(store: Store, count: int, source: str = "slack") -> list[int]:
    jobs = JobQueue(store)
    queued = [jobs.submit(Invocation("UOP", "whoami", "", "C1", source), dedupe_key=f"cmd:{i}") for i in range(count)]
    jobs.close()  # as a replica's runtime closes: its NOTIFY, sent after the commit, has gone out
    return queued


# ---- a runner that dies ---------------------------------------------------------------------------


def _hold_a_change(url: str, job_id: int, ready) -> None:
    """A runner process: takes the job, takes the stack lock for it, beats, and then hangs until it is killed."""
    store = Store(url)
    holder = new_holder()
    jobs = JobQueue(store, RunnerHeartbeat(store, holder, LEASE))
    job = jobs.claim(job_id, holder)
    assert ChangeLocks(store, LEASE).acquire("flowstate-test", job, "/restart frontend") is None
    ready.set()
    threading.Event().wait()


# A runner process of its own, SIGKILLed, and real leases running out (a runner's heartbeat lives in that process,
# on the wall clock): the process tier, not the unit tier's seconds.
@pytest.mark.process
def test_a_killed_runners_jobs_are_interrupted_after_its_lease_and_its_lock_is_free_again(database_url):
    store = Store(database_url)
    store.migrate()
    (job_id,) = _queue(store, 1)
    ready = _spawn.Event()
    runner = _spawn.Process(target=_hold_a_change, args=(database_url, job_id, ready), daemon=True)
    runner.start()
    try:
        assert ready.wait(60), "the runner process did not take its job"
        jobs, locks = JobQueue(store), ChangeLocks(store, LEASE)
        time.sleep(LEASE + 1.5)  # longer than a lease: only the runner's heartbeat keeps its job and lock
        assert jobs.interrupt(stale_after=LEASE) == [], "a live runner's job is not taken for dead"
        assert locks.held("flowstate-test").job_id == job_id, "its heartbeat renewed the lock"

        os.kill(runner.pid, signal.SIGKILL)
        runner.join(10)
        assert [job.id for job in jobs.interrupt(stale_after=LEASE)] == [], "not before the lease has run out"
        time.sleep(LEASE + 1.0)
        assert [job.id for job in jobs.interrupt(stale_after=LEASE)] == [job_id]
        assert jobs.get(job_id).state == "interrupted"
        assert locks.held("flowstate-test") is None, "the dead runner's lock expired with its lease"
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(RunnerRow)) == 0, "the silent runner is forgotten"
    finally:
        if runner.is_alive():
            runner.kill()
        store.dispose()


# ---- two runners, one queue -------------------------------------------------------------------------


def _claim_everything(url: str, start, results) -> None:
    store = Store(url)
    jobs = JobQueue(store)
    holder = new_holder()
    start.wait(60)
    claimed = []
    while (job := jobs.claim_next(holder)) is not None:
        claimed.append(job.id)
        assert job.state == RUNNING and job.holder == holder
        time.sleep(0.002)  # a moment's work, so that the two runners take turns at the queue
    results.put(claimed)
    store.dispose()


@pytest.mark.process  # two runner processes of its own racing for one queue
def test_two_runner_processes_never_claim_the_same_job(database_url):
    store = Store(database_url)
    store.migrate()
    ids = _queue(store, 300)
    start, results = _spawn.Event(), _spawn.Queue()
    runners = [_spawn.Process(target=_claim_everything, args=(database_url, start, results), daemon=True) for _ in range(2)]
    for runner in runners:
        runner.start()
    start.set()
    first, second = results.get(timeout=120), results.get(timeout=120)
    for runner in runners:
        runner.join(10)
    assert not set(first) & set(second), "a job claimed twice"
    assert sorted(first + second) == ids, "every job claimed exactly once"
    assert first and second, "both runners took a share"
    with store.session() as session:
        assert session.scalar(select(func.count()).where(Job.state == QUEUED)) == 0
    store.dispose()


# ---- woken by NOTIFY -----------------------------------------------------------------------------------


def test_a_job_stored_by_another_replica_wakes_an_idle_runner_before_its_poll(make_runtime, postgres_url):
    from bot.jobs.runner import Runner
    from bot.jobs.wakeup import NotifiedWakeups

    runtime = make_runtime(database_url=postgres_url, admins=["UOP"])
    runner = Runner(runtime, None, poll_seconds=3600)  # left alone, it would look again in an hour
    notifications = NotifiedWakeups(postgres_url, runner.wake.set)
    serving = threading.Thread(target=runner.serve, daemon=True)
    serving.start()
    try:
        time.sleep(2)  # its first look, and the one after its LISTEN began, are over: the runner is idle
        other_replica = Store(postgres_url)
        (job_id,) = _queue(other_replica, 1, source="console")  # no doorbell: another replica stored it
        other_replica.dispose()
        eventually(lambda: runtime.jobs.get(job_id).state == "succeeded", "the runner to run the job", timeout=30)
    finally:
        runner.stopping.set()
        runner.wake.set()
        serving.join(10)
        notifications.close()
        runner.pool.shutdown(wait=True)


def test_a_runner_is_not_woken_twice_by_the_notify_of_the_bot_process_that_rings_it(make_runtime, postgres_url):
    """The bot process rings its own runners at the ack and NOTIFYs for the other replicas': its runners skip that
    NOTIFY (one look for the job, not two); a NOTIFY of any other process still wakes them."""
    from bot.jobs import queue
    from bot.jobs.wakeup import NotifiedWakeups

    runtime = make_runtime(database_url=postgres_url)  # the bot process: its queue announces with its token
    woken = threading.Event()
    notifications = NotifiedWakeups(postgres_url, woken.set, rung_by=queue.ANNOUNCER_TOKEN)
    other = Store(postgres_url)
    try:
        eventually(woken.is_set, "the first look after LISTEN")  # it looks once as soon as it listens
        woken.clear()
        runtime.jobs.submit(Invocation("UOP", "health", source="console"))  # announced with this process's token
        assert not woken.wait(1.5), "the NOTIFY of the bot process that rings it woke the runner again"
        other.ack_writer.write((queue._NOTIFY, {"token": "another-replica"}))
        assert woken.wait(10), "another replica's NOTIFY did not wake the runner"
    finally:
        notifications.close()
        other.dispose()


# ---- group commit -------------------------------------------------------------------------------------


def test_a_burst_of_concurrent_acks_keeps_every_row_once(database_url):
    """100 acks at once on the server's 8 threads, a tenth of them replays of another's signature: for every
    signature exactly one job is stored, the other sighting refused with nothing of it written, whatever group
    each landed in."""
    store = Store(database_url)
    store.migrate()
    jobs = JobQueue(store)
    requests = [(f"cmd:{i}", f"v0=sig{i}") for i in range(90)] + [(f"cmd:replay{i}", f"v0=sig{i * 9}") for i in range(10)]
    start = threading.Event()

    def ack(request: tuple[str, str]):
        dedupe_key, signature = request
        start.wait(30)
        try:
            return jobs.submit(Invocation("UOP", "whoami", "", "C1", "slack"), dedupe_key=dedupe_key, signature=signature)
        except ReplayedRequest:
            return "replayed"

    with ThreadPoolExecutor(max_workers=8) as server_threads:  # waitress's threads in SlackAdapter.http_server
        answers = server_threads.map(ack, requests)
        start.set()
        results = dict(zip((key for key, _ in requests), answers))

    stored = {key: value for key, value in results.items() if value != "replayed"}
    assert len(stored) == 90, "one job per signature; its second sighting refused"
    assert all(isinstance(job_id, int) for job_id in stored.values()) and len(set(stored.values())) == 90
    with store.session() as session:
        rows = session.execute(select(Job.id, Job.dedupe_key)).all()
        signatures = session.scalars(select(SeenRequest.signature)).all()
    assert sorted(rows) == sorted((job_id, key) for key, job_id in stored.items()), "every acknowledged row, once"
    assert sorted(signatures) == sorted(f"v0=sig{i}" for i in range(90))
    store.dispose()
