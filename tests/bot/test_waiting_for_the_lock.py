"""Approved work waits its turn: an approval clicked while another change holds the stack's lock is not refused; the
request waits, held by no process, and runs once when the lock frees, checked again then. On SQLite and PostgreSQL.

Each test tries to break one promise: it runs exactly once (two runners, a restart while it waits), in approval
order, only if its check still passes, never after its requester cancelled it, and its message says what it waits for.
"""

import threading

from pydantic import BaseModel

from bot.adapters.console import run_approved
from bot.frame.registry import Command, CommandError, Invocation, Reply
from bot.frame.roles import Role
from bot.jobs.model import ChangeLock, Job
from bot.jobs.runner import Runner
from bot.store.engine import AuditEntry, utcnow
from tests.conftest import grant, run

OTHER = 77  # the change that holds the lock when the tests begin: `/restore 12`, asked by UOTHER


class FlipArgs(BaseModel):
    target: str


def _runtime(make_runtime, database_url, ran: list, checked: list, broken: set | None = None, **settings):
    """A runtime with /flip: an operator change that needs approval, whose check refuses the targets in `broken`."""
    runtime = make_runtime(database_url=database_url, admins=["UADMIN"], **settings)

    def flip(ctx, args):
        ran.append(args.target)
        return Reply(f"flipped {args.target}", in_channel=True)

    def check(ctx, args):
        checked.append(args.target)
        if broken and args.target in broken:
            raise CommandError(f"{args.target} is gone from the stack; ask again for a target that is there.")

    runtime.commands = {
        **runtime.commands,
        "flip": Command("flip", "Flip a switch.", "/flip TARGET", FlipArgs, Role.operator, flip, True, True, check=check),
    }
    for user, role in (("UOP", Role.operator), ("UOP2", Role.operator), ("UAPP", Role.approver)):
        grant(runtime, user, role)
    return runtime


def _hold(runtime) -> None:
    """Another change holds the stack's lock (a runner elsewhere runs it)."""
    with runtime.store.session.begin() as session:
        session.add(ChangeLock(stack=runtime.stack_name, job_id=OTHER, requester="UOTHER", command="/restore 12",
                               acquired_at=utcnow(), expires_at=utcnow().replace(year=utcnow().year + 1)))


def _job(runtime, job_id=1) -> Job:
    with runtime.store.session() as session:
        return session.get(Job, job_id)


def _lock(runtime) -> int | None:
    with runtime.store.session() as session:
        lock = session.get(ChangeLock, runtime.stack_name)
        return None if lock is None else lock.job_id


def _steps(runtime, job_id=1):
    with runtime.store.session() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.job_id == job_id).order_by(AuditEntry.id)
        return [(row.user_id, row.outcome, row.error) for row in rows]


def _runs(runtime) -> list[str]:
    """What a runner of this runtime runs of the queued requests, now (the console runs them so)."""
    return [reply.text for reply in run_approved(runtime, lambda _text: None)]


def _waiting(make_runtime, database_url):
    """Request #1 (`/flip x`, asked by UOP) approved by UAPP while request #77 holds the lock: it waits."""
    ran, checked = [], []
    runtime = _runtime(make_runtime, database_url, ran, checked)
    _hold(runtime)
    run(runtime, "UOP", "/flip x")
    run(runtime, "UAPP", "/approvals approve 1")
    _runs(runtime)
    assert _job(runtime).state == "waiting"
    return runtime, ran, checked


