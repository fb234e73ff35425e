"""Approvals in Slack: a real /restart on the live stack, signed clicks, runner processes, restarts of the bot.

Bolt receives every command and click signed exactly as Slack signs them; what the bot posts and
updates lands in the Web API double; the Docker engine's own events count the restarts.
"""

import threading
import time

import docker
import pytest

from bot.approvals.service import APPROVE, CANCEL, DENY
from bot.jobs.model import Job
from bot.frame.roles import Role
from tests.conftest import grant
from tests import stack_setting
from tests.waiting import eventually

CHANNEL = "C0OPS"


def _restarts(live_stack, service: str, since: float) -> int:
    """How many times the engine restarted the service's container since then (its own event log)."""
    client = docker.from_env()
    try:
        events = client.events(
            since=int(since),
            until=int(time.time()) + 1,
            decode=True,
            filters={"type": "container", "event": "restart", "label": f"com.docker.compose.service={service}"},
        )
        return sum(1 for event in events if event["Actor"]["Attributes"].get("com.docker.compose.project") == live_stack.stack.compose_project)
    finally:
        client.close()


def _request_message(slack_double, number: int = 1) -> dict:
    """The request's channel message (chat.postMessage, not an ephemeral, not the response_url)."""
    prefix = f"Request #{number}: "
    slack_double.wait_for("chat.postMessage", timeout=20, predicate=lambda c: str(c.params.get("text")).startswith(prefix))
    return next(m for m in slack_double.messages(CHANNEL) if m["text"].startswith(prefix))


def _buttons(message: dict) -> dict[str, str]:
    for block in message.get("blocks") or []:
        if block["type"] == "actions":
            return {element["action_id"]: element["value"] for element in block["elements"]}
    return {}


