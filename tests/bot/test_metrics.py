"""The bot's own /metrics: scraped from a real bot in HTTP mode and in Socket Mode after real commands,
and read from the store (SQLite and PostgreSQL) exactly as the jobs, the audit and the backups say."""

from __future__ import annotations

import urllib.request
from datetime import timedelta

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bot.backups.model import Backup
from bot.jobs.model import Job
from bot.adapters.metrics import registry
from bot.frame.registry import Invocation
from bot.store.engine import utcnow
from tests.conftest import run
from tests.replica import Replica
from tests.socket_mode_double import SocketModeDouble
from tests.waiting import eventually

CHANNEL = "C0OPS"
WAIT = 60


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return _samples(response.read().decode())


def _scrape_until(url: str, sample: tuple[str, tuple], count: float) -> dict[tuple[str, tuple], float]:
    """The samples once `sample` reads `count`: a question's outcome row is written just after its reply went out."""
    return eventually(lambda: (values := _scrape(url)).get(sample) == count and values, f"{sample[0]} to reach {count:g}")


def test_the_store_s_view_counts_commands_times_jobs_and_ages_the_newest_verified_backup(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["U0ADMIN"])
    run(runtime, "U0ADMIN", "/whoami")
    run(runtime, "U0ADMIN", "/whoami")
    run(runtime, "U0NOBODY", "/audit")
    for seconds in (0.05, 3.0, 45.0):
        job_id = runtime.jobs.submit(Invocation("U0ADMIN", "health", "", CHANNEL, "slack"))
        runtime.jobs.claim(job_id, "me")
        runtime.jobs.finish(job_id, "me", "succeeded")
        started = utcnow() - timedelta(minutes=5)
        with runtime.store.session.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(started_at=started, finished_at=started + timedelta(seconds=seconds)))
    pending = runtime.jobs.submit(Invocation("U0OP", "restart", "frontend", CHANNEL, "slack"))
    runtime.jobs.claim(pending, "me")
    runtime.jobs.to_pending(pending, "me", {"services": ["frontend"]}, utcnow() + timedelta(minutes=15))

    values = _samples(generate_latest(registry(runtime.store)).decode())
    assert values[("flowstate_bot_newest_verified_backup_age_seconds", ())] == float("inf"), "no verified backup yet"
    assert values[("flowstate_bot_commands_total", (("command", "whoami"), ("outcome", "succeeded")))] == 2
    assert values[("flowstate_bot_commands_total", (("command", "audit"), ("outcome", "denied")))] == 1
    assert values[("flowstate_bot_pending_approvals", ())] == 1
    health = {le: values[("flowstate_bot_job_duration_seconds_bucket", (("command", "health"), ("le", le)))] for le in ("0.1", "2.5", "5.0", "60.0", "+Inf")}
    assert health == {"0.1": 1, "2.5": 1, "5.0": 2, "60.0": 3, "+Inf": 3}
    assert values[("flowstate_bot_job_duration_seconds_sum", (("command", "health"),))] == pytest.approx(48.05, abs=0.01)
    assert values[("flowstate_bot_database_up", ())] == 1

    with runtime.store.session.begin() as session:
        for hours, verified in ((2, True), (1, False), (30, True)):
            session.add(
                Backup(stack="s", database="flowstate_ai", state="ok", kind="manual", requested_by="U0OP",
                       started_at=utcnow() - timedelta(hours=hours), verified_ok=verified)
            )
    age = _samples(generate_latest(registry(runtime.store)).decode())[("flowstate_bot_newest_verified_backup_age_seconds", ())]
    assert 2 * 3600 <= age < 2 * 3600 + 60, "the newest verified one, not the newer unverified one"


