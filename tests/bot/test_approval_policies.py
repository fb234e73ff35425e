"""Approval policies of the stack file in the console's path (a stack in memory, tests/fakes.py), on SQLite and
PostgreSQL: a quorum of distinct approvers, a least role, a reason, a deny that wins, expiry and a restart of the
bot between two approvals, and /policy's words. The Slack side (user groups, the request's message) is in
tests/bot/test_slack_approval_policies.py.
"""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from bot.adapters.console import run_approved
from bot.approvals.model import ApprovalVote
from bot.frame.config import ConfigError, StackConfig
from bot.frame.roles import Role
from bot.jobs.model import Job
from bot.store.engine import AuditEntry, utcnow
from tests.conftest import grant, run
from tests.fakes import FakeStack

SERVICES = ["backend", "postgres", "python-worker", "redis"]
POLICIES = [
    {"command": "restart", "when": {"services": ["postgres"]}, "approvals": 2, "reason": True},
    {"command": "restart", "when": {"services": ["python-worker"]}, "approvals": 0},
    {"command": "restart", "when": {"services": ["redis"]}, "approver_role": "operator"},
]


def _config(policies) -> StackConfig:
    return StackConfig.model_validate({"approvals": {"policy": policies}})


@pytest.fixture
def make_bot(make_runtime):
    """A runtime whose stack file has these policies, its Compose in memory; the same store each time it is called
    with the same database: a second call is the bot started again."""
    stacks = []

    def build(database_url, policies=POLICIES, **settings):
        config = _config(policies)
        runtime = make_runtime(config, database_url=database_url, admins=["UADMIN"], **settings)
        stack = FakeStack(SERVICES)
        stack.config = stack.config.model_copy(update={"approvals": config.approvals})
        runtime.stack = stack
        stacks.append(stack)
        grant(runtime, "UOP", Role.operator)
        grant(runtime, "UOP2", Role.operator)
        for approver in ("UA1", "UA2", "UA3"):
            grant(runtime, approver, Role.approver)
        return runtime

    yield build
    for stack in stacks:
        stack.pool.shutdown(wait=False)


def _click(runtime, user, verb, number=1) -> str:
    """What typing the decision in the console does: the decision, then whatever it approved runs there."""
    said = run(runtime, user, f"/approvals {verb} {number}").text
    list(run_approved(runtime, lambda _text: None))
    return said


def _job(runtime, job_id=1) -> Job:
    with runtime.store.session() as session:
        return session.get(Job, job_id)


def _restarts(runtime) -> list:
    return [call for call in runtime.stack.fake.calls if call[0] == "restart"]


ASK = '/restart postgres --reason "INC-7: connections stuck"'
STILL_ONE = "You approved request #1; it still needs 1 more approval."
RUNS = "You approved request #1; it runs now."


@pytest.mark.parametrize(
    "clicks,state,restarted",
    [
        pytest.param(  # quorum 2: the requester never counts, whatever they click
            [("UOP", "approve", "You asked for request #1, so a second person must approve it."),
             ("UA1", "approve", STILL_ONE),
             ("UOP", "approve", "You asked for request #1, so a second person must approve it."),
             ("UA2", "approve", RUNS)],
            "succeeded", 1, id="quorum-2-with-the-requester-clicking",
        ),
        pytest.param(  # one person counts once
            [("UA1", "approve", STILL_ONE),
             ("UA1", "approve", "You have already approved request #1; it still needs 1 more approval."),
             ("UA1", "approve", "You have already approved request #1; it still needs 1 more approval.")],
            "pending_approval", 0, id="the-same-approver-twice",
        ),
        pytest.param(  # a deny wins at once, and nothing after it counts
            [("UA1", "approve", STILL_ONE),
             ("UA2", "deny", "You denied request #1; nothing ran."),
             ("UA3", "approve", "Request #1 was denied by <@UA2> at ")],
            "denied", 0, id="a-deny-after-one-approve",
        ),
        pytest.param(  # an operator may not decide on a request whose rule asks for approvers
            [("UOP2", "approve", "To approve request #1 you need the approver role and you have operator."),
             ("UOP2", "deny", "To deny request #1 you need the approver role and you have operator."),
             ("UA1", "approve", STILL_ONE),
             ("UA3", "approve", RUNS),
             ("UA2", "approve", "Request #1 was approved by <@UA3> and has run; nothing changed.")],
            "succeeded", 1, id="only-the-policy-role-decides",
        ),
    ],
)
def test_a_quorum_of_two_distinct_approvers_click_by_click(make_bot, database_url, clicks, state, restarted):
    runtime = make_bot(database_url)
    asked = run(runtime, "UOP", ASK).text
    assert asked.startswith("Request #1: `/restart postgres` needs 2 approvals (until "), asked
    for user, verb, said in clicks:
        assert _click(runtime, user, verb).startswith(said), (user, verb)
    assert _job(runtime).state == state
    assert len(_restarts(runtime)) == restarted and _restarts(runtime)[:1] in ([], [("restart", ("postgres",))])


