"""A change that raises is an interruption, and rows a change left open are finished by the runners' sweep.

What is promised: when a command that declares `recover` raises, its recovery runs at once (as after a kill),
still under the stack's lock, and the reply says the stack's state; the audit says it was interrupted. A release
or restore journal whose request has ended (and whose recovery no longer runs) does not stay open for ever.
"""

import dataclasses

from pydantic import BaseModel
from sqlalchemy import select

from bot.backups.model import RestoreRun
from bot.adapters.console import run_approved
from bot.deploy.model import Release
from bot.jobs.model import ChangeLock, Job
from bot.jobs.runner import Runner
from bot.frame.registry import Command, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry, utcnow
from tests.conftest import grant, run
from tests.faults import StoreLock, short_busy_timeout


class FlipArgs(BaseModel):
    target: str


def _runtime(make_runtime, database_url):
    """/flip: a change that needs approval, fails unexpectedly half way, and knows how to put right what it left."""
    runtime = make_runtime(database_url=database_url, admins=["UADMIN"])
    runtime.recovered = []

    def flip(ctx, args):
        raise RuntimeError(f"the switch {args.target} broke half way")

    def recover(ctx, job):
        with ctx.store.session() as session:
            lock = session.get(ChangeLock, ctx.stack.name)
        runtime.recovered.append((job.id, lock.job_id if lock else None))
        return "The switch is back off; /flip it again."

    runtime.commands = {
        **runtime.commands,
        "flip": Command("flip", "Flip a switch.", "/flip TARGET", FlipArgs, Role.operator, flip, True, True, recover=recover),
    }
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    return runtime


def test_a_change_that_raises_is_recovered_under_its_lock_and_says_the_state(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    assert run(runtime, "UOP", "/flip left").text.startswith("Request #1: ")
    run(runtime, "UAPP", "/approvals approve 1")
    (reply,) = list(run_approved(runtime, lambda _text: None))

    assert runtime.recovered == [(1, 1)], "recovery ran once, while the job still held the stack's lock"
    assert reply.failed and "/flip failed unexpectedly (error id " in reply.text, reply.text
    assert reply.text.endswith("The switch is back off; /flip it again."), reply.text
    assert "Traceback" not in reply.text and "broke half way" not in reply.text
    with runtime.store.session() as session:
        assert session.get(Job, 1).state == "failed"
        assert session.get(ChangeLock, runtime.stack_name) is None, "the lock goes once the recovery has run"
        outcomes = [row.outcome for row in session.scalars(select(AuditEntry).where(AuditEntry.job_id == 1).order_by(AuditEntry.id))]
    assert outcomes[-3:] == ["allowed", "failed", "interrupted"], outcomes


def test_the_sweep_finishes_release_and_restore_rows_whose_request_has_ended(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url)
    now = utcnow()
    with runtime.store.session.begin() as session:
        for job_id, state in ((1, "failed"), (2, "interrupted"), (3, "running")):
            session.add(Job(id=job_id, state=state, source="console", requester="UOP", command="restore", text="1", created_at=now))
            session.add(Release(stack="s", commit="a" * 40, kind="deploy", job_id=job_id, started_at=now, health="unknown"))
            session.add(RestoreRun(job_id=job_id, backup_id=1, database="app", services=["backend"], step="stop", started_at=now))
        # Job 2's recovery still runs (it holds the lock): its rows are its recovery's to finish.
        session.add(ChangeLock(stack="s", job_id=2, requester="UOP", command="/restore 1", acquired_at=now, expires_at=now))

    Runner(runtime, None)._sweep()

    with runtime.store.session() as session:
        releases = {r.job_id: r for r in session.scalars(select(Release))}
        journals = {r.job_id: r for r in session.scalars(select(RestoreRun))}
    assert releases[1].finished_at is not None and "its request had ended" in releases[1].note
    assert (journals[1].step, journals[1].finished_at is not None) == ("interrupted", True)
    for open_job in (2, 3):
        assert releases[open_job].finished_at is None and journals[open_job].finished_at is None


def test_a_change_ending_while_the_store_is_locked_still_lands_its_outcome_audit_and_lock(make_runtime, tmp_path):
    runtime = _runtime(make_runtime, f"sqlite:///{tmp_path / 'bot.db'}")
    short_busy_timeout(runtime, 0.25)  # refused after a quarter second, for a second: its writes are tried again
    lock = StoreLock(runtime, seconds=1.0)
    flip = lambda ctx, args: (lock(), Reply(f"flipped {args.target}"))[1]  # noqa: E731 (the store locked as it ends)
    runtime.commands = {**runtime.commands, "flip": dataclasses.replace(runtime.commands["flip"], handler=flip)}
    run(runtime, "UOP", "/flip left")
    run(runtime, "UAPP", "/approvals approve 1")
    (reply,) = list(run_approved(runtime, lambda _text: None))
    lock.join()

    assert reply.text == "flipped left" and runtime.recovered == []
    with runtime.store.session() as session:
        assert session.get(Job, 1).state == "succeeded"
        assert session.get(ChangeLock, runtime.stack_name) is None
        outcomes = [row.outcome for row in session.scalars(select(AuditEntry).where(AuditEntry.job_id == 1).order_by(AuditEntry.id))]
    assert outcomes[-2:] == ["allowed", "succeeded"], outcomes
