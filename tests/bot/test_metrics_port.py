"""/metrics cannot stall Slack's acks: it is served only on its own port (never by the threads that answer
Slack), one collection at a time kept ~15 s, so a flood of scrapes over big tables reads the database once;
and what is read is read incrementally, yet stays exact."""

from __future__ import annotations

import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from bot.store.engine import Store, utcnow
from tests.bot.test_metrics import _samples, _scrape
from tests.replica import Replica

AUDIT_ROWS, JOB_ROWS, SCRAPES = 300_000, 150_000, 24


def _big_store(postgres_url: str) -> None:
    """The reviewer's store: 300k audit rows and 150k finished jobs."""
    store = Store(postgres_url)
    store.migrate()
    store.dispose()
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO audit_log (at, user_id, source, command, outcome, duration_ms)"
            " SELECT now(), 'U' || (i %% 1000), 'slack', 'help', 'succeeded', 5 FROM generate_series(1, %s) AS i",
            (AUDIT_ROWS,),
        )
        connection.execute(
            "INSERT INTO bot_jobs (state, source, requester, command, text, created_at, started_at, finished_at)"
            " SELECT 'succeeded', 'slack', 'U1', 'health', '', now(), now() - interval '2 seconds', now()"
            " FROM generate_series(1, %s)",
            (JOB_ROWS,),
        )
        connection.execute("ANALYZE audit_log; ANALYZE bot_jobs")


def test_a_flood_of_scrapes_over_big_tables_is_one_collection_and_whoami_is_still_answered(tmp_path, slack_double, postgres_url):
    _big_store(postgres_url)
    stack = tmp_path / "stack.toml"
    stack.write_text("")
    bot = Replica(tmp_path, tmp_path / "home", slack_double, FLOWSTATE_STACK_FILE=str(stack), FLOWSTATE_DATABASE_URL=postgres_url,
                  FLOWSTATE_METRICS_PORT="0")
    try:
        sender, url = bot.sender(), bot.metrics_url()
        with ThreadPoolExecutor(SCRAPES) as pool:
            scrapes = [pool.submit(_scrape, url) for _ in range(SCRAPES)]
            ack = sender.slash("/whoami", "", "U0ADMIN", "C0OPS", response_url=slack_double.response_url("me"))
            seen = [scrape.result(timeout=120) for scrape in scrapes]
        assert ack.status == 200, "Slack got its ack"
        assert "with the admin role" in slack_double.wait_for_response("me", timeout=60)[0]["text"]
        for values in seen:
            assert values[("flowstate_bot_commands_total", (("command", "help"), ("outcome", "succeeded")))] == AUDIT_ROWS
            assert values[("flowstate_bot_job_duration_seconds_count", (("command", "health"),))] == JOB_ROWS
            assert values[("flowstate_bot_metrics_collections_total", ())] == 1, "every scrape waited for the one collection"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{sender.port}/metrics", timeout=10)
        assert refused.value.code == 405, "the Slack port serves Slack only"
    finally:
        assert bot.stop() == 0 and "Traceback" not in bot.stderr, bot.stderr


def _audit_row(session, command: str, outcome: str, age: timedelta) -> None:
    from bot.store.engine import AuditEntry

    session.add(AuditEntry(at=utcnow() - age, user_id="U1", source="slack", command=command, outcome=outcome, duration_ms=1))


def _finished_job(session, command: str, seconds: float, age: timedelta) -> None:
    from bot.jobs.model import Job

    finished = utcnow() - age
    session.add(Job(state="succeeded", source="slack", requester="U1", command=command, text="", created_at=finished,
                    started_at=finished - timedelta(seconds=seconds), finished_at=finished))


def test_counts_read_incrementally_stay_exact_as_rows_age_and_new_ones_come(make_runtime, database_url):
    """Old rows are counted once and kept; each collection reads only what is newer. The values stay exact."""
    from bot.adapters.metrics import DatabaseCollector

    runtime = make_runtime(database_url=database_url)
    collector = DatabaseCollector(runtime.store, duties=lambda store: [])

    def values():
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        found = _samples(generate_latest(registry).decode())
        return (
            {labels: value for (name, labels), value in found.items() if name == "flowstate_bot_commands_total"},
            {labels: value for (name, labels), value in found.items() if name == "flowstate_bot_job_duration_seconds_count"},
            pytest.approx(found[("flowstate_bot_job_duration_seconds_sum", (("command", "health"),))], abs=0.01),
        )

    with runtime.store.session.begin() as session:
        for _ in range(3):
            _audit_row(session, "help", "succeeded", timedelta(hours=1))
            _finished_job(session, "health", 2.0, timedelta(hours=1))
        _audit_row(session, "help", "succeeded", timedelta(seconds=1))
        _finished_job(session, "health", 1.0, timedelta(seconds=1))
    help_ok, health = (("command", "help"), ("outcome", "succeeded")), (("command", "health"),)
    assert values() == ({help_ok: 4}, {health: 4}, 7.0)
    assert values() == ({help_ok: 4}, {health: 4}, 7.0), "read again: nothing counted twice"
    with runtime.store.session.begin() as session:
        _audit_row(session, "help", "succeeded", timedelta(hours=2))  # written late with an old time: still counted
        _audit_row(session, "whoami", "denied", timedelta(seconds=1))
        _finished_job(session, "health", 4.0, timedelta(hours=2))
        _finished_job(session, "backup", 30.0, timedelta(seconds=1))
    denied = (("command", "whoami"), ("outcome", "denied"))
    backup = (("command", "backup"),)
    assert values() == ({help_ok: 5, denied: 1}, {health: 5, backup: 1}, 11.0)
    assert values() == ({help_ok: 5, denied: 1}, {health: 5, backup: 1}, 11.0)
