"""Two-person approval through the dispatcher (the console's path), on SQLite and PostgreSQL.

Each test tries to break one promise: nobody approves their own request, only an approver counts and
only when they decide, a request expires, a decided request stays decided, one request runs once.
"""

import threading
import time
from datetime import timedelta

import pytest
from pydantic import BaseModel

from bot.adapters.console import run_approved
from bot.jobs.model import ChangeLock, Job, RunnerRow
from bot.frame.registry import Command, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry, utcnow
from tests.conftest import grant, run


class FlipArgs(BaseModel):
    target: str


def _runtime(make_runtime, database_url, **settings):
    """A runtime with /flip: an operator command that needs approval and records every run."""
    runtime = make_runtime(database_url=database_url, admins=["UADMIN"], **settings)
    runtime.ran = []

    def flip(ctx, args):
        runtime.ran.append((args.target, ctx.invocation.user_id))
        return Reply(f"flipped {args.target}", in_channel=True)

    runtime.commands = {
        **runtime.commands,
        "flip": Command("flip", "Flip a switch.", "/flip TARGET", FlipArgs, Role.operator, flip, True, True),
    }
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    grant(runtime, "UVIEW", Role.viewer)
    return runtime


def _decide(runtime, user, line):
    """What typing a decision in the console does: the decision, then any approved request runs there."""
    reply = run(runtime, user, line)
    ran = [r.text for r in run_approved(runtime, lambda _text: None)]
    return reply, ran


def _job(runtime, job_id=1) -> Job:
    with runtime.store.session() as session:
        return session.get(Job, job_id)


