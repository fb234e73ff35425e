"""Approval policies in Slack: signed commands and clicks through Bolt and the runner processes, the request's message
in the Web API double, Slack user groups from the double (usergroups.users.list). The request is a new admin
(`/role grant U… admin`): no Docker needed, and its own rule (a second admin approves) applies on top of the policy.
/restart under policies, on a stack in memory, is in tests/bot/test_approval_policies.py."""

import pytest
from sqlalchemy import select

from bot.approvals.model import ApprovalVote
from bot.approvals.service import APPROVE, CANCEL, DENY
from bot.frame.config import StackConfig
from bot.frame.roles import Role
from bot.jobs.model import Job
from tests.bot.test_slack_approvals import CHANNEL, _buttons, _request_message, _wait_message
from tests.conftest import grant

DBA = "S0DBA"


@pytest.fixture
def policy_bot(slack_bot):
    """A Slack bot whose stack file asks two admins for a new admin, one of them a member of the user group."""

    def start(groups=(DBA,)):
        policy = {"command": "role", "when": {"action": ["grant"], "role": ["admin"]}, "approvals": 2, "groups": list(groups)}
        bot = slack_bot(StackConfig.model_validate({"approvals": {"policy": [policy]}}), admins=["U0ADMIN"])
        for admin in ("U0ADM2", "U0ADM3", "U0DBA"):
            grant(bot[1], admin, Role.admin)
        grant(bot[1], "U0APP", Role.approver)
        return bot

    return start


def _click(sender, slack_double, user, ts, verb=APPROVE) -> str:
    assert sender.click(verb, "1", user, CHANNEL, ts, slack_double.response_url(f"{user}-{ts}-{verb}")).status == 200
    (answer,) = slack_double.wait_for_response(f"{user}-{ts}-{verb}", timeout=20)
    return answer["text"]


def _votes(runtime) -> list[str]:
    with runtime.store.session() as session:
        return list(session.scalars(select(ApprovalVote.user_id).where(ApprovalVote.job_id == 1).order_by(ApprovalVote.id)))


def _ask(sender, slack_double) -> str:
    sender.slash("/role", "grant U0NEW admin", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("ask"))
    (told,) = slack_double.wait_for_response("ask", timeout=20)
    return told["text"]


def test_two_approvers_of_whom_one_is_in_the_group_the_message_saying_what_is_still_needed(policy_bot, slack_double):
    slack_double.set_usergroup(DBA, ["U0DBA", "U0OTHER"])
    sender, runtime = policy_bot()
    assert _ask(sender, slack_double).startswith(
        f"Request #1: `/role grant U0NEW admin` needs 2 approvals, at least one from a member of <!subteam^{DBA}> (until "
    )
    message = _request_message(slack_double)
    assert f"Needs 2 approvals: none so far; still 2, at least one from a member of <!subteam^{DBA}>." in str(message["blocks"])
    assert _buttons(message) == {APPROVE: "1", DENY: "1", CANCEL: "1"}
    ts = message["ts"]

    # The command's own rule still applies on top: a new admin needs admins to approve it.
    assert _click(sender, slack_double, "U0APP", ts) == (
        "You cannot approve request #1: granting admin needs a second admin, and you have approver."
    )
    said = _click(sender, slack_double, "U0ADM2", ts)
    assert said == f"You approved request #1; it still needs 1 more approval, from a member of <!subteam^{DBA}>."
    _wait_message(slack_double, ts, f"Needs 2 approvals: 1 so far (<@U0ADM2>); still 1, from a member of <!subteam^{DBA}>.")
    # The quorum is there, but nobody of the group: a non-member's approval counts and one from the group is still needed.
    said = _click(sender, slack_double, "U0ADM3", ts)
    assert said == f"You approved request #1; it still needs 1 more approval, from a member of <!subteam^{DBA}>."
    _wait_message(slack_double, ts, f"Needs 2 approvals: 2 so far (<@U0ADM2>, <@U0ADM3>); still 1, from a member of <!subteam^{DBA}>.")
    assert runtime.jobs.get(1).state == "pending_approval" and runtime.authz.role_of("U0NEW") is None

    assert _click(sender, slack_double, "U0DBA", ts) == "You approved request #1; it runs now."
    done = _wait_message(slack_double, ts, "✅ Done")
    assert _buttons(done) == {}
    updates = [str(c.params.get("blocks")) for c in slack_double.calls_to("chat.update") if c.params.get("ts") == ts]
    assert any("Approved by <@U0ADM2> and <@U0ADM3> and <@U0DBA>; starting" in u for u in updates)
    assert runtime.authz.role_of("U0NEW") is Role.admin
    assert _votes(runtime) == ["U0ADM2", "U0ADM3", "U0DBA"]


def test_a_group_lookup_that_fails_refuses_the_click_and_records_nothing(policy_bot, slack_double):
    sender, runtime = policy_bot(groups=("S0GONE",))  # the double knows no such group: usergroups.users.list fails
    _ask(sender, slack_double)
    ts = _request_message(slack_double)["ts"]
    assert _click(sender, slack_double, "U0ADM2", ts) == (
        "Your approval of request #1 was not recorded: Slack's member list of <!subteam^S0GONE> could not be read; "
        "try again in a minute."
    )
    assert _votes(runtime) == [] and runtime.jobs.get(1).state == "pending_approval"


def test_a_deny_by_a_group_outsider_wins_after_an_approval(policy_bot, slack_double):
    slack_double.set_usergroup(DBA, ["U0DBA"])
    sender, runtime = policy_bot()
    _ask(sender, slack_double)
    ts = _request_message(slack_double)["ts"]
    assert _click(sender, slack_double, "U0DBA", ts) == "You approved request #1; it still needs 1 more approval."
    assert _click(sender, slack_double, "U0ADM2", ts, DENY) == "You denied request #1; nothing ran."
    assert _click(sender, slack_double, "U0ADM3", ts).startswith("Request #1 was denied by <@U0ADM2> at ")
    _wait_message(slack_double, ts, "⛔ Denied by <@U0ADM2>; nothing ran.")
    with runtime.store.session() as session:
        assert session.get(Job, 1).state == "denied"
    assert runtime.authz.role_of("U0NEW") is None
