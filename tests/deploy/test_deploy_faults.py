"""The deploy when the bot's own database fails as the script starts, and recovery that must know the old script.

What is promised: the job does not end, and the stack's lock is not let go, while a deploy script it started
runs; the release is finished in the ledger; recovery waits only for the very process it started (pid, start
time and PID namespace), not for whatever now has its number.
"""

import os
import subprocess
import threading
from types import SimpleNamespace

from sqlalchemy import select

from bot.frame.config import load_stack
from bot.deploy.model import Release
from bot.deploy.service import output_file, recover
from bot.jobs.model import Job
from bot.jobs.queue import identity_running, process_identity, process_running
from bot.store.engine import utcnow
from tests.deploy.conftest import git, make_repo
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


def _interrupted_release(make_runtime, tmp_path, **recorded):
    """A release left unfinished by job #7 (its bot killed) with what was recorded of its script; a stack file with
    no Compose project, so that the health gate has nothing to wait for."""
    repo = tmp_path / "flowstate-ai"
    make_repo(repo)
    stack_file = tmp_path / "flowstate.toml"
    stack_file.write_text(f'[deploy]\nworkdir = "{repo}"\ntimeout = 3\n')
    runtime = make_runtime(load_stack(stack_file, required=True))
    with runtime.store.session.begin() as session:
        session.add(Release(stack=runtime.stack_name, commit=git(repo, "rev-parse", "HEAD"), kind="deploy", job_id=7,
                            started_at=utcnow(), health="unknown", **recorded))
    return runtime, SimpleNamespace(id=7)


def test_recovery_does_not_take_a_thread_that_now_has_the_scripts_number_for_the_script(make_runtime, tmp_path):
    gone = subprocess.Popen(["sleep", "60"])  # alive while its identity is read (`true` could be a zombie by then)
    identity = process_identity(gone.pid)
    gone.kill()
    gone.wait()
    assert identity is not None
    busy = threading.Event()
    thread = threading.Thread(target=busy.wait, daemon=True)
    thread.start()  # a thread of this process, its id standing in for the script's number given again
    try:
        runtime, job = _interrupted_release(make_runtime, tmp_path, pid=thread.native_id, process=identity.replace(f"/{gone.pid}/", f"/{thread.native_id}/"))
        said = recover(runtime.releases, runtime.store, job)
    finally:
        busy.set()
    assert f"Its deploy script (pid {thread.native_id}) had ended." in said, said


def test_a_process_is_known_by_its_pid_start_time_and_namespace():
    me = process_identity(os.getpid())
    assert identity_running(me)
    host, pid, started = me.rsplit("/", 2)
    assert not identity_running(f"{host}/{pid}/{int(started) + 1}"), "the same number, started at another time"
    assert not identity_running(f"another-host~1/{pid}/{started}"), "a pid of another host or PID namespace"
    thread = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    thread.start()
    assert process_identity(thread.native_id) is None, "a thread is not a process"


def test_recovery_finds_a_script_whose_start_was_not_recorded_by_the_file_it_writes(make_runtime, tmp_path):
    runtime, job = _interrupted_release(make_runtime, tmp_path)  # killed before the script's pid was written
    log_path = output_file(runtime.settings, 1)
    log_path.parent.mkdir(parents=True)
    with open(log_path, "wb") as sink:
        script = subprocess.Popen(["sh", "-c", "echo deploying; sleep 2; echo deployed"], stdout=sink, start_new_session=True)
    try:
        said = recover(runtime.releases, runtime.store, job)
        assert script.poll() is not None, "recovery returned only once the script had ended"
    finally:
        script.wait()
    assert f"Its deploy script (pid {script.pid}) was still running and has ended." in said, said
    with runtime.store.session() as session:
        assert "deployed" in session.get(Release, 1).output