def _audit(runtime):
    with runtime.store.session() as session:
        return [(row.user_id, row.command, row.outcome, row.job_id) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


def test_an_approver_approves_and_the_request_runs_once_with_the_arguments_shown(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    asked = run(runtime, "UOP", "/flip 'main breaker'")
    assert asked.text.startswith("Request #1: `/flip 'main breaker'` needs a second person's approval")
    assert runtime.ran == [] and _job(runtime).state == "pending_approval"
    reply, ran = _decide(runtime, "UAPP", "/approvals approve 1")
    assert reply.text == "You approved request #1; it runs now."
    assert ran == ["flipped main breaker"]
    assert runtime.ran == [("main breaker", "UOP")], "it runs as the requester's command, exactly once"
    job = _job(runtime)
    assert (job.state, job.approver, job.result) == ("succeeded", "UAPP", "flipped main breaker")
    again, ran = _decide(runtime, "UADMIN", "/approvals approve 1")
    assert again.text == "Request #1 was approved by <@UAPP> and has run; nothing changed. Ask again if it is still needed."
    assert ran == [] and len(runtime.ran) == 1
    steps = [(user, outcome) for user, command, outcome, job_id in _audit(runtime) if job_id == 1]
    assert steps[:4] == [("UOP", "requested"), ("UAPP", "approved"), ("UOP", "allowed"), ("UOP", "succeeded")]


def test_nobody_approves_their_own_request_not_even_an_admin(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    run(runtime, "UADMIN", "/flip x")
    reply, ran = _decide(runtime, "UADMIN", "/approvals approve 1")
    assert reply.text == "You asked for request #1, so a second person must approve it."
    assert ran == [] and runtime.ran == [] and _job(runtime).state == "pending_approval"
    assert ("UADMIN", "approvals", "denied", 1) in _audit(runtime)


@pytest.mark.parametrize("user,role", [("UVIEW", "viewer"), ("UOP2", "operator")])
def test_a_viewer_or_an_operator_cannot_approve(make_runtime, database_url, user, role):
    runtime = _runtime(make_runtime, database_url)
    grant(runtime, "UOP2", Role.operator)
    run(runtime, "UOP", "/flip x")
    reply, _ = _decide(runtime, user, "/approvals approve 1")
    assert reply.text == f"To approve request #1 you need the approver role and you have {role}."
    assert runtime.ran == [] and _job(runtime).state == "pending_approval"


def test_an_approver_whose_role_was_revoked_after_the_request_cannot_approve(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    run(runtime, "UOP", "/flip x")
    assert "no longer has" in run(runtime, "UADMIN", "/role revoke UAPP").text or runtime.authz.role_of("UAPP") is None
    reply, _ = _decide(runtime, "UAPP", "/approvals approve 1")
    assert reply.text == "/approvals needs the viewer role and you have no role yet; ask an admin for one."
    assert runtime.ran == [] and _job(runtime).state == "pending_approval"


def test_a_request_expires_and_a_late_approval_changes_nothing(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url, approval_minutes=0.01)
    run(runtime, "UOP", "/flip x")
    time.sleep(0.8)
    reply, ran = _decide(runtime, "UAPP", "/approvals approve 1")
    assert reply.text.startswith("Request #1 expired at ") and reply.text.endswith("; nothing changed. Ask again if it is still needed.")
    assert ran == [] and runtime.ran == [] and _job(runtime).state == "expired"
    assert run(runtime, "UVIEW", "/approvals").text == "No request is waiting for approval."
    assert ("UOP", "flip", "expired", 1) in _audit(runtime)


def test_a_denied_request_cannot_be_approved_afterwards(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    grant(runtime, "UAPP2", Role.approver)
    run(runtime, "UOP", "/flip x")
    assert _decide(runtime, "UAPP", "/approvals deny 1")[0].text == "You denied request #1; nothing ran."
    reply, ran = _decide(runtime, "UAPP2", "/approvals approve 1")
    assert reply.text.startswith("Request #1 was denied by <@UAPP> at ")
    assert ran == [] and runtime.ran == [] and _job(runtime).state == "denied"


def test_only_the_requester_cancels_and_a_cancelled_request_cannot_be_approved(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    run(runtime, "UOP", "/flip x")
    assert _decide(runtime, "UAPP", "/approvals cancel 1")[0].text == (
        "Only <@UOP>, who asked for request #1, may cancel it; an approver may deny it."
    )
    assert _decide(runtime, "UOP", "/approvals cancel 1")[0].text == "You cancelled request #1; nothing ran."
    reply, ran = _decide(runtime, "UAPP", "/approvals approve 1")
    assert reply.text.startswith("Request #1 was cancelled at ")
    assert runtime.ran == [] and _job(runtime).state == "cancelled"


def test_a_request_that_does_not_exist_or_a_tampered_number_changes_nothing(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    run(runtime, "UOP", "/flip x")
    assert _decide(runtime, "UAPP", "/approvals approve 99")[0].text == "There is no request #99; /approvals lists the pending ones."
    assert _decide(runtime, "UAPP", "/approvals approve 1;2")[0].text.startswith("ID should be a valid integer")
    assert _decide(runtime, "UAPP", "/approvals approve 1 --break-glass now")[0].text.startswith("Only an admin may use --break-glass")
    assert runtime.ran == [] and _job(runtime).state == "pending_approval"


def test_twenty_approvers_at_once_give_exactly_one_run(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    approvers = [f"UAPP{i}" for i in range(20)]
    for user in approvers:
        grant(runtime, user, Role.approver)
    run(runtime, "UOP", "/flip x")
    start = threading.Barrier(len(approvers))
    replies = []

    def approve(user):
        start.wait()
        replies.append(run(runtime, user, "/approvals approve 1").text)

    threads = [threading.Thread(target=approve, args=(user,)) for user in approvers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ran = [r.text for r in run_approved(runtime, lambda _t: None)] + [r.text for r in run_approved(runtime, lambda _t: None)]
    assert replies.count("You approved request #1; it runs now.") == 1, replies
    assert ran == ["flipped x"] and len(runtime.ran) == 1
    assert [outcome for _u, _c, outcome, job_id in _audit(runtime) if job_id == 1].count("approved") == 1


def test_break_glass_runs_at_once_loudly_and_only_for_an_admin_with_a_reason(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    grant(runtime, "UADMIN2", Role.admin)
    assert run(runtime, "UADMIN", "/flip x --break-glass").text.startswith('--break-glass needs a reason in quotes')
    assert run(runtime, "UOP", '/flip x --break-glass "site down"').text == (
        "Only an admin may use --break-glass; ask an approver instead."
    )
    assert runtime.ran == []
    reply = run(runtime, "UADMIN2", '/flip x --break-glass "site down, approvers asleep"')
    assert reply.text == "flipped x" and runtime.ran == [("x", "UADMIN2")]
    job = _job(runtime)
    assert (job.state, job.break_glass, job.approver) == ("succeeded", "site down, approvers asleep", None)
    assert ("UADMIN2", "flip", "break-glass", job.id) in _audit(runtime)
    assert run(runtime, "UADMIN", '/help --break-glass "x"').text.startswith("/help with these arguments needs no approval")


def test_break_glass_can_be_turned_off(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url, break_glass=False)
    reply = run(runtime, "UADMIN", '/flip x --break-glass "site down"')
    assert reply.text == "Break-glass is turned off on this bot (FLOWSTATE_BREAK_GLASS); ask an approver."
    assert runtime.ran == []


def test_a_change_waits_for_the_one_change_lock_and_says_who_holds_it(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    with runtime.store.session.begin() as session:
        session.add(
            ChangeLock(stack=runtime.stack_name, job_id=77, requester="UOTHER", command="/restart backend",
                       acquired_at=utcnow(), expires_at=utcnow().replace(year=utcnow().year + 1))
        )
    run(runtime, "UOP", "/flip x")
    reply, ran = _decide(runtime, "UAPP", "/approvals approve 1")
    assert reply.text.startswith("You approved request #1; it waits for `/restart backend` (request #77, asked by <@UOTHER>) to finish")
    assert ran[0].startswith("Request #1: ⏳ Approved by <@UAPP>; waiting for `/restart backend` (request #77, asked by <@UOTHER>)")
    assert runtime.ran == [] and _job(runtime).state == "waiting"
    runtime.locks.release(77)  # the lock goes to the request that waited for it: no second approval
    assert [r.text for r in run_approved(runtime, lambda _text: None)] == ["flipped x"]
    with runtime.store.session() as session:
        assert session.query(ChangeLock).count() == 0, "the lock goes with the change that held it"


def test_an_expired_lock_of_a_crashed_holder_does_not_block_the_next_change(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    with runtime.store.session.begin() as session:
        session.add(
            ChangeLock(stack=runtime.stack_name, job_id=77, requester="UOTHER", command="/restart backend",
                       acquired_at=utcnow(), expires_at=utcnow())
        )
    run(runtime, "UOP", "/flip x")
    assert _decide(runtime, "UAPP", "/approvals approve 1")[1] == ["flipped x"]


def test_hostile_text_reaches_the_approval_only_as_quoted_arguments(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    hostile = "'; DROP TABLE bot_jobs; --"
    asked = run(runtime, "UOP", f'/flip "{hostile}"')
    assert "`/flip ''\"'\"'; DROP TABLE bot_jobs; --'`" in asked.text
    _decide(runtime, "UAPP", "/approvals approve 1")
    assert runtime.ran == [(hostile, "UOP")]


def test_a_long_change_run_in_a_console_keeps_its_heartbeat_so_no_sweep_takes_it_for_dead(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url, job_lease_seconds=5)
    swept = []

    def beat_of(holder: str):
        with runtime.store.session() as session:
            return session.get(RunnerRow, holder).heartbeat_at

    def slow_flip(ctx, args):
        # No waiting for a lease to run out: the change runs until its runner's heartbeat is renewed (every lease/6 s),
        # then a runner sweeps the same database with a lease the job is already older than (its start is before the
        # sweep's cutoff): only that renewed heartbeat keeps it alive, as it would for a change longer than the lease.
        job = _job(runtime)
        deadline = time.monotonic() + 30
        while beat_of(job.holder) < job.started_at + timedelta(seconds=0.5):
            assert time.monotonic() < deadline, "the console's heartbeat was not renewed while its change ran"
            time.sleep(0.05)
        cutoff = job.started_at + timedelta(seconds=0.25)
        swept.extend(runtime.jobs.interrupt(stale_after=(utcnow() - cutoff).total_seconds()))
        return Reply("flipped slowly")

    flip = runtime.commands["flip"]
    runtime.commands["flip"] = Command(flip.name, flip.summary, flip.usage, flip.args, flip.role, slow_flip, True, True)
    assert run(runtime, "UADMIN", '/flip x --break-glass "testing the lease"').text == "flipped slowly"
    assert swept == [] and _job(runtime).state == "succeeded"


def test_a_change_in_progress_is_said_while_it_holds_the_lock_and_a_crashed_holder_s_expired_lock_is_not(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    said = []

    def watched_flip(ctx, args):
        said.append(runtime.approvals.change_banner())
        return Reply("flipped")

    flip = runtime.commands["flip"]
    runtime.commands["flip"] = Command(flip.name, flip.summary, flip.usage, flip.args, flip.role, watched_flip, True, True)
    run(runtime, "UOP", "/flip cache")
    _decide(runtime, "UAPP", "/approvals approve 1")
    (banner,) = said
    assert banner.startswith("⏳ Change in progress: `/flip cache` by <@UOP> since ")
    assert banner.endswith(" (request #1): errors now may be the change, not an outage.")
    assert runtime.approvals.change_banner() is None, "the lock went with the change"

    with runtime.store.session.begin() as session:
        past = utcnow() - timedelta(minutes=5)
        session.add(ChangeLock(stack=runtime.stack_name, job_id=9, requester="UOP", command="/flip x", acquired_at=past, expires_at=past))
    assert runtime.approvals.change_banner() is None, "an expired lock is a crashed holder's, not a change running"