def _wait_message(slack_double, ts: str, text: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = slack_double.message(CHANNEL, ts)
        if message and text in str(message.get("blocks")):
            return message
        time.sleep(0.1)
    raise AssertionError(f"the message never said {text!r}; it says {slack_double.message(CHANNEL, ts)}")


def _job(runtime, job_id: int) -> Job:
    with runtime.store.session() as session:
        return session.get(Job, job_id)


def _approve_all_at_once(slack_double, senders, approvers, ts) -> list[str]:
    """Every approver clicks Approve on request #1 at the same moment (spread over the senders); their answers."""
    start = threading.Barrier(len(approvers))

    def click(sender, user):
        start.wait()
        assert sender.click(APPROVE, "1", user, CHANNEL, ts, slack_double.response_url(user)).status == 200

    threads = [threading.Thread(target=click, args=(senders[i % len(senders)], user)) for i, user in enumerate(approvers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers = [slack_double.wait_for_response(user, timeout=30)[0]["text"] for user in approvers]
    _wait_message(slack_double, ts, "✅ Done")
    return answers


def _bot(slack_bot, live_stack, **settings):
    settings.setdefault("admins", ["U0ADMIN"])
    bot = slack_bot(live_stack, **settings)
    grant(bot[1], "U0OP", Role.operator)
    grant(bot[1], "U0APP", Role.approver)
    grant(bot[1], "U0VIEW", Role.viewer)
    return bot


def test_a_restart_waits_for_a_second_person_and_runs_once_they_approve(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack, approver_group="S0APPROVERS")
    since = time.time()
    ack = sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    assert ack.status == 200 and ack.body == ""
    (told,) = slack_double.wait_for_response("ask", timeout=20)
    assert told["response_type"] == "ephemeral" and told["text"].startswith("Request #1: `/restart frontend` needs a second person's approval")
    message = _request_message(slack_double)
    assert "`/restart frontend`" in str(message["blocks"]) and "<!subteam^S0APPROVERS>" in str(message["blocks"])
    assert _buttons(message) == {APPROVE: "1", DENY: "1", CANCEL: "1"}, "a button carries only the request's number"
    ts = message["ts"]

    sender.click(APPROVE, "1", "U0OP", CHANNEL, ts, slack_double.response_url("self"))
    sender.click(APPROVE, "1", "U0VIEW", CHANNEL, ts, slack_double.response_url("viewer"))
    assert slack_double.wait_for_response("self", timeout=20)[0]["text"] == "You asked for request #1, so a second person must approve it."
    assert slack_double.wait_for_response("viewer", timeout=20)[0]["text"] == (
        "To approve request #1 you need the approver role and you have viewer."
    )
    assert _job(runtime, 1).state == "pending_approval" and _restarts(live_stack, "frontend", since) == 0

    sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, slack_double.response_url("approver"))
    assert slack_double.wait_for_response("approver", timeout=20)[0]["text"] == "You approved request #1; it runs now."
    done = _wait_message(slack_double, ts, "✅ Done (approved by <@U0APP>)")
    assert "🟢 *frontend* is healthy again after" in str(done["blocks"])
    assert _buttons(done) == {}, "a finished request has no buttons"
    assert _restarts(live_stack, "frontend", since) == 1
    updates = [str(c.params.get("blocks")) for c in slack_double.calls_to("chat.update") if c.params.get("ts") == ts]
    assert any("Approved by <@U0APP>; starting" in u for u in updates) and any("Restarting frontend" in u for u in updates)


def test_twenty_concurrent_approve_clicks_restart_once(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack)
    approvers = [f"U0APP{i}" for i in range(20)]
    for user in approvers:
        grant(runtime, user, Role.approver)
    since = time.time()
    sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    ts = _request_message(slack_double)["ts"]
    answers = _approve_all_at_once(slack_double, [sender], approvers, ts)
    assert answers.count("You approved request #1; it runs now.") == 1, answers
    assert all(a.startswith("Request #1 was already approved by") or a.startswith("You approved") for a in answers), answers
    assert _restarts(live_stack, "frontend", since) == 1


def test_an_unknown_service_is_refused_before_any_request_is_made(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack)
    sender.slash("/restart", "frontend nosuch", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    (told,) = slack_double.wait_for_response("ask", timeout=20)
    assert told["text"] == (
        f"nosuch is not a service of {stack_setting.NAME}; the services are backend, frontend, nginx, postgres, python-worker, redis."
    )
    assert slack_double.calls_to("chat.postMessage") == [] and _job(runtime, 1).state == "refused"


def test_a_request_nobody_clicks_expires_and_its_buttons_go(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack, approval_minutes=0.02)
    sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    ts = _request_message(slack_double)["ts"]
    expired = _wait_message(slack_double, ts, "⌛ Expired at", timeout=30)
    assert _buttons(expired) == {}
    assert _job(runtime, 1).state == "expired"
    sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, slack_double.response_url("late"))
    late = slack_double.wait_for_response("late", timeout=20)[0]
    assert late["response_type"] == "ephemeral" and late["text"].startswith("Request #1 expired at ")


def test_deny_and_cancel_buttons_and_a_tampered_button_value(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack)
    for n in (1, 2):
        sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url(f"ask{n}"))
        slack_double.wait_for_response(f"ask{n}", timeout=20)
    first, second = _request_message(slack_double, 1)["ts"], _request_message(slack_double, 2)["ts"]
    sender.click(DENY, "1", "U0APP", CHANNEL, first, slack_double.response_url("deny"))
    assert slack_double.wait_for_response("deny", timeout=20)[0]["text"] == "You denied request #1; nothing ran."
    _wait_message(slack_double, first, "⛔ Denied by <@U0APP>; nothing ran.")
    sender.click(CANCEL, "2", "U0APP", CHANNEL, second, slack_double.response_url("not-yours"))
    assert "may cancel it" in slack_double.wait_for_response("not-yours", timeout=20)[0]["text"]
    sender.click(APPROVE, "2 --break-glass x", "U0ADMIN", CHANNEL, second, slack_double.response_url("tampered"))
    assert slack_double.wait_for_response("tampered", timeout=20)[0]["text"] == (
        "That button does not belong to a request of this bot; nothing changed."
    )
    sender.click(CANCEL, "2", "U0OP", CHANNEL, second, slack_double.response_url("cancel"))
    assert slack_double.wait_for_response("cancel", timeout=20)[0]["text"] == "You cancelled request #2; nothing ran."
    assert (_job(runtime, 1).state, _job(runtime, 2).state) == ("denied", "cancelled")


def test_unsigned_and_stale_clicks_get_401_and_decide_nothing(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack)
    sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    ts = _request_message(slack_double)["ts"]
    url = slack_double.response_url("click")
    assert sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, url, unsigned=True).status == 401
    assert sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, url, timestamp=int(time.time()) - 301).status == 401
    assert sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, url, sign_with="forged").status == 401
    time.sleep(0.5)
    assert slack_double.responses("click") == [] and _job(runtime, 1).state == "pending_approval"


def test_a_request_made_before_the_bot_restarts_is_approved_after_it(slack_bot, slack_double, live_stack):
    since = time.time()
    before = _bot(slack_bot, live_stack)
    before[0].slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    ts = _request_message(slack_double)["ts"]
    before.stop()
    sender, runtime = _bot(slack_bot, live_stack)  # same settings, same database file
    sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, slack_double.response_url("approve"))
    assert slack_double.wait_for_response("approve", timeout=30)[0]["text"] == "You approved request #1; it runs now."
    _wait_message(slack_double, ts, "✅ Done")
    assert _restarts(live_stack, "frontend", since) == 1


def test_two_bot_processes_on_one_postgresql_share_the_clicks_and_run_once(slack_bot, slack_double, live_stack, postgres_url):
    since = time.time()
    first = _bot(slack_bot, live_stack, database_url=postgres_url)
    second = _bot(slack_bot, live_stack, database_url=postgres_url)
    approvers = [f"U0APP{i}" for i in range(10)]
    for user in approvers:
        grant(first[1], user, Role.approver)
    first[0].slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    ts = _request_message(slack_double)["ts"]
    answers = _approve_all_at_once(slack_double, [first[0], second[0]], approvers, ts)
    assert answers.count("You approved request #1; it runs now.") == 1, answers
    assert _restarts(live_stack, "frontend", since) == 1