def test_duty_results_are_read_from_the_duty_runs(make_runtime):
    from datetime import timedelta

    from bot.duties.model import DutyRun
    from bot.store.engine import utcnow

    runtime = make_runtime()
    now = utcnow()
    runs = [("nightly-backup", 3, "succeeded"), ("nightly-backup", 2, "succeeded"), ("nightly-backup", 1, "failed"), ("watch-check", 1, "succeeded")]
    with runtime.store.session.begin() as session:
        for duty, days_ago, state in runs:
            slot = now - timedelta(days=days_ago)
            session.add(DutyRun(duty=duty, slot=slot, state=state, claimed_by="test", created_at=slot, finished_at=slot))
    values = _samples(generate_latest(registry(runtime.store)).decode())
    assert values[("flowstate_bot_duty_runs_total", (("duty", "nightly-backup"), ("result", "failed")))] == 1
    assert values[("flowstate_bot_duty_runs_total", (("duty", "nightly-backup"), ("result", "succeeded")))] == 2
    assert values[("flowstate_bot_duty_last_failed", (("duty", "nightly-backup"),))] == 1, "its newest run failed"
    assert values[("flowstate_bot_duty_last_failed", (("duty", "watch-check"),))] == 0


@pytest.mark.process
def test_http_mode_serves_metrics_on_their_own_port_after_real_commands(tmp_path, slack_double):
    stack = tmp_path / "stack.toml"
    stack.write_text("")
    bot = Replica(tmp_path, tmp_path / "home", slack_double, FLOWSTATE_STACK_FILE=str(stack), FLOWSTATE_METRICS_PORT="0")
    try:
        sender = bot.sender()
        sender.slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("ok"))
        sender.slash("/audit", "", "U0NOBODY", CHANNEL, response_url=slack_double.response_url("denied"))
        # A reply that cannot be delivered: the response_url has expired and the Web API refuses the fallback.
        slack_double.expire_response_url("lost")
        slack_double.fail_next("chat.postEphemeral", "channel_not_found")
        sender.slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("lost"))
        slack_double.wait_for_response("ok", timeout=WAIT)
        slack_double.wait_for_response("denied", timeout=WAIT)
        slack_double.wait_for("chat.postEphemeral", timeout=WAIT)

        whoami = ("flowstate_bot_commands_total", (("command", "whoami"), ("outcome", "succeeded")))
        values = _scrape_until(bot.metrics_url(), whoami, 2)
        assert values[whoami] == 2
        assert values[("flowstate_bot_commands_total", (("command", "audit"), ("outcome", "denied")))] == 1
        assert values[("flowstate_bot_job_duration_seconds_count", (("command", "whoami"),))] == 2
        assert values[("flowstate_bot_pending_approvals", ())] == 0
        # Counted in the runner process, shown by the bot process.
        assert values[("flowstate_bot_slack_api_errors_total", (("error", "channel_not_found"), ("method", "chat.postEphemeral")))] == 1
        assert values[("flowstate_bot_slack_api_errors_total", (("error", "http_404"), ("method", "response_url")))] == 1

        assert sender.slash("/whoami", "", "U0ADMIN", CHANNEL, response_url="x", unsigned=True).status == 401, "Slack's door is still guarded"
    finally:
        assert bot.stop() == 0 and "Traceback" not in bot.stderr, bot.stderr
    assert not list((tmp_path / "home" / "metrics").iterdir()), "the process's metrics directory goes with it"


@pytest.mark.process
def test_socket_mode_serves_metrics_on_a_port_of_its_own(tmp_path, slack_double):
    stack = tmp_path / "stack.toml"
    stack.write_text("")
    with SocketModeDouble(slack_double) as socket_mode:
        bot = Replica(tmp_path, tmp_path / "home", slack_double, socket_mode=True, FLOWSTATE_STACK_FILE=str(stack), FLOWSTATE_METRICS_PORT="0")
        try:
            url = bot.metrics_url()
            socket_mode.wait_for_connection(timeout=WAIT)
            socket_mode.send_slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("me"))
            slack_double.wait_for_response("me", timeout=WAIT)
            whoami = ("flowstate_bot_commands_total", (("command", "whoami"), ("outcome", "succeeded")))
            values = _scrape_until(url, whoami, 1)
            assert values[whoami] == 1
            assert values[("flowstate_bot_newest_verified_backup_age_seconds", ())] == float("inf")
            assert not any(name == "flowstate_bot_slack_api_errors_total" for name, _ in values), "no Slack call failed"
        finally:
            assert bot.stop() == 0 and "Traceback" not in bot.stderr, bot.stderr
