"""/stats against the live Compose test stack: the four key metrics move when the stack does."""

import re
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import psycopg
import pytest
import redis

from bot.frame.config import StackConfig
from bot.frame.roles import Role
from bot.stack.database import STATEMENT_MASKS
from tests.conftest import grant, run
from tests.stack_setting import port

BACKEND = f"http://127.0.0.1:{port(58002)}"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _api_counts(text: str, who: str = "Backend") -> tuple[int, int]:
    match = re.search(rf"^{who} \(.*?\): ([\d,]+) of ([\d,]+) requests answered 5xx", text, re.M)
    return (int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))) if match else (0, 0)


def test_backend_500s_show_as_the_api_error_rate_and_are_flagged(make_runtime, live_stack, stack_container):
    runtime = make_runtime(live_stack, admins=["UA"])
    errors_before, total_before = _api_counts(run(runtime, "UA", "/stats 1h").text)
    stack_container("backend").exec_run("touch /tmp/fail-api")
    assert [_get(f"{BACKEND}/api/items") for _ in range(10)] == [500] * 10
    assert [_get(f"{BACKEND}/api/health") for _ in range(10)] == [200] * 10
    text = run(runtime, "UA", "/stats 1h").text
    errors, total = _api_counts(text)
    assert (errors - errors_before, total - total_before) == (10, 20), text
    rate = 100.0 * errors / total
    assert f"Backend (backend's own log): {errors:,} of {total:,} requests answered 5xx: {rate:.1f}%" in text
    mark = "🔴" if rate > 25.0 else "🟠"
    flagged = f"• {mark} API error rate at the backend {rate:.1f}% (warning 5%, critical 25%)" in text.split("*API errors")[0]
    assert flagged == (rate > 5.0), text


def test_a_stopped_backend_shows_as_an_edge_error_rate_near_100_percent(make_runtime, live_stack, stack_container):
    stack_container("backend").stop(timeout=1)
    statuses = [_get(f"http://127.0.0.1:{port(58080)}/api/items") for _ in range(400)]
    assert set(statuses) == {502}, "nginx answers for the dead backend"
    # A short window: the other tests' requests through nginx in the last minute are not this test's.
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats 15s").text
    errors, total = _api_counts(text, "Edge")
    assert errors >= 400 and errors / total > 0.9, text
    assert re.search(r"^• 🔴 Error rate at the edge \(nginx\) \d+\.\d% \(warning 5%, critical 25%\)$", text.split("*API errors")[0], re.M), text
    assert _api_counts(text)[0] < 400, "the dead backend logged none of those 502s: only the edge counts them"


def test_a_thousand_queued_jobs_show_as_1000_and_cross_the_threshold(make_runtime, live_stack):
    queue = redis.Redis.from_url(live_stack.redis.url)
    key = live_stack.queue.keys[0]
    queue.delete(key)
    queue.rpush(key, *[f'{{"job": {i}}}' for i in range(1000)])
    try:
        text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    finally:
        queue.delete(key)
    assert f"{key} (list): 1,000 jobs" in text
    assert "• 🟠 AI worker queue 1,000 jobs (warning 500, critical 5,000)" in text.split("*API errors")[0], "flags come first"


def test_a_queue_key_of_the_wrong_type_is_an_error_not_a_zero(make_runtime, live_stack):
    stack = live_stack.model_copy(update={"queue": live_stack.queue.model_copy(update={"type": "zset"})})
    queue = redis.Redis.from_url(live_stack.redis.url)
    key = live_stack.queue.keys[0]
    queue.rpush(key, "job")
    try:
        text = run(make_runtime(stack, admins=["UA"]), "UA", "/stats").text
    finally:
        queue.delete(key)
    assert f"🔴 Could not read it: key {key} is a list, but the stack file says the queue is a zset" in text