@pytest.mark.parametrize("processes", [2])
def test_a_runner_killed_mid_job_interrupts_only_its_own_jobs_and_the_next_commands_run(slack_bot, slack_double, processes):
    import os
    import signal

    from bot.frame.config import StackConfig
    from tests.loopback import SilentServer

    with SilentServer() as hung:
        stack = StackConfig(probes=[{"name": "hung", "kind": "http", "url": f"http://127.0.0.1:{hung.port}/", "timeout": 4}])
        bot = slack_bot(stack, admins=["U0ONCALL"], runner_processes=processes, runner_threads=1)
        sender, runtime = bot
        for name in ("doomed", "survivor"):
            sender.slash("/health", "", "U0ONCALL", CHANNEL, response_url=slack_double.response_url(name))
        deadline = time.monotonic() + 20
        while not (_job(runtime, 1) and _job(runtime, 2) and _job(runtime, 1).state == _job(runtime, 2).state == "running"):
            assert time.monotonic() < deadline, "both runners should hold one /health each"
            time.sleep(0.05)
        doomed_pid = int(_job(runtime, 1).holder.split("/")[1])
        os.kill(doomed_pid, signal.SIGKILL)
        told = slack_double.wait_for("chat.postMessage", timeout=20, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        assert "/health" in told[0].params["text"] and told[0].params["channel"] == CHANNEL
        (survived,) = slack_double.wait_for_response("survivor", timeout=20)
        assert "hung" in survived["text"], "the other runner's command finished normally"
        for i in range(5):
            sender.slash("/whoami", "", "U0ONCALL", CHANNEL, response_url=slack_double.response_url(f"after{i}"))
        for i in range(5):
            assert "admin role" in slack_double.wait_for_response(f"after{i}", timeout=30)[0]["text"]
    eventually(lambda: _job(runtime, 2).state != "running", "the survivor's end, written just after its reply")
    assert _job(runtime, 1).state == "interrupted" and _job(runtime, 2).state == "succeeded"
    assert slack_double.responses("doomed") == [], "an interrupted job is never run again"


def test_the_bot_killed_while_a_restart_runs_marks_it_interrupted_on_start_and_tells_the_channel(tmp_path, slack_double, live_stack):
    from tests.conftest import BotProcess

    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", live_stack.source)
    sender = bot.start()
    store = bot.store
    try:
        bot.grant("U0OP", Role.operator)
        sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
        ts = _request_message(slack_double)["ts"]
        sender.click(APPROVE, "1", "U0ADMIN", CHANNEL, ts, slack_double.response_url("approve"))
        deadline = time.monotonic() + 20
        while (job := _job_in(store, 1)) is None or job.state != "running":
            assert time.monotonic() < deadline, "the approved restart never started"
            time.sleep(0.02)
        bot.kill()
        sender = bot.start()
        # The click's own job (/approvals approve 1) may have been killed too, and is told of on its own: look for the restart's.
        told = slack_double.wait_for(
            "chat.postMessage", timeout=30, predicate=lambda c: "was interrupted" in str(c.params.get("text")) and "`/restart frontend`" in str(c.params.get("text"))
        )
        assert "It was not run again" in told[0].params["text"]
        _wait_message(slack_double, ts, "⚠️ Interrupted")
        assert _job_in(store, 1).state == "interrupted"
        client = docker.from_env()
        try:
            (container,) = client.containers.list(
                all=True, filters={"label": [f"com.docker.compose.project={live_stack.stack.compose_project}", "com.docker.compose.service=frontend"]}
            )
            deadline = time.monotonic() + 60
            while container.attrs["State"].get("Health", {}).get("Status") != "healthy":
                assert time.monotonic() < deadline, "frontend did not come back after the interrupted restart"
                time.sleep(0.5)
                container.reload()
        finally:
            client.close()
    finally:
        bot.close()


def _job_in(store, job_id):
    with store.session() as session:
        return session.get(Job, job_id)


def test_break_glass_restarts_at_once_says_so_loudly_and_shows_progress_in_place(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, live_stack)
    since = time.time()
    sender.slash("/restart", 'frontend --break-glass "site down, approvers asleep"', "U0ADMIN", CHANNEL, response_url=slack_double.response_url("bg"))
    loud = slack_double.wait_for("chat.postMessage", timeout=20, predicate=lambda c: "Break-glass" in str(c.params.get("text")))
    assert loud[0].params["text"] == (
        "🚨 *Break-glass*: <@U0ADMIN> runs `/restart frontend` without a second person's approval. Reason: site down, approvers asleep"
    )
    progress = _request_message(slack_double)
    done = _wait_message(slack_double, progress["ts"], "✅ Done (break-glass)")
    assert "🟢 *frontend* is healthy again" in str(done["blocks"]) and _buttons(done) == {}
    assert _restarts(live_stack, "frontend", since) == 1
    job = _job(runtime, 1)
    assert (job.state, job.break_glass, job.approver) == ("succeeded", "site down, approvers asleep", None)
