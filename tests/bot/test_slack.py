"""Bolt receives slash commands signed exactly as Slack signs them; replies reach the Web API double."""

import time

from bot.store.engine import AuditEntry
from tests.loopback import StatusServer
from tests.waiting import eventually
from bot.frame.config import StackConfig
from bot.frame.roles import Role


def _audit(runtime):
    with runtime.store.session() as session:
        return [(row.user_id, row.command, row.outcome) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


def _audit_after_reply(runtime):
    """The audit once the job has ended: a question's outcome row is written just after its reply went out."""
    return eventually(lambda: (rows := _audit(runtime))[-1][2] != "allowed" and rows, "the question's outcome row")


def test_a_signed_health_is_acked_at_once_and_answered_in_the_channel(slack_bot, slack_double):
    with StatusServer(200) as frontend, StatusServer(500) as backend:
        stack = StackConfig(
            probes=[
                {"name": "frontend", "kind": "http", "url": frontend.url},
                {"name": "backend", "kind": "http", "url": backend.url},
            ],
        )
        sender, runtime = slack_bot(stack, admins=["U0ONCALL"])
        ack = sender.slash("/health", "", "U0ONCALL", response_url=slack_double.response_url("health"))
        assert ack.status == 200 and ack.body == ""
        assert ack.elapsed < 3.0, "Slack shows a timeout after 3 s"
        (reply,) = slack_double.wait_for_response("health")
    assert reply["response_type"] == "in_channel"
    assert "🔴 *backend*: answered HTTP 500, expected 200" in reply["text"]
    assert reply["blocks"][0]["text"]["text"] == "Health"
    assert _audit_after_reply(runtime) == [("U0ONCALL", "health", "allowed"), ("U0ONCALL", "health", "succeeded")]


def test_bad_missing_and_stale_signatures_get_401_and_run_nothing(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    url = slack_double.response_url("x")
    assert sender.slash("/whoami", "", "U0ONCALL", response_url=url, sign_with="wrong-secret").status == 401
    assert sender.slash("/whoami", "", "U0ONCALL", response_url=url, unsigned=True).status == 401
    stale = int(time.time()) - 301
    assert sender.slash("/whoami", "", "U0ONCALL", response_url=url, timestamp=stale).status == 401
    assert sender.slash("/whoami", "", "U0ONCALL", response_url=url).status == 200  # the control
    slack_double.wait_for_response("x")
    time.sleep(0.2)  # give a wrongly accepted request time to show up
    assert len(slack_double.responses("x")) == 1
    assert _audit_after_reply(runtime) == [("U0ONCALL", "whoami", "allowed"), ("U0ONCALL", "whoami", "succeeded")]


def test_a_denial_goes_only_to_the_caller(slack_bot, slack_double):
    sender, runtime = slack_bot()
    sender.slash("/audit", "", "U0STRANGER", response_url=slack_double.response_url("denied"))
    (reply,) = slack_double.wait_for_response("denied")
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == "/audit needs the admin role and you have no role yet; ask an admin for one."


def test_a_mention_from_slack_grants_the_mentioned_user(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ADMIN"])
    sender.slash("/role", "grant <@U0NEWBIE|newbie> operator", "U0ADMIN", response_url=slack_double.response_url("g"))
    (reply,) = slack_double.wait_for_response("g")
    assert reply["text"] == "<@U0NEWBIE> now has the operator role."
    assert runtime.authz.role_of("U0NEWBIE") is Role.operator


def test_user_group_members_get_their_role_from_slack(slack_bot, slack_double):
    slack_double.set_usergroup("S0ONCALL", ["U0MEMBER"])
    sender, runtime = slack_bot(role_groups="S0ONCALL=approver")
    sender.slash("/whoami", "", "U0MEMBER", response_url=slack_double.response_url("me"))
    (reply,) = slack_double.wait_for_response("me")
    assert "with the approver role" in reply["text"]
    assert slack_double.calls_to("usergroups.users.list")[0].params["usergroup"] == "S0ONCALL"


def test_a_used_up_response_url_falls_back_to_an_ephemeral_post_even_when_rate_limited(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    slack_double.expire_response_url("old")
    slack_double.ratelimit_next("chat.postEphemeral", retry_after=0)
    sender.slash("/whoami", "", "U0ONCALL", channel_id="C0OPS", response_url=slack_double.response_url("old"))
    calls = slack_double.wait_for("chat.postEphemeral", count=2)
    assert calls[-1].params["user"] == "U0ONCALL" and calls[-1].params["channel"] == "C0OPS"
    assert "with the admin role" in calls[-1].params["text"]


def test_slow_commands_do_not_hold_up_the_acks_of_others(slack_bot, slack_double):
    """Bolt's listener pool has 5 threads; work runs on the bot's own pool, so acks never queue behind it."""
    from tests.loopback import SilentServer

    with SilentServer() as hung:
        url = f"http://127.0.0.1:{hung.port}/health"
        stack = StackConfig(probes=[{"name": "hung", "kind": "http", "url": url, "timeout": 5}])
        sender, runtime = slack_bot(stack, admins=["U0ONCALL"], runner_threads=7)
        for i in range(6):
            assert sender.slash("/health", "", "U0ONCALL", response_url=slack_double.response_url(f"h{i}")).status == 200
        ack = sender.slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("quick"))
        assert ack.status == 200 and ack.elapsed < 3.0, "Slack shows a timeout after 3 s"
        (reply,) = slack_double.wait_for_response("quick")
        assert slack_double.responses("h0") == [], "the quick reply came before the hung checks finished"
    assert "admin role" in reply["text"]


def test_an_unreachable_response_url_and_a_slack_5xx_still_deliver_the_reply(slack_bot, slack_double):
    from tests.loopback import SilentServer

    sender, runtime = slack_bot(admins=["U0ONCALL"])
    with SilentServer() as closed:
        port = closed.port
    # its port is closed now: nothing listens there
    slack_double.server_error_next("chat.postEphemeral", status=503)
    sender.slash("/whoami", "", "U0ONCALL", channel_id="C0OPS", response_url=f"http://127.0.0.1:{port}/hooks/x")
    calls = slack_double.wait_for("chat.postEphemeral", count=2, timeout=20)
    assert "with the admin role" in calls[-1].params["text"], "the retry after Slack's 503 delivered it"
    assert _audit_after_reply(runtime)[-1] == ("U0ONCALL", "whoami", "succeeded")


def test_with_its_database_down_the_bot_acks_with_one_sentence_and_an_error_id(slack_bot, slack_double, postgres_url):
    from tests.bot.test_dispatcher import _drop

    sender, runtime = slack_bot(admins=["U0ONCALL"], database_url=postgres_url)
    _drop(postgres_url)
    ack = sender.slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("down"))
    assert ack.status == 200
    assert ack.body.startswith("/whoami was not run: the bot's database is not answering (error id "), "Slack shows a plain-text ack to the caller"


def test_a_tampered_click_is_answered_at_once_even_when_its_reply_cannot_reach_its_response_url(slack_bot, slack_double):
    from bot.approvals.service import APPROVE
    from tests.loopback import SilentServer

    sender, runtime = slack_bot(admins=["U0ONCALL"])
    sender.timeout = 3.0  # as long as Slack waits for the answer
    with SilentServer() as hung:  # the response_url accepts and never answers
        ack = sender.click(APPROVE, "1 --break-glass x", "U0ONCALL", "C0OPS", "1700000000.000100",
                           f"http://127.0.0.1:{hung.port}/hooks/tampered")
        assert ack.status == 200, "answered before Slack gave up, whatever the reply's delivery does"
        (posted,) = slack_double.wait_for("chat.postEphemeral", count=1, timeout=30)
    assert posted.params["text"] == "That button does not belong to a request of this bot; nothing changed."
    assert _audit(runtime)[-1][1:] == ("approvals", "rejected")
