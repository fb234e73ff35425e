"""Approved work waits its turn, live: a `/restart SERVICE` approved in Slack while another `/restart` runs on the
stack waits, says for what, and runs after it exactly once. The runner processes restart real containers of the test
stack; the Docker engine's own events count the restarts and give their order.
"""

import threading
import time

import docker

from bot.approvals.service import APPROVE, CANCEL
from tests.bot.test_replicas import replicas, store  # noqa: F401 (fixtures)
from tests.bot.test_slack_approvals import CHANNEL, _bot, _buttons, _job, _request_message, _wait_message

HOLD_SECONDS = 10  # the first restart's health gate holds the stack this long: the second approval lands meanwhile


class Restarts:
    """The engine's restart events of the stack's containers, as they come (its own log keeps only the last few hundred
    events of the whole machine, so they are watched live, not asked for afterwards)."""

    def __init__(self, live_stack):
        self._project = live_stack.stack.compose_project
        self._client = docker.from_env()
        self._stream = self._client.events(decode=True, filters={"type": "container", "event": "restart"})
        self.seen: list[tuple[str, int]] = []  # (compose service, timeNano)
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for event in self._stream:
                labels = event["Actor"]["Attributes"]
                if labels.get("com.docker.compose.project") == self._project:
                    self.seen.append((labels.get("com.docker.compose.service"), event["timeNano"]))
        except Exception:  # the stream closed
            pass

    def of(self, service: str) -> list[int]:
        return [at for name, at in self.seen if name == service]

    def close(self) -> None:
        self._stream.close()
        self._client.close()


def _until(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"waited {timeout}s for {what}"
        time.sleep(0.1)
    return value


def test_a_restart_approved_while_another_restart_runs_waits_and_runs_after_it_exactly_once(slack_bot, slack_double, live_stack):
    slow_gate = live_stack.model_copy(update={"stack": live_stack.stack.model_copy(update={"stable_seconds": HOLD_SECONDS})})
    sender, runtime = _bot(slack_bot, slow_gate)
    restarts = Restarts(live_stack)
    try:
        _restart_after_restart(sender, runtime, slack_double, restarts)
    finally:
        restarts.close()


def _restart_after_restart(sender, runtime, slack_double, restarts):
    sender.slash("/restart", "python-worker", "U0OP", CHANNEL, response_url=slack_double.response_url("ask1"))
    first = _request_message(slack_double, 1)["ts"]
    sender.slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask2"))
    second = _request_message(slack_double, 2)["ts"]

    sender.click(APPROVE, "1", "U0APP", CHANNEL, first, slack_double.response_url("approve1"))
    _until(lambda: restarts.of("python-worker"), "the first restart")
    holder = runtime.locks.held(runtime.stack_name)
    assert holder is not None and holder.job_id == 1, "the first restart holds the stack while its gate waits"

    sender.click(APPROVE, "2", "U0APP", CHANNEL, second, slack_double.response_url("approve2"))
    assert slack_double.wait_for_response("approve2", timeout=20)[0]["text"] == (
        "You approved request #2; it waits for `/restart python-worker` (request #1, asked by <@U0OP>) to finish, then "
        "runs; its message shows where it stands."
    )
    waiting = _wait_message(slack_double, second, "waiting for `/restart python-worker` (request #1, asked by <@U0OP>) to finish")
    assert "⏳ Approved by <@U0APP>; waiting for" in str(waiting["blocks"])
    assert _buttons(waiting) == {CANCEL: "2"}, "only its requester's Cancel is left"
    assert _job(runtime, 2).state == "waiting" and restarts.of("frontend") == []

    _wait_message(slack_double, first, "✅ Done (approved by <@U0APP>)", timeout=120)
    done = _wait_message(slack_double, second, "✅ Done (approved by <@U0APP>)", timeout=120)
    assert "🟢 *frontend* is healthy again after" in str(done["blocks"]) and _buttons(done) == {}
    time.sleep(2)  # a second run would restart again: give it the time to
    worker, frontend = restarts.of("python-worker"), restarts.of("frontend")
    assert len(worker) == 1 and len(frontend) == 1, (worker, frontend)
    assert frontend[0] > worker[0], "the waiting restart ran after the one it waited for"
    assert (_job(runtime, 1).state, _job(runtime, 2).state) == ("succeeded", "succeeded")
    assert runtime.locks.held(runtime.stack_name) is None


def test_a_request_waiting_through_a_restart_of_its_replicas_restarts_once_when_the_lock_frees(
    replicas, slack_double, postgres_url, store, live_stack
):
    from pathlib import Path

    from bot.frame.authz import Authorizer
    from bot.frame.roles import Role
    from bot.jobs.model import ChangeLock, Job
    from bot.store.engine import utcnow

    stack = Path(live_stack.source).read_text()
    first, second = replicas(2, stack, FLOWSTATE_DATABASE_URL=postgres_url)
    senders = [first.sender(), second.sender()]
    project = live_stack.stack.compose_project
    with store.session.begin() as session:
        Authorizer.grant(session, "U0OP", Role.operator, "U0ADMIN")
        Authorizer.grant(session, "U0APP", Role.approver, "U0ADMIN")
        # Another change holds the stack: a replica that has since crashed, so nobody will release it.
        session.add(ChangeLock(stack=project, job_id=999, requester="U0OTHER", command="/restore 12",
                               acquired_at=utcnow(), expires_at=utcnow().replace(year=utcnow().year + 1)))
    restarts = Restarts(live_stack)
    try:
        senders[0].slash("/restart", "frontend", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
        ts = _request_message(slack_double, 1)["ts"]
        senders[1].click(APPROVE, "1", "U0APP", CHANNEL, ts, slack_double.response_url("approve"))
        _wait_message(slack_double, ts, "⏳ Approved by <@U0APP>; waiting for `/restore 12` (request #999, asked by <@U0OTHER>)")
        with store.session() as session:
            assert session.get(Job, 1).state == "waiting"
        for bot in (first, second):  # every replica goes down while it waits: it is in the database, held by nobody
            bot.kill()
        third, fourth = replicas(2, stack, FLOWSTATE_DATABASE_URL=postgres_url)
        third.sender(), fourth.sender()
        with store.session.begin() as session:  # the crashed holder's lock runs out: both replicas' sweeps see it free
            session.get(ChangeLock, project).expires_at = utcnow()
        _wait_message(slack_double, ts, "✅ Done (approved by <@U0APP>)", timeout=120)
        time.sleep(3)  # a second run would restart again: give it the time to
        assert len(restarts.of("frontend")) == 1, restarts.seen
    finally:
        restarts.close()
    with store.session() as session:
        job = session.get(Job, 1)
        assert job.state == "succeeded" and session.get(ChangeLock, project) is None
    for bot in (third, fourth):
        assert bot.stop() == 0 and "Traceback" not in bot.stderr, bot.stderr
