"""The follow-up of a request (bot/approvals/followup.py): reminders and escalation at test-clock times, each once, also
with two replicas on PostgreSQL; the requester told the outcome by direct message; a Slack failure changes nothing else.

The runtime talks to the Slack Web API double; time moves on the scheduler's clock the runner's sweep reads.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from pydantic import BaseModel
from sqlalchemy import update

from bot.adapters.slack.client import SlackNotifier, web_client
from bot.duties.service import Duties
from bot.frame.config import ApprovalsSection, StackConfig
from bot.frame.registry import Command, Invocation, Reply
from bot.frame.roles import Role
from bot.jobs.model import Job
from bot.jobs.runner import Runner
from bot.store.engine import AuditEntry, utcnow
from tests.conftest import grant
from tests.duties.conftest import ManualClock

CHANNEL = "C0OPS"
FOLLOW_UP = {
    "remind_after": "10m",
    "escalate_after": "30m",
    "escalate_to": "S0LEADS",
    "policy": [{"command": "flip", "when": {"target": ["db"]}, "groups": ["S0DBA"], "remind_after": "5m"}],
}


class FlipArgs(BaseModel):
    target: str


def _bot(make_runtime, slack_double, approvals=FOLLOW_UP, **settings):
    """A runtime on the Slack double with /flip (an operator command that needs approval), a runner and a test clock."""
    stack = StackConfig.model_validate({"approvals": {key: value for key, value in approvals.items() if key != "policy"}})
    settings = dict(admins=["UADMIN"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test-token", approval_minutes=120,
                    daily_report_at="off", backup_at="off", drill_at="off", watch_minutes=0, **settings)
    runtime = make_runtime(stack, **settings)
    client = web_client(runtime.settings)
    runtime.notifier, runtime.slack = SlackNotifier(client), client
    runtime.ran = []

    def flip(ctx, args):
        runtime.ran.append(args.target)
        return Reply(f"flipped {args.target}", in_channel=True, failed=args.target == "broken")

    runtime.commands = {**runtime.commands, "flip": Command("flip", "Flip.", "/flip TARGET", FlipArgs, Role.operator, flip, True, True)}
    # Its policy names /flip, which exists only now (a policy naming no command stops the bot at start).
    runtime.stack.config = runtime.stack.config.model_copy(update={"approvals": ApprovalsSection.model_validate(approvals)})
    for user in ("UOP", "UOP2"):
        grant(runtime, user, Role.operator)
    for user in ("UAPP", "UAPP2", "ULEAD"):
        grant(runtime, user, Role.approver)
    slack_double.set_usergroup("S0APPROVERS", ["UOP", "UAPP", "UAPP2"])  # the requester is in it: never reminded
    slack_double.set_usergroup("S0DBA", ["UAPP2"])
    slack_double.set_usergroup("S0LEADS", ["ULEAD", "UOP"])
    runtime.clock = ManualClock(utcnow())
    runtime.duties = Duties(runtime, runtime.clock)
    runtime.runner = Runner(runtime, client)
    return runtime


def _ask(runtime, user: str = "UOP", target: str = "switch", source: str = "slack") -> Job:
    runtime.pipeline.dispatch(Invocation(user, "flip", target, CHANNEL, source))
    with runtime.store.session() as session:
        return session.query(Job).order_by(Job.id.desc()).first()


def _sweep_at(runtime, moment) -> None:
    runtime.clock.at = moment
    runtime.runner._sweep()


def _decide(runtime, user: str, line: str) -> str:
    """A click: its reply, then whatever it queued runs as a runner runs it."""
    reply = runtime.pipeline.dispatch(Invocation(user, "approvals", line, CHANNEL, "slack")).text
    while (job := runtime.jobs.claim_next(runtime.runner.holder)) is not None:
        runtime.runner._run(job)
    return reply


def _dms(slack_double, since: int = 0) -> list[tuple[str, str]]:
    """Direct messages as their readers get them: (user, text), in order."""
    calls = slack_double.calls_to("chat.postMessage")[since:]
    return [(call.params["channel"][1:], call.params["text"]) for call in calls if str(call.params["channel"]).startswith("D")]


def _posts(slack_double) -> int:
    return len(slack_double.calls_to("chat.postMessage"))


def _message(slack_double, job: Job) -> str:
    return str(slack_double.message(CHANNEL, job.message_ts)["blocks"])


def _job(runtime, job_id: int) -> Job:
    return runtime.jobs.get(job_id)


def test_approvers_are_reminded_once_after_remind_after_then_the_next_group_once_after_escalate_after(make_runtime, slack_double):
    runtime = _bot(make_runtime, slack_double, approver_group="S0APPROVERS")
    job = _ask(runtime)
    assert job.state == "pending_approval" and job.message_ts, "the request is posted to the channel first"
    before = _posts(slack_double)

    _sweep_at(runtime, job.created_at + timedelta(minutes=9, seconds=59))
    assert _dms(slack_double, before) == [], "before remind_after nobody is reminded"

    _sweep_at(runtime, job.created_at + timedelta(minutes=10))
    reminded = _dms(slack_double, before)
    assert [user for user, _text in reminded] == ["UAPP", "UAPP2"], "each approver once; never the requester"
    assert reminded[0][1] == (
        f"⏰ Request #1 `/flip switch` (asked by <@UOP>) has waited 10 min for your approval; approve or deny it on its "
        f"message in <#{CHANNEL}>, or run /approvals approve 1 before {runtime.approvals.when(job.expires_at)}."
    )
    assert "⏰ Approvers reminded at " in _message(slack_double, job)
    _sweep_at(runtime, job.created_at + timedelta(minutes=20))
    assert len(_dms(slack_double, before)) == 2, "a second sweep sends nothing more"

    _sweep_at(runtime, job.created_at + timedelta(minutes=30))
    escalated = _dms(slack_double, before)[2:]
    assert [user for user, _text in escalated] == ["ULEAD"], "the escalation group's members, never the requester"
    assert escalated[0][1].startswith("📣 Request #1 `/flip switch` (asked by <@UOP>) has had no decision for 30 min, so it is "
                                      "escalated to you (<!subteam^S0LEADS>)")
    assert "📣 Escalated to <!subteam^S0LEADS> at " in _message(slack_double, job), "the request's message says so"
    assert "Approve" in _message(slack_double, job), "it still waits, with its buttons"
    _sweep_at(runtime, job.created_at + timedelta(hours=1))
    assert len(_dms(slack_double, before)) == 3, "each at most once"
    assert _job(runtime, 1).state == "pending_approval"

    assert _decide(runtime, "ULEAD", "approve 1") == "You approved request #1; it runs now."
    assert runtime.ran == ["switch"]


def test_a_policy_s_own_times_and_groups_decide_and_without_any_group_the_channel_is_told_in_the_thread(make_runtime, slack_double):
    runtime = _bot(make_runtime, slack_double)  # no FLOWSTATE_APPROVER_GROUP
    db = _ask(runtime, target="db")  # the policy: S0DBA, reminded after 5m
    plain = _ask(runtime, target="switch")  # no policy, no group: the section's 10m, in the thread
    before = _posts(slack_double)
    _sweep_at(runtime, db.created_at + timedelta(minutes=5))
    assert [user for user, _text in _dms(slack_double, before)] == ["UAPP2"]
    assert not slack_double.calls_to("chat.postMessage")[before:][1:], "the other request is not due yet"

    _sweep_at(runtime, plain.created_at + timedelta(minutes=10))
    (reply,) = [c.params for c in slack_double.calls_to("chat.postMessage")[before:] if c.params.get("thread_ts")]
    assert (reply["channel"], reply["thread_ts"]) == (CHANNEL, plain.message_ts)
    assert reply["text"] == (
        f"⏰ Request #2 has waited 10 min without a decision: someone with the approver role is needed to approve or deny it "
        f"before {runtime.approvals.when(plain.expires_at)}."
    )
    _sweep_at(runtime, plain.created_at + timedelta(minutes=11))
    assert len([c for c in slack_double.calls_to("chat.postMessage")[before:] if c.params.get("thread_ts")]) == 1


def test_two_replicas_sweeping_at_once_send_each_reminder_and_escalation_once(make_runtime, slack_double, postgres_url):
    replicas = [_bot(make_runtime, slack_double, approver_group="S0APPROVERS", database_url=postgres_url) for _ in range(2)]
    jobs = [_ask(replicas[0]) for _ in range(3)]
    before = _posts(slack_double)
    late = jobs[-1].created_at + timedelta(minutes=31)  # reminders and escalation both due
    start = threading.Barrier(len(replicas))

    def sweep(runtime):
        start.wait()
        _sweep_at(runtime, late)

    threads = [threading.Thread(target=sweep, args=(runtime,)) for runtime in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sent = sorted((user, text.split(" `")[0]) for user, text in _dms(slack_double, before))
    assert sent == sorted(
        [(user, f"⏰ Request #{job.id}") for job in jobs for user in ("UAPP", "UAPP2")]
        + [("ULEAD", f"📣 Request #{job.id}") for job in jobs]
    ), "every approver reminded once and the lead asked once per request, by whichever replica won"


def test_the_requester_is_told_by_direct_message_when_approved_and_how_the_run_ended(make_runtime, slack_double):
    runtime = _bot(make_runtime, slack_double)
    _ask(runtime)
    before = _posts(slack_double)
    _decide(runtime, "UAPP", "approve 1")
    assert _dms(slack_double, before) == [
        ("UOP", "✅ Your request #1 `/flip switch` was approved by <@UAPP>; it runs now, and you will get its result here."),
        ("UOP", f"🟢 Your request #1 `/flip switch` (approved by <@UAPP>) has run and succeeded; its message in <#{CHANNEL}> has the details."),
    ]
    _ask(runtime, target="broken")
    before = _posts(slack_double)
    _decide(runtime, "UAPP", "approve 2")
    assert _dms(slack_double, before)[-1] == (
        "UOP", f"🔴 Your request #2 `/flip broken` (approved by <@UAPP>) has run and failed; its message in <#{CHANNEL}> has the details."
    )
    with runtime.store.session() as session:
        posted = session.query(AuditEntry).filter(AuditEntry.job_id == 1, AuditEntry.outcome == "requested").one().details
    assert posted == {"message": {"channel": CHANNEL, "ts": _job(runtime, 1).message_ts}}, "where the request was posted"


def test_the_requester_is_told_of_a_deny_and_an_expiry_and_a_console_requester_gets_nothing(make_runtime, slack_double):
    runtime = _bot(make_runtime, slack_double)
    _ask(runtime)
    _ask(runtime, target="later")
    _ask(runtime, target="console", source="console")
    before = _posts(slack_double)
    assert _decide(runtime, "UAPP", "deny 1") == "You denied request #1; nothing ran."
    with runtime.store.session.begin() as session:  # its time is up
        session.execute(update(Job).where(Job.id.in_([2, 3])).values(expires_at=utcnow() - timedelta(seconds=1)))
    runtime.runner._sweep()
    assert _dms(slack_double, before) == [
        ("UOP", "⛔ Your request #1 `/flip switch` was denied by <@UAPP>, so nothing ran; ask again if it is still needed."),
        ("UOP", f"⌛ Your request #2 `/flip later` expired at {runtime.approvals.when(_job(runtime, 2).expires_at)} without a "
                "decision, so nothing ran; ask again if it is still needed."),
    ], "nothing for the console's request"
    assert (_job(runtime, 2).state, _job(runtime, 3).state) == ("expired", "expired") and runtime.ran == []


def test_a_slack_error_on_a_direct_message_leaves_the_decision_the_run_and_the_reminders_intact(make_runtime, slack_double):
    runtime = _bot(make_runtime, slack_double, approver_group="S0APPROVERS")
    job = _ask(runtime)
    before = _posts(slack_double)
    slack_double.fail_next("conversations.open", "user_not_found")  # UAPP's reminder
    _sweep_at(runtime, job.created_at + timedelta(minutes=10))
    assert [user for user, _text in _dms(slack_double, before)] == ["UAPP2"], "the next approver is still reminded"
    assert _job(runtime, 1).reminded_at is not None and _job(runtime, 1).state == "pending_approval"
    _sweep_at(runtime, job.created_at + timedelta(minutes=11))
    assert [user for user, _text in _dms(slack_double, before)] == ["UAPP2"], "a failed reminder is not sent again"

    slack_double.fail_next("conversations.open", "user_not_found", times=2)  # the approval's and the result's messages
    assert _decide(runtime, "UAPP", "approve 1") == "You approved request #1; it runs now."
    assert runtime.ran == ["switch"] and _job(runtime, 1).state == "succeeded"
    assert "✅ Done (approved by <@UAPP>)" in _message(slack_double, job)
    assert _dms(slack_double, before) == [("UAPP2", _dms(slack_double, before)[0][1])], "nothing reached the requester, and nothing broke"


def test_in_slack_the_runner_processes_remind_once_and_the_requester_hears_the_approval_and_the_result(slack_bot, slack_double):
    """The bot as it runs in Slack: signed requests and clicks, runner processes sweeping on the real clock."""
    from bot.approvals.service import APPROVE

    stack = StackConfig.model_validate({"approvals": {"remind_after": "1s"}})
    sender, runtime = slack_bot(stack, admins=["U0ADMIN", "U0ADMIN2"], approver_group="S0ADMINS", runner_processes=2)
    slack_double.set_usergroup("S0ADMINS", ["U0ADMIN", "U0ADMIN2"])
    assert sender.slash("/role", "grant U0OP admin", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("ask")).status == 200
    (reminder,) = slack_double.wait_for("chat.postMessage", timeout=30, predicate=lambda c: c.params.get("channel") == "DU0ADMIN2")
    assert reminder.params["text"].startswith("⏰ Request #1 `/role grant U0OP admin` (asked by <@U0ADMIN>) has waited 1 s for your approval")
    ts = _job(runtime, 1).message_ts
    assert sender.click(APPROVE, "1", "U0ADMIN2", CHANNEL, ts, slack_double.response_url("approve")).status == 200
    told = slack_double.wait_for("chat.postMessage", count=2, timeout=30, predicate=lambda c: c.params.get("channel") == "DU0ADMIN")
    assert [call.params["text"] for call in told] == [
        "✅ Your request #1 `/role grant U0OP admin` was approved by <@U0ADMIN2>; it runs now, and you will get its result here.",
        f"🟢 Your request #1 `/role grant U0OP admin` (approved by <@U0ADMIN2>) has run and succeeded; its message in <#{CHANNEL}> has the details.",
    ]
    assert len([c for c in slack_double.calls_to("chat.postMessage") if c.params.get("channel") == "DU0ADMIN2"]) == 1, "reminded once"
