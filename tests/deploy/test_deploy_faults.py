"""The deploy when the bot's own database fails as the script starts, and recovery that must know the old script.

What is promised: the job does not end, and the stack's lock is not let go, while a deploy script it started
runs; the release is finished in the ledger; recovery waits only for the very process it started (pid, start
time and PID namespace), not for whatever now has its number.
"""

from sqlalchemy import select

from bot.deploy.model import Release
from bot.jobs.model import Job
from bot.jobs.queue import process_running
from tests.deploy.test_rollback_live import _approved, _runtime
from tests.faults import StoreLock, short_busy_timeout


def test_the_store_locked_as_the_script_starts_does_not_orphan_it(make_runtime, world):
    world.checkout("v2")
    world.hold.write_text("4")
    runtime = _runtime(make_runtime, world)
    short_busy_timeout(runtime)
    lock = StoreLock(runtime, seconds=2)
    runtime.fault = lambda point: lock() if point == "deploy:after_start" else None

    _request, reply = _approved(runtime, "/restart")
    lock.join()

    held = int(world.hold.with_name("hold.pid").read_text())
    assert not process_running(held), "the job ended only after the script it started"
    assert world.deployed() == [world.commits["v2"]]
    with runtime.store.session() as session:
        (release,) = session.scalars(select(Release).where(Release.job_id.is_not(None))).all()
        job = session.get(Job, release.job_id)
        assert release.finished_at is not None and f"deployed {world.commits['v2']}" in release.output, release.output
        assert job.state in ("succeeded", "failed") and job.finished_at is not None
        assert session.scalars(select(Job).where(Job.state == "running")).all() == []
    assert not reply.failed, reply.text