@contextmanager
def _held(dsn: str, statement: str, application: str = "flowstate-ai"):
    """A statement running on its own connection until the block ends; yields its backend pid."""
    holder = psycopg.connect(dsn, autocommit=True, application_name=application)
    pid = holder.info.backend_pid

    def hold():
        with pytest.raises(psycopg.errors.QueryCanceled):
            holder.execute(statement)

    sleeper = threading.Thread(target=hold, daemon=True)
    sleeper.start()
    try:
        time.sleep(1.5)
        yield pid
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        sleeper.join(timeout=10)
        holder.close()


def _short_long_query_threshold(live_stack):
    thresholds = live_stack.thresholds.model_copy(update={"long_query_seconds": 1.0})
    return live_stack.model_copy(update={"thresholds": thresholds})


def test_a_long_running_query_is_listed(make_runtime, live_stack):
    runtime = make_runtime(_short_long_query_threshold(live_stack), admins=["UA"])
    with _held(live_stack.database.dsn, "SELECT pg_sleep(30) /* held by a test */") as pid:
        text = run(runtime, "UA", "/stats").text
    assert re.search(rf"• pid {pid} \(flowstate, active\) \d+ s: `SELECT pg_sleep\(\?\) /\* held by a test \*/`", text), text
    assert re.search(r"\d+ quer(y|ies) running longer than 1 s", text.split("*API errors")[0]), text


def test_the_bots_own_sessions_and_its_backups_are_not_the_apps_long_queries(make_runtime, live_stack):
    runtime = make_runtime(_short_long_query_threshold(live_stack), admins=["UA"])
    dsn = live_stack.database.dsn
    with _held(dsn, "SELECT pg_sleep(30) /* a backup */", "flowstate-bot-maintenance") as backup, \
            _held(dsn, "SELECT pg_sleep(30) /* the app */") as app:
        text = run(runtime, "UA", "/stats").text
    assert f"• pid {app} " in text and f"• pid {backup} " not in text, text
    assert "Running longer than 1 s (the bot's own sessions, backups and drills left out):" in text


SECRET_QUERY = "SELECT pg_sleep(30), 'Bearer eyJhbGciOiJIUzI1NiJ9' AS auth, 4111111111111111 AS card /* held by a test */"


def test_the_channel_sees_the_apps_queries_without_literals_and_no_other_database(make_runtime, live_stack):
    runtime = make_runtime(_short_long_query_threshold(live_stack), default_role="viewer")
    other_database = live_stack.database.dsn.rsplit("/", 1)[0] + "/postgres"
    with _held(live_stack.database.dsn, SECRET_QUERY), _held(other_database, "SELECT pg_sleep(30) /* another database */"):
        reply = run(runtime, "UVIEWER", "/stats")
    assert reply.in_channel
    assert "(flowstate, active)" in reply.text
    assert "`SELECT pg_sleep(?), ? AS auth, ? AS card /* held by a test */`" in reply.text
    assert "another database" not in reply.text
    assert "eyJhbGciOiJIUzI1NiJ9" not in reply.text and "4111111111111111" not in reply.text
    assert "operators see the full text with /queries, only to themselves" in reply.text


def test_slow_statements_show_no_literals_even_where_pg_stat_statements_keeps_them(make_runtime, live_stack):
    # PostgreSQL 15 keeps the text of utility statements (DO, ALTER ROLE ... PASSWORD) as it was typed.
    with psycopg.connect(live_stack.database.dsn, autocommit=True) as conn:
        conn.execute("DO $$BEGIN PERFORM pg_sleep(1.2); RAISE NOTICE 'card 4111111111111111'; END$$")
    text = run(make_runtime(live_stack, default_role="viewer"), "UVIEWER", "/stats").text
    assert re.search(r"• [\d.]+ ms × \d+ calls?: `DO \?`", text), text
    assert "4111111111111111" not in text