def test_two_last_approvers_at_once_run_it_once(make_bot, database_url):
    runtime = make_bot(database_url)
    run(runtime, "UOP", ASK)
    assert _click(runtime, "UA1", "approve") == STILL_ONE
    start, said = threading.Barrier(2), []

    def approve(user):
        start.wait()
        said.append(run(runtime, user, "/approvals approve 1").text)

    threads = [threading.Thread(target=approve, args=(user,)) for user in ("UA2", "UA3")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    list(run_approved(runtime, lambda _text: None))
    assert sorted(said)[1] == RUNS and sorted(said)[0].startswith("Request #1 was already approved by <@UA"), said
    assert _restarts(runtime) == [("restart", ("postgres",))] and _job(runtime).state == "succeeded"


def test_approvals_shows_what_a_request_still_needs_and_its_reason(make_bot, database_url):
    runtime = make_bot(database_url)
    run(runtime, "UOP", ASK)
    listed = run(runtime, "UA3", "/approvals").text.splitlines()
    assert listed[1:3] == ["    *Reason:* INC-7: connections stuck", "    Needs 2 approvals: none so far; still 2."]
    _click(runtime, "UA1", "approve")
    listed = run(runtime, "UA3", "/approvals").text.splitlines()
    assert listed[2] == "    Needs 2 approvals: 1 so far (<@UA1>); still 1."


def test_a_vote_of_an_expired_request_never_counts(make_bot, database_url):
    runtime = make_bot(database_url)
    run(runtime, "UOP", ASK)
    assert _click(runtime, "UA1", "approve") == STILL_ONE
    with runtime.store.session.begin() as session:  # its time runs out between the two approvals
        session.execute(update(Job).where(Job.id == 1).values(expires_at=utcnow() - timedelta(seconds=1)))
    said = _click(runtime, "UA2", "approve")
    assert said.startswith("Request #1 expired at ") and said.endswith("; nothing changed. Ask again if it is still needed.")
    assert _job(runtime).state == "expired" and _restarts(runtime) == []
    with runtime.store.session() as session:
        assert session.scalars(select(ApprovalVote.user_id).where(ApprovalVote.job_id == 1)).all() == ["UA1"]


def test_a_quorum_survives_a_restart_of_the_bot_and_a_stack_file_edit_between_two_approvals(make_bot, postgres_url):
    before = make_bot(postgres_url)
    run(before, "UOP", ASK)
    assert _click(before, "UA1", "approve") == STILL_ONE
    before.close()
    # Started again with a stricter file: the waiting request keeps the rule it was asked under.
    after = make_bot(postgres_url, policies=[{"command": "restart", "approvals": 3}])
    assert _click(after, "UA1", "approve") == "You have already approved request #1; it still needs 1 more approval."
    assert _click(after, "UA2", "approve") == RUNS
    assert _job(after).state == "succeeded" and _restarts(after) == [("restart", ("postgres",))]
    assert run(after, "UOP", '/restart backend').text.startswith("Request #2: `/restart backend` needs 3 approvals (until ")


def test_no_approval_runs_at_once_under_the_lock_and_a_lesser_role_may_approve_where_the_policy_says(make_bot, database_url):
    runtime = make_bot(database_url)
    said = run(runtime, "UOP", "/restart python-worker").text
    assert said.startswith("Restarted\n🟢 *python-worker* is healthy again after "), said
    job = _job(runtime)
    assert (job.state, job.policy["approvals"], job.policy["source"]) == (
        "succeeded", 0, "policy 2 of the stack file (/restart when services is python-worker)"
    )
    assert run(runtime, "UOP", "/restart redis").text.startswith("Request #2: `/restart redis` needs 1 approval (until ")
    assert _click(runtime, "UOP2", "approve", 2) == "You approved request #2; it runs now."
    assert _restarts(runtime) == [("restart", ("python-worker",)), ("restart", ("redis",))]
    # No policy matches /restart backend: the command's own rule, worded as before.
    assert run(runtime, "UOP", "/restart backend").text.startswith("Request #3: `/restart backend` needs a second person's approval")
    assert _job(runtime, 3).policy["source"] == "/restart's own rule (no policy of the stack file matches)"


def test_a_policy_that_asks_for_a_reason_refuses_a_request_without_one_and_keeps_and_audits_it(make_bot, database_url):
    runtime = make_bot(database_url)
    said = run(runtime, "UOP", "/restart postgres").text
    assert said == '`/restart postgres` needs a reason: add --reason "TEXT" (why, or a ticket) and ask again; /policy restart shows its rule.'
    assert run(runtime, "UOP", "/restart postgres --reason").text.startswith('--reason needs the reason in quotes, such as --reason "')
    assert runtime.jobs.pending() == [] and _restarts(runtime) == []
    run(runtime, "UOP", '/restart postgres --reason "INC-9 pool full, token xoxb-123456789012-abcdefghijkl"')
    job = _job(runtime)
    assert job.reason.startswith("INC-9 pool full, token ") and "abcdefghijkl" not in job.reason, "redacted like any text"
    with runtime.store.session() as session:
        requested = session.scalars(select(AuditEntry).where(AuditEntry.job_id == job.id, AuditEntry.outcome == "requested")).one()
    assert requested.details == {"reason": job.reason}
    assert f"→ requested (0 ms) (reason: {job.reason}) [request #1]" in run(runtime, "UADMIN", "/audit 5").text


@pytest.mark.parametrize(
    "policy,error",
    [
        ({"command": "restar"}, "approvals.policy.0.command: there is no /restar command"),
        ({"command": "restart", "when": {"service": ["postgres"]}},
         "approvals.policy.0.when: /restart has no argument 'service' (its arguments: services)"),
        ({"command": "role", "when": {"role": ["admin"]}, "approvals": 0},
         "approvals.policy.0.approvals: /role checks who may approve it, so no policy may let it run without approval"),
    ],
)
def test_a_policy_naming_an_unknown_command_or_argument_or_skipping_a_second_admin_stops_the_bot_at_start(make_runtime, policy, error):
    with pytest.raises(ConfigError) as refused:
        make_runtime(_config([policy]))
    assert str(refused.value) == f"stack file (defaults): {error}"


def test_policy_explains_what_each_command_needs_in_words(make_runtime):
    config = _config([
        {"command": "restart", "when": {"services": ["postgres"]}, "approvals": 2, "groups": ["S0DBA"], "reason": True},
        {"command": "restart", "when": {"services": ["python-worker"]}, "approvals": 0},
    ])
    runtime = make_runtime(config, admins=["UADMIN"])
    grant(runtime, "UVIEW", Role.viewer)
    lines = run(runtime, "UVIEW", "/policy").text.splitlines()
    assert (
        "• `/restart`: when services is postgres: 2 approvals from people with the approver role or higher (never the "
        "requester), at least one of them a member of <!subteam^S0DBA>, and a reason on the request (--reason \"TEXT\"); "
        "when services is python-worker: no approval: it runs at once; otherwise: 1 approval from someone with the "
        "approver role or higher (never the requester) (its own rule)"
    ) in lines
    assert "• `/restore`: 1 approval from someone with the approver role or higher (never the requester) (its own rule)" in lines
    assert not any(line.startswith("• `/logs`") for line in lines), "only what needs approval"
    assert run(runtime, "UVIEW", "/policy /restart").text.splitlines() == [
        "*/restart* (anyone with the operator role or higher may ask for it)",
        "The first policy of the stack file that matches a request decides what it needs (numbered as in the file):",
        "1. when services is postgres: 2 approvals from people with the approver role or higher (never the requester), "
        "at least one of them a member of <!subteam^S0DBA>, and a reason on the request (--reason \"TEXT\").",
        "2. when services is python-worker: no approval: it runs at once.",
        "When no policy matches: 1 approval from someone with the approver role or higher (never the requester) (its own rule).",
        'An admin may run it at once with --break-glass "REASON", said loudly in the channel and the audit.',
    ]
    assert run(runtime, "UVIEW", "/policy logs").text.splitlines()[1] == (
        "No policy of the stack file names it, so its own rule applies: no approval: it runs at once for anyone with its role (its own rule)."
    )
    assert run(runtime, "UVIEW", "/policy nosuch").text == "There is no /nosuch command; /policy alone lists the commands that need approval."
