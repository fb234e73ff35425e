"""/stats against the live Compose test stack: the four key metrics move when the stack does."""

import re
import threading
import time
import urllib.error
import urllib.request

import psycopg
import pytest
import redis

from tests.conftest import run

BACKEND = "http://127.0.0.1:58002"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _api_counts(text: str) -> tuple[int, int]:
    match = re.search(r"(\d+) of (\d+) requests answered 5xx", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


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
    assert f"{errors} of {total} requests answered 5xx: {rate:.1f}%" in text
    flagged = f"• API error rate {rate:.1f}% (threshold 5%)" in text.split("*API errors")[0]
    assert flagged == (rate > 5.0), text


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
    assert "• AI worker queue 1,000 jobs (threshold 500)" in text.split("*API errors")[0], "flags come first"


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


def test_a_long_running_query_is_listed(make_runtime, live_stack):
    thresholds = live_stack.thresholds.model_copy(update={"long_query_seconds": 1.0})
    stack = live_stack.model_copy(update={"thresholds": thresholds})
    holder = psycopg.connect(live_stack.database.dsn, autocommit=True)
    pid = holder.info.backend_pid

    def hold():
        with pytest.raises(psycopg.errors.QueryCanceled):
            holder.execute("SELECT pg_sleep(30) /* held by a test */")

    sleeper = threading.Thread(target=hold, daemon=True)
    sleeper.start()
    try:
        time.sleep(1.5)
        text = run(make_runtime(stack, admins=["UA"]), "UA", "/stats").text
    finally:
        with psycopg.connect(live_stack.database.dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))
        sleeper.join(timeout=10)
        holder.close()
    assert re.search(rf"• pid {pid} \(flowstate, active\) \d+ s: `SELECT pg_sleep\(30\) /\* held by a test \*/`", text), text
    assert "queries running longer than 1 s" in text.split("*API errors")[0]


def test_every_container_is_sampled_as_docker_stats_does(make_runtime, live_stack):
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    for service, limit in [("backend", "256.0 MiB"), ("postgres", "1.0 GiB"), ("redis", "256.0 MiB"), ("nginx", "256.0 MiB")]:
        assert re.search(rf"^{service}: CPU [\d.]+%, memory [\d.]+ [KMG]i?B / {re.escape(limit)} \([\d.]+%\)$", text, re.M), text


def test_statement_timings_come_from_pg_stat_statements_or_say_why_not(make_runtime, live_stack, postgres_admin):
    with psycopg.connect(live_stack.database.dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(0.6) /* the slow one */")
    text = run(make_runtime(live_stack, admins=["UA"]), "UA", "/stats").text
    assert "Slowest statements (mean time, pg_stat_statements):" in text
    slow = re.search(r"• ([\d.]+) ms × \d+ calls: `SELECT pg_sleep\(\$1\) /\* the slow one \*/`", text)
    assert slow and float(slow.group(1)) >= 600, text
    plain = live_stack.model_copy(update={"database": live_stack.database.model_copy(update={"dsn": postgres_admin})})
    text = run(make_runtime(plain, admins=["UA"]), "UA", "/stats").text
    assert "pg_stat_statements is not installed in this database, so there are no statement timings" in text


@pytest.mark.parametrize("window", ["15x", "0m", "8d", "soon"])
def test_a_bad_window_gets_the_usage(make_runtime, window):
    text = run(make_runtime(admins=["UA"]), "UA", f"/stats {window}").text
    assert text.endswith("usage: `/stats [window, e.g. 15m]`"), text
