"""A failing /health line in Slack ends with what to do next, as buttons: each click is that command typed by the
clicker, so a restart is a normal request that waits for a second person's approval."""

import re

from bot.stack.health import NEXT_LOGS, NEXT_RESTART
from tests.bot.test_slack_approvals import CHANNEL, _bot, _job, _request_message


def _next_steps(blocks: list[dict]) -> list[list[tuple[str, str, str]]]:
    return [
        [(element["text"]["text"], element["action_id"], element["value"]) for element in block["elements"]]
        for block in blocks
        if block["type"] == "actions"
    ]


def test_restart_and_logs_buttons_post_the_commands_they_show(slack_bot, slack_double, live_stack, stack_container):
    stack_container("python-worker").stop(timeout=1)
    sender, runtime = _bot(slack_bot, live_stack)
    sender.slash("/health", "", "U0VIEW", CHANNEL, response_url=slack_double.response_url("health"))
    (report,) = slack_double.wait_for_response("health", timeout=30)
    assert report["response_type"] == "in_channel"
    assert [
        ("/logs python-worker --since 15m", NEXT_LOGS, "python-worker"),
        ("/restart python-worker", NEXT_RESTART, "python-worker"),
    ] in _next_steps(report["blocks"]), "the worker's failing line ends with its next steps"
    ts = "1700000000.000100"

    sender.click(NEXT_RESTART, "python-worker", "U0OP", CHANNEL, ts, slack_double.response_url("restart"))
    (asked,) = slack_double.wait_for_response("restart", timeout=20)
    match = re.match(r"Request #(\d+): `/restart python-worker` needs a second person's approval", asked["text"])
    assert match, asked
    number = int(match.group(1))
    assert "`/restart python-worker`" in str(_request_message(slack_double, number)["blocks"])
    assert _job(runtime, number).state == "pending_approval", "nothing restarts on one person's click"

    sender.click(NEXT_LOGS, "python-worker", "U0VIEW", CHANNEL, ts, slack_double.response_url("viewer-logs"))
    assert "operator" in slack_double.wait_for_response("viewer-logs", timeout=20)[0]["text"], "the clicker's role decides"
    sender.click(NEXT_LOGS, "python-worker", "U0OP", CHANNEL, ts, slack_double.response_url("logs"))
    (logs,) = slack_double.wait_for_response("logs", timeout=20)
    assert "python-worker" in logs["text"] and "since" in logs["text"], logs

    sender.click(NEXT_RESTART, "python-worker --break-glass x", "U0ADMIN", CHANNEL, ts, slack_double.response_url("tampered"))
    assert slack_double.wait_for_response("tampered", timeout=20)[0]["text"] == (
        "That button does not belong to a /health report of this bot; nothing changed."
    )