def test_an_operator_gets_the_full_text_only_to_themselves_and_a_viewer_none(make_runtime, live_stack):
    runtime = make_runtime(_short_long_query_threshold(live_stack), default_role="viewer")
    grant(runtime, "UOPERATOR", Role.operator)
    with _held(live_stack.database.dsn, SECRET_QUERY) as pid:
        full = run(runtime, "UOPERATOR", "/queries")
        denied = run(runtime, "UVIEWER", "/queries")
    assert not full.in_channel
    assert f"• pid {pid} (flowstate, active)" in full.text
    assert "[card] AS card /* held by a test */```" in full.text and "4111111111111111" not in full.text
    assert f"Masked in the statements' text: {STATEMENT_MASKS}; and the secrets the redactor knows by their shape." in full.text
    assert "eyJhbGciOiJIUzI1NiJ9" not in full.text, "the redactor still masks what it recognizes"
    assert denied.text == "/queries needs the operator role and you have viewer."


def test_every_container_is_sampled_as_docker_stats_does(make_runtime, live_stack):
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    for service, limit in [("backend", "256.0 MiB"), ("postgres", "1.0 GiB"), ("redis", "256.0 MiB"), ("nginx", "256.0 MiB")]:
        assert re.search(rf"^{service}: CPU [\d.]+%, memory [\d.]+ [KMG]i?B / {re.escape(limit)} \([\d.]+%\)$", text, re.M), text


def test_statement_timings_come_from_pg_stat_statements_or_say_why_not(make_runtime, live_stack, postgres_admin):
    with psycopg.connect(live_stack.database.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.6) /* the slow one */")
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    assert "Slowest statements (mean time, pg_stat_statements; the bot's own and its backups' and drills' left out):" in text
    slow = re.search(r"• ([\d.]+) ms × \d+ calls?: `SELECT pg_sleep\(\$1\) /\* the slow one \*/`", text)
    assert slow and float(slow.group(1)) >= 600, text
    plain = live_stack.model_copy(update={"database": live_stack.database.model_copy(update={"dsn": postgres_admin})})
    text = run(make_runtime(plain, admins=["UA"]), "UA", "/stats").text
    assert "pg_stat_statements is not installed in this database, so there are no statement timings" in text


@pytest.mark.parametrize("window", ["15x", "0m", "8d", "soon"])
def test_a_bad_window_gets_the_usage(make_runtime, window):
    text = run(make_runtime(admins=["UA"]), "UA", f"/stats {window}").text
    assert text.endswith("usage: `/stats [window, e.g. 15m]`"), text


@pytest.mark.parametrize(
    ("window", "answer"),
    [
        ("9" * 5000 + "m", "The window can be at most 7d"),
        ("x" * 5000, "That is not a time window; use a number and s, m, h or d, such as 15m or 2h"),
    ],
)
def test_an_absurd_window_is_one_clear_sentence(make_runtime, window, answer):
    text = run(make_runtime(admins=["UA"]), "UA", f"/stats {window}").text
    assert text == f"{answer}; usage: `/stats [window, e.g. 15m]`"


def test_a_stopped_service_shows_as_not_running_with_its_state(make_runtime, live_stack, stack_container):
    stack_container("python-worker").stop(timeout=5)
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    assert re.search(r"^python-worker: not running \(exited with code \d+\)$", text, re.M), text
    assert re.search(r"^• 🔴 python-worker is not running \(exited with code \d+\)$", text.split("*API errors")[0], re.M), text
    assert re.search(r"^backend: CPU [\d.]+%", text, re.M), "the running ones are still sampled"


def test_a_partial_stack_file_says_which_metrics_were_not_measured(make_runtime, live_stack):
    only_database = StackConfig(database=live_stack.database)
    reply = run(make_runtime(only_database, admins=["UA"]), "UA", "/stats")
    assert reply.text.splitlines()[-1] == (
        "🟢 No threshold crossed in what was measured; not measured: API errors, CPU and memory, AI worker queue."
    )