def test_an_approval_while_another_change_runs_waits_says_for_what_and_runs_once_checked_again(make_runtime, database_url):
    ran, checked = [], []
    runtime = _runtime(make_runtime, database_url, ran, checked)
    _hold(runtime)
    assert run(runtime, "UOP", "/flip x").text.startswith("Request #1: `/flip x` needs a second person's approval")
    assert checked == ["x"]
    approved = run(runtime, "UAPP", "/approvals approve 1")
    assert approved.text == (
        "You approved request #1; it waits for `/restore 12` (request #77, asked by <@UOTHER>) to finish, then runs; "
        "/approvals shows where it stands."
    )
    (waiting,) = _runs(runtime)
    assert waiting.startswith(
        "Request #1: ⏳ Approved by <@UAPP>; waiting for `/restore 12` (request #77, asked by <@UOTHER>) to finish, "
        "then it is checked again and runs; it expires if it has not started by "
    ) and waiting.endswith(", and <@UOP> may cancel it."), waiting
    job = _job(runtime)
    assert (job.state, job.holder, job.approver, job.waits_on) == ("waiting", None, "UAPP", runtime.stack_name)
    assert ran == [] and _runs(runtime) == [], "a waiting request is held by nobody and runs nowhere"
    listed = run(runtime, "UOP", "/approvals").text
    assert listed.startswith("#1 `/flip x` asked by <@UOP>, approved by <@UAPP>, waiting for the change before it to finish (expires ")
    # A change needing no second person, typed meanwhile, is still refused at once: only approved requests wait.
    refused = run(runtime, "UADMIN", '/flip y --break-glass "site down"').text
    assert refused.startswith("/flip was not run: `/restore 12` (request #77, asked by <@UOTHER>) has been changing")
    assert refused.endswith("; try again when it has finished.")

    runtime.locks.release(OTHER)
    assert (_job(runtime).state, _lock(runtime)) == ("queued", 1), "the lock went straight to the waiting request"
    assert _runs(runtime) == ["flipped x"] and ran == ["x"]
    assert checked == ["x", "y", "x"], "its check ran again when it ran (y: the break-glass refused)"
    assert _runs(runtime) == [] and ran == ["x"], "once"
    assert (_job(runtime).state, _lock(runtime)) == ("succeeded", None)
    steps = [(user, outcome) for user, outcome, _error in _steps(runtime)]
    assert steps == [("UOP", "requested"), ("UAPP", "approved"), ("UOP", "waiting"), ("UOP", "allowed"), ("UOP", "succeeded")]


def test_a_waiting_request_whose_check_fails_when_its_turn_comes_is_refused_with_its_sentence(make_runtime, database_url):
    ran, checked, broken = [], [], set()
    runtime = _runtime(make_runtime, database_url, ran, checked, broken)
    _hold(runtime)
    run(runtime, "UOP", "/flip x")
    run(runtime, "UOP2", "/flip y")
    run(runtime, "UAPP", "/approvals approve 1")
    run(runtime, "UAPP", "/approvals approve 2")
    _runs(runtime)
    assert [_job(runtime, 1).state, _job(runtime, 2).state] == ["waiting", "waiting"]
    broken.add("x")  # the stack changed while it waited
    runtime.locks.release(OTHER)
    sentence = "x is gone from the stack; ask again for a target that is there."
    assert _runs(runtime) == [sentence, "flipped y"], "refused, and the lock went on to the next one"
    assert ran == ["y"]
    job = _job(runtime, 1)
    assert (job.state, job.result) == ("refused", sentence)
    assert ("UOP", "rejected", sentence) in _steps(runtime, 1)
    assert _lock(runtime) is None


def test_waiting_requests_run_one_at_a_time_in_the_order_they_were_approved(make_runtime, database_url):
    ran, checked = [], []
    runtime = _runtime(make_runtime, database_url, ran, checked)
    _hold(runtime)
    for user, target in (("UOP", "first-asked"), ("UOP2", "second-asked"), ("UOP", "third-asked")):
        run(runtime, user, f"/flip {target}")
    for job_id in (3, 1, 2):
        run(runtime, "UAPP", f"/approvals approve {job_id}")
    _runs(runtime)
    order = []

    def flip(ctx, args):  # each run, while it runs, holds the lock and the others still wait
        order.append((args.target, _lock(runtime), sorted(j.id for j in runtime.jobs.waiting())))
        return Reply("flipped")

    runtime.commands["flip"] = Command("flip", "", "", FlipArgs, Role.operator, flip, True, True)
    runtime.locks.release(OTHER)
    _runs(runtime)
    assert order == [("third-asked", 3, [1, 2]), ("first-asked", 1, [2]), ("second-asked", 2, [])]


