"""A request for approval when the bot's store blips right after its card was posted: the card's buttons already
work, so the request must not be reported failed to its requester, and its card must still be the one updated.

In this process (the runner's own code, as tests/bot/test_fault_matrix.py runs a change), with the Web API double."""

from sqlalchemy import select

from bot.adapters.slack.client import SlackNotifier, web_client
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.jobs.model import Job
from bot.jobs.runner import Runner
from bot.store.engine import AuditEntry
from tests.bot.test_slack_approvals import CHANNEL, _request_message, _wait_message
from tests.conftest import grant
from tests.faults import StoreLock, short_busy_timeout


def test_a_store_blip_right_after_the_card_is_posted_is_waited_out_and_the_card_is_updated(make_runtime, slack_double):
    runtime = make_runtime(admins=["U0ADMIN"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-request")
    client = web_client(runtime.settings)
    runtime.notifier = SlackNotifier(client)
    grant(runtime, "U0ADM2", Role.admin)
    short_busy_timeout(runtime)
    lock = StoreLock(runtime)  # 3 s: several of the store's busy timeouts
    runtime.fault = lambda point: lock() if point == "request:after_post" else None

    asked = runtime.pipeline.dispatch(Invocation("U0ADMIN", "role", "grant U0NEW admin", CHANNEL, "slack"))
    lock.join()
    assert asked.text.startswith("Request #1: `/role grant U0NEW admin` needs a second person's approval"), asked.text
    card = _request_message(slack_double)
    with runtime.store.session() as session:
        job = session.get(Job, 1)
        assert (job.state, job.message_ts) == ("pending_approval", card["ts"]), "pending, and where its card is was stored"
        rows = list(session.scalars(select(AuditEntry.outcome).where(AuditEntry.command == "role").order_by(AuditEntry.id)))
    assert rows == ["requested"]

    approved = runtime.pipeline.dispatch(Invocation("U0ADM2", "approvals", "approve 1", CHANNEL, "slack"))
    assert approved.text == "You approved request #1; it runs now.", approved.text
    runner = Runner(runtime, client)
    runner.free.acquire()
    runner._process(runtime.jobs.claim_next(runtime.holder, source="slack"))  # as a runner thread runs it
    _wait_message(slack_double, card["ts"], "✅ Done (approved by <@U0ADM2>)")
    assert runtime.authz.explain("U0NEW").role == Role.admin
