"""A reply is not dropped while Slack only asks to wait: rate limits are waited out as Retry-After says and
Slack's 5xx backed off, within a bounded time; a reply that still cannot be delivered is an audit row
(`undelivered`, with its job), never silence, and never the response_url that carries the right to post."""

import pytest

from bot.store.engine import AuditEntry


def _rows(runtime):
    with runtime.store.session() as session:
        return [(row.command, row.outcome, row.error, row.job_id) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


def _whoami_on_a_used_up_url(sender, slack_double):
    slack_double.expire_response_url("old")
    sender.slash("/whoami", "", "U0ONCALL", channel_id="C0OPS", response_url=slack_double.response_url("old"))


@pytest.mark.parametrize(
    ("fault", "calls"),
    [
        (lambda double: double.ratelimit_next("chat.postEphemeral", retry_after=1, times=5), 6),  # five 429s waited out
        (lambda double: double.server_error_next("chat.postEphemeral", status=503, times=4), 5),  # an outage backed off
    ],
    ids=["rate-limited five times", "Slack's 503 four times"],
)
def test_slack_asking_to_wait_or_failing_for_a_while_still_gets_the_reply_through(slack_bot, slack_double, fault, calls):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    fault(slack_double)
    _whoami_on_a_used_up_url(sender, slack_double)
    delivered = slack_double.wait_for("chat.postEphemeral", count=calls, timeout=60)
    assert "with the admin role" in delivered[-1].params["text"]
    # the outcome row is written just after the reply went out
    assert [outcome for _c, outcome, _e, _j in _wait_for_rows(runtime, 2)] == ["allowed", "succeeded"]


def test_a_retry_after_beyond_the_bound_records_the_reply_as_undelivered_with_its_job(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    slack_double.ratelimit_next("chat.postEphemeral", retry_after=600)
    _whoami_on_a_used_up_url(sender, slack_double)
    slack_double.wait_for("chat.postEphemeral", timeout=30)
    rows = _wait_for_rows(runtime, 3)
    # the reply's fate is recorded as it is known, the command's outcome after it (a question's answer goes first)
    (command, outcome, error, undelivered_job), (_, succeeded, _, job_id) = rows[1:]
    assert (succeeded, command, outcome, undelivered_job) == ("succeeded", "whoami", "undelivered", job_id) and job_id
    assert error == "reply undelivered: Slack asked to wait 600 s (ratelimited)", error
    assert slack_double.response_url("old") not in str(rows) and "hooks" not in str(rows)
    assert len(slack_double.calls_to("chat.postEphemeral")) == 1, "Slack's Retry-After is honoured, not ignored"


def test_a_refusal_of_the_fallback_records_the_reply_as_undelivered(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    slack_double.fail_next("chat.postEphemeral", "channel_not_found")
    _whoami_on_a_used_up_url(sender, slack_double)
    rows = _wait_for_rows(runtime, 3)
    assert ("undelivered", "reply undelivered: channel_not_found") in [row[1:3] for row in rows]


def _wait_for_rows(runtime, count):
    import time

    deadline = time.monotonic() + 30
    while len(rows := _rows(runtime)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(rows) >= count, rows
    return rows