def test_two_runners_on_one_store_run_a_request_that_waited_once(make_runtime, database_url):
    first, ran, _checked = _waiting(make_runtime, database_url)
    second = make_runtime(database_url=database_url, admins=["UADMIN"])
    second.commands = first.commands
    first.locks.release(OTHER)
    start = threading.Barrier(2)
    results = []

    def runner(runtime):
        start.wait()
        results.extend(_runs(runtime))
        runtime.locks.hand_over_free()  # each one's sweep too
        results.extend(_runs(runtime))

    threads = [threading.Thread(target=runner, args=(runtime,)) for runtime in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["flipped x"] and ran == ["x"]


def test_a_request_waiting_through_a_restart_of_the_bot_runs_after_it(make_runtime, database_url):
    before, ran, checked = _waiting(make_runtime, database_url)
    before.close()  # the bot stops while it waits: no process holds it
    with before.store.session.begin() as session:  # meanwhile the other change's holder crashed: its lock expired
        session.get(ChangeLock, before.stack_name).expires_at = utcnow()
    after = _runtime(make_runtime, database_url, ran, checked)
    assert _job(after).state == "waiting" and _runs(after) == []
    sweep = Runner(after, None)._sweep  # every runner sweeps every couple of seconds
    sweep()
    assert _runs(after) == ["flipped x"] and ran == ["x"]
    sweep()
    assert _runs(after) == [] and ran == ["x"]


def test_the_requester_cancels_a_waiting_request_and_it_never_runs(make_runtime, database_url):
    runtime, ran, _checked = _waiting(make_runtime, database_url)
    assert run(runtime, "UAPP", "/approvals cancel 1").text == (
        "Only <@UOP>, who asked for request #1, may cancel it; an approver may deny it."
    )
    assert run(runtime, "UOP", "/approvals cancel 1").text == "You cancelled request #1; nothing ran."
    runtime.locks.release(OTHER)
    assert _runs(runtime) == [] and ran == [] and _lock(runtime) is None
    job = _job(runtime)
    assert (job.state, job.approver) == ("cancelled", "UAPP"), "who approved it stays on the row"


def test_a_request_that_waits_too_long_expires_and_says_so(make_runtime, database_url):
    runtime, ran, _checked = _waiting(make_runtime, database_url)
    with runtime.store.session.begin() as session:  # an hour later
        session.get(Job, 1).expires_at = utcnow()
    (expired,) = runtime.approvals.expire_due()
    assert expired.state == "expired"
    runtime.locks.release(OTHER)
    assert _runs(runtime) == [] and ran == []
    assert run(runtime, "UAPP", "/approvals approve 1").text.startswith("Request #1 expired at ")


def test_a_waiting_request_s_message_in_slack_says_what_it_waits_for_and_keeps_only_cancel(make_runtime, slack_double):
    from bot.adapters.slack.client import SlackNotifier, web_client

    runtime = make_runtime(admins=["UA"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test-token")
    client = web_client(runtime.settings)
    runtime.notifier = SlackNotifier(client)
    runtime.commands = {**runtime.commands, "flip": Command("flip", "", "/flip TARGET", FlipArgs, Role.operator,
                                                            lambda ctx, args: Reply("flipped"), True, True)}
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    _hold(runtime)
    runtime.pipeline.dispatch(Invocation("UOP", "flip", "x", "C0OPS", "slack"))
    runtime.pipeline.dispatch(Invocation("UAPP", "approvals", "approve 1", "C0OPS", "slack"))
    runner = Runner(runtime, client)

    def process():
        runner.free.acquire()
        runner._process(runtime.jobs.claim_next(runtime.holder, source="slack"))

    process()
    (message,) = [m for m in slack_double.messages("C0OPS") if m["text"].startswith("Request #1: ")]
    shown = str(message["blocks"])
    assert "⏳ Approved by <@UAPP>; waiting for `/restore 12` (request #77, asked by <@UOTHER>) to finish" in shown
    assert "approval_cancel" in shown and "approval_approve" not in shown, "only its requester's Cancel is left"
    runtime.locks.release(OTHER)
    process()
    (message,) = [m for m in slack_double.messages("C0OPS") if m["text"].startswith("Request #1: ")]
    assert "✅ Done (approved by <@UAPP>)" in str(message["blocks"]) and "approval_cancel" not in str(message["blocks"])


def test_a_console_runs_the_waiting_request_at_its_next_command_once_the_lock_s_crashed_holder_lets_it_go(make_runtime, database_url):
    import io

    from bot.adapters.console import run_console

    runtime, ran, _checked = _waiting(make_runtime, database_url)
    with runtime.store.session.begin() as session:  # the console that held it was killed: its lock ran out
        session.get(ChangeLock, runtime.stack_name).expires_at = utcnow()
    typed = io.StringIO()
    run_console(runtime, "UOP", "C1", stdin=io.StringIO("/whoami\n"), stdout=typed)
    assert ran == ["x"] and "flipped x" in typed.getvalue()
    assert _job(runtime).state == "succeeded" and _lock(runtime) is None
