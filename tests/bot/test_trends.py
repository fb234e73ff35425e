"""The trends: the key metrics sampled once a minute (one replica wins each minute), kept FLOWSTATE_SAMPLE_DAYS, and
drawn: /stats WINDOW's chart and the post-mortem's, a PNG whose lines are the stored samples, a gap drawn as a gap."""

from __future__ import annotations

import io
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import redis
from matplotlib import dates as mdates
from matplotlib import image as mimage
from sqlalchemy import func, insert, select

from bot.deploy.marks import trend_chart
from bot.deploy.model import Release
from bot.frame.config import QueueSection, RedisSection, StackConfig
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.stack.chart import COLUMNS
from bot.stack.stack import Stack
from bot.stack.trends import MetricSample, SampledMinute, Sampler, minute_at, minute_number, minute_of
from bot.store.engine import utcnow
from tests.conftest import grant, run

PNG = b"\x89PNG\r\n\x1a\n"
CHANNEL = "C0OPS"


def _decoded(png: bytes) -> np.ndarray:
    assert png.startswith(PNG)
    return mimage.imread(io.BytesIO(png), format="png")


def _rows(store) -> list[tuple[str, datetime, float]]:
    with store.session() as session:
        return [(series, minute_at(minute), value) for series, minute, value in session.execute(
            select(MetricSample.series, MetricSample.minute, MetricSample.value).order_by(MetricSample.minute, MetricSample.series)
        )]


def _stored(store) -> dict[str, list[tuple[datetime, float]]]:
    series: dict[str, list[tuple[datetime, float]]] = {}
    for name, minute, value in _rows(store):
        series.setdefault(name, []).append((minute, value))
    return series


def _line(chart, series: str) -> list[tuple[datetime | None, float | None]]:
    """The Line2D of a series in the figure drawn, read back as (minute, value), None at a break."""
    line = chart.artists[series]
    return [
        (None, None) if np.isnan(x) else (mdates.num2date(x).replace(microsecond=0), float(y))
        for x, y in zip(line.get_xdata(), line.get_ydata())
    ]


@pytest.fixture
def queue(redis_url):
    """A real Redis list as the AI worker queue, with three jobs in it."""
    key = f"trends-test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(redis_url)
    client.rpush(key, "a", "b", "c")
    yield key
    client.delete(key)
    client.close()


def _queue_stack(redis_url: str, key: str) -> StackConfig:
    return StackConfig(redis=RedisSection(url=redis_url), queue=QueueSection(keys=[key]))


def test_the_chart_is_a_png_whose_lines_are_the_stored_samples_with_a_missing_minute_drawn_as_a_gap(make_runtime):
    runtime = make_runtime()
    end = minute_of(utcnow())
    start = end - timedelta(hours=1)
    at = [end - timedelta(minutes=m) for m in (50, 49, 48, 45, 44)]  # 47 and 46 were not measured
    runtime.sampler.store(at[0], {"edge_error_rate": 1.5, "cpu:backend": 20.0, "queue_length": 4.0})
    runtime.sampler.store(at[1], {"edge_error_rate": 2.5, "cpu:backend": 30.0, "queue_length": 0.0})
    runtime.sampler.store(at[2], {"edge_error_rate": 12.0, "cpu:backend": 40.0})  # the queue could not be read
    runtime.sampler.store(at[3], {"edge_error_rate": 0.5, "cpu:backend": 10.0, "queue_length": 2.0})
    runtime.sampler.store(at[4], {"edge_error_rate": 0.0, "cpu:backend": 15.0, "queue_length": 1.0})
    with runtime.store.session.begin() as session:
        session.add(Release(stack=runtime.stack.name, commit="4f1c2d3e5a6b7c8d9e0f", kind="deploy", started_at=at[2],
                            finished_at=at[2], health="good"))
    runtime.audit.record(Invocation("UOLGA", "restart", "backend", CHANNEL, "console"), "succeeded", arguments={"services": ["backend"]})

    chart = trend_chart(runtime.store, runtime.stack.name, start, utcnow(), timezone.utc, "Key metrics")

    image = _decoded(chart.png)
    assert image.shape[1] == 1200 and image.shape[0] > 300, "a decodable PNG, 1200 pixels wide"
    assert _line(chart, "edge_error_rate") == [
        (at[0], 1.5), (at[1], 2.5), (at[2], 12.0), (None, None), (at[3], 0.5), (at[4], 0.0),
    ], "every stored sample, in order, and the line breaks where two minutes were not measured"
    assert _line(chart, "cpu:backend") == [(at[0], 20.0), (at[1], 30.0), (at[2], 40.0), (None, None), (at[3], 10.0), (at[4], 15.0)]
    assert _line(chart, "queue_length") == [(at[0], 4.0), (at[1], 0.0), (None, None), (at[3], 2.0), (at[4], 1.0)], (
        "a minute whose queue could not be read is a gap, not a 0"
    )
    stored = {(series, minute): value for series, minute, value in _rows(runtime.store)}
    for series in ("edge_error_rate", "cpu:backend", "queue_length"):
        drawn = {(series, minute): value for minute, value in _line(chart, series) if minute is not None}
        assert drawn == {key: value for key, value in stored.items() if key[0] == series}
    assert [(mark.label, mark.kind) for mark in chart.marks] == [("deploy 4f1c2d3", "release"), ("restart backend", "restart")]
    assert chart.marks[0].at == at[2]


def test_a_week_is_read_as_each_pixel_columns_minimum_and_maximum_and_keeps_its_spikes_and_gaps(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url)
    end = minute_of(utcnow())
    start = end - timedelta(days=7)
    first = minute_number(start)
    values = {first + m: 5.0 for m in range(7 * 1440) if not 8000 <= m < 8030}  # half an hour nobody measured
    values[first + 5000] = 97.0  # one minute's spike
    with runtime.store.engine.begin() as connection:
        connection.execute(insert(MetricSample.__table__), [dict(series="cpu:backend", minute=m, value=v) for m, v in values.items()])

    chart = trend_chart(runtime.store, runtime.stack.name, start, end, timezone.utc, "Key metrics, last 7d")

    _decoded(chart.png)
    drawn = chart.drawn["cpu:backend"]
    assert drawn.dense and len(drawn.x) <= COLUMNS + 1, "at most a point per pixel column (and the gap's break)"
    assert np.nanmax(drawn.high) == 97.0 and np.nanmin(drawn.low) == 5.0, "the spike survives, and nothing is made up"
    (broken,) = np.flatnonzero(np.isnan(drawn.x))
    gap_start, gap_end = (first + 8000) * 60, (first + 8030) * 60
    assert drawn.x[broken - 1] < gap_start and drawn.x[broken + 1] >= gap_end - 11 * 60, "the line breaks at the missing half hour"
    assert chart.artists["cpu:backend"].get_label() == "backend"


def test_two_replicas_sample_each_minute_once(make_runtime, postgres_url, redis_url, queue):
    replicas = [make_runtime(_queue_stack(redis_url, queue), database_url=postgres_url) for _ in range(2)]
    minutes = [minute_of(utcnow()) - timedelta(minutes=m) for m in range(5, 0, -1)]
    won: list[tuple[datetime, str]] = []

    def sample(runtime):
        for minute in minutes:
            if runtime.sampler.sample(minute):
                won.append((minute, runtime.holder))

    threads = [threading.Thread(target=sample, args=(runtime,)) for runtime in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(minute for minute, _holder in won) == minutes, "each minute won by one replica"
    assert _rows(replicas[0].store) == [("queue_length", minute, 3.0) for minute in minutes], "one row per minute: three jobs queued"
    with replicas[0].store.session() as session:
        claims = {minute_at(minute): by for minute, by in session.execute(select(SampledMinute.minute, SampledMinute.claimed_by))}
    assert claims == dict(won)

    # The runners' sweep: both offer the same new minute; one measures it (on its own thread), the other does nothing.
    now = minutes[-1] + timedelta(minutes=1, seconds=3)
    for runtime in replicas:
        runtime.sampler.sweep(now)
    for runtime in replicas:
        runtime.sampler.close(timeout=60)  # waits for the measurement's thread
    assert _rows(replicas[0].store)[-1] == ("queue_length", minute_of(now), 3.0)
    assert len(_rows(replicas[0].store)) == 6


def test_a_metric_that_cannot_be_read_is_not_stored_as_zero(make_runtime, redis_url, queue):
    runtime = make_runtime(_queue_stack(redis_url, queue))
    unreachable = Sampler(runtime.store, Stack.build(_queue_stack("redis://127.0.0.1:1/0", queue), None), "other", 14)
    first, second, third = (minute_of(utcnow()) - timedelta(minutes=m) for m in (3, 2, 1))
    assert runtime.sampler.sample(first)
    assert unreachable.sample(second), "it won the minute, and could not read Redis"
    assert runtime.sampler.sample(third)
    assert _rows(runtime.store) == [("queue_length", first, 3.0), ("queue_length", third, 3.0)]
    chart = trend_chart(runtime.store, runtime.stack.name, first - timedelta(minutes=5), utcnow(), timezone.utc, "Key metrics")
    assert _line(chart, "queue_length") == [(first, 3.0), (None, None), (third, 3.0)]


def test_retention_deletes_only_rows_older_than_the_sample_days_in_batches(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, sample_days=1)
    now = minute_of(utcnow())
    old = [now - timedelta(days=1, minutes=m) for m in range(150, 0, -1)]  # 150 minutes past the retention
    young = [now - timedelta(days=1) + timedelta(minutes=m) for m in (0, 1, 2)] + [now]
    for minute in old + young:
        assert runtime.sampler.claim(minute)
        runtime.sampler.store(minute, {"cpu:backend": 1.0, "mem:backend": 2.0})
    assert runtime.sampler.prune(now) == 60, "a batch of 60 minutes at a time"
    assert runtime.sampler.prune(now) == 60
    assert runtime.sampler.prune(now) == 30
    assert runtime.sampler.prune(now) == 0
    assert sorted({minute for _series, minute, _value in _rows(runtime.store)}) == young
    with runtime.store.session() as session:
        assert [minute_at(minute) for minute in sorted(session.scalars(select(SampledMinute.minute)))] == young
        assert session.scalar(select(func.count()).select_from(MetricSample)) == 2 * len(young)


def test_stats_with_a_window_writes_its_chart_in_the_console_and_without_one_is_unchanged(make_runtime, redis_url, queue):
    runtime = make_runtime(_queue_stack(redis_url, queue))
    grant(runtime, "UCLEO", Role.viewer)
    plain = run(runtime, "UCLEO", "/stats").text
    assert "Chart" not in plain and "chart" not in plain
    assert run(runtime, "UCLEO", "/stats 6h").text.splitlines()[-1] == (
        "No samples are stored for the last 6h, so there is no chart; the bot's runners sample the metrics each minute "
        "(FLOWSTATE_SAMPLE_DAYS keeps 14 days)."
    )
    minute = minute_of(utcnow()) - timedelta(minutes=2)
    assert runtime.sampler.sample(minute)
    said = run(runtime, "UCLEO", "/stats 6h").text.splitlines()[-1]
    assert said.startswith(f"Chart of the last 6h: {runtime.settings.home / 'charts'}/stats-") and said.endswith("-6h.png")
    path = said.split(": ", 1)[1]
    with open(path, "rb") as png:
        _decoded(png.read())
    assert run(runtime, "UCLEO", "/stats 8d").text == "The window can be at most 7d; usage: `/stats [window, e.g. 15m]`"


def test_stats_with_a_window_posts_its_chart_to_the_channel_in_slack(slack_bot, slack_double, redis_url, queue):
    sender, runtime = slack_bot(_queue_stack(redis_url, queue))
    grant(runtime, "UCLEO", Role.viewer)
    # Minutes before the bot started: its own runner samples only the minutes since.
    minutes = [minute_of(utcnow()) - timedelta(minutes=m) for m in (5, 4, 3)]
    for minute in minutes:
        assert runtime.sampler.sample(minute)
    assert sender.slash("/stats", "1h", "UCLEO", CHANNEL, response_url=slack_double.response_url("stats")).status == 200
    (answer,) = slack_double.wait_for_response("stats", timeout=60)
    slack_double.wait_for("files.completeUploadExternal", count=1, timeout=60)
    (upload,) = slack_double.uploads()
    assert answer["text"].splitlines()[-1] == f"Chart of the last 1h: posted in this channel as {upload.filename}."
    assert upload.channels == [CHANNEL] and upload.filename.endswith("-1h.png") and upload.completed
    _decoded(upload.content)


def test_the_postmortem_has_the_chart_of_its_incidents_window(make_runtime, redis_url, queue):
    runtime = make_runtime(_queue_stack(redis_url, queue))
    grant(runtime, "UOLGA", Role.operator)
    assert run(runtime, "UOLGA", "/incident start Queue stuck --sev 2", CHANNEL).text.startswith("You started incident #1")
    incident = runtime.incidents.timeline.get(1)
    assert runtime.sampler.sample(minute_of(incident.started_at))
    run(runtime, "UOLGA", "/incident resolve Worker restarted", CHANNEL)
    said = run(runtime, "UOLGA", "/postmortem", CHANNEL).text
    path = runtime.settings.home / "charts" / "postmortem-incident-1-trends.png"
    assert f"Its chart: {path}." in said.splitlines()[0]
    _decoded(path.read_bytes())
    assert "## Trends\n\n![Key metrics of incident #1](postmortem-incident-1-trends.png)\n\n" in said
    assert _stored(runtime.store) == {"queue_length": [(minute_of(incident.started_at), 3.0)]}


def test_a_postmortem_of_a_window_with_no_samples_says_there_is_no_chart(make_runtime):
    runtime = make_runtime()
    grant(runtime, "UOLGA", Role.operator)
    run(runtime, "UOLGA", "/incident start Nothing sampled", CHANNEL)
    said = run(runtime, "UOLGA", "/postmortem", CHANNEL).text
    assert "## Trends\n\nNo metric samples are stored for the incident's window, so there is no chart" in said
    assert "Its chart" not in said


def test_the_live_stack_is_sampled_and_its_chart_draws_what_was_stored(make_runtime, live_stack):
    runtime = make_runtime(live_stack)
    minutes = [minute_of(utcnow()) - timedelta(minutes=1), minute_of(utcnow())]
    for minute in minutes:
        assert runtime.sampler.sample(minute)
    stored = _stored(runtime.store)
    services = ("backend", "frontend", "nginx", "postgres", "python-worker", "redis")
    expected = {f"{kind}:{service}" for kind in ("cpu", "mem") for service in services} | {"db_connections", "queue_length"}
    assert expected <= set(stored), sorted(stored)
    assert all(value >= 0 for samples in stored.values() for _minute, value in samples)
    chart = trend_chart(runtime.store, runtime.stack.name, minutes[0] - timedelta(minutes=30), utcnow(), timezone.utc, "Key metrics")
    _decoded(chart.png)
    assert {series: _line(chart, series) for series in stored} == stored, "each line holds the stored samples of its series"


def test_the_postmortem_in_slack_posts_the_chart_beside_the_report_that_names_it(slack_bot, slack_double, redis_url, queue):
    sender, runtime = slack_bot(_queue_stack(redis_url, queue))
    grant(runtime, "UOLGA", Role.operator)

    def slash(line: str, name: str) -> str:
        command, _, text = line.partition(" ")
        assert sender.slash(command, text, "UOLGA", CHANNEL, response_url=slack_double.response_url(name)).status == 200
        return slack_double.wait_for_response(name, timeout=60)[0]["text"]

    assert slash("/incident start Queue stuck", "start").startswith("You started incident #1")
    started = minute_of(runtime.incidents.timeline.get(1).started_at)
    deadline = time.monotonic() + 60
    while not any(minute >= started for minute, _value in _stored(runtime.store).get("queue_length", [])):
        assert time.monotonic() < deadline, "the runner's sweep sampled no minute of the incident in 60 s"
        time.sleep(0.5)  # the bot's own runner samples each minute; the test only waits for it
    slash("/incident resolve Worker restarted", "resolve")
    said = slash("/postmortem", "pm")
    assert said.endswith(" Its chart is posted as postmortem-incident-1-trends.png.")
    chart, report = sorted(slack_double.uploads(), key=lambda upload: upload.filename.endswith(".md"))
    assert (chart.filename, chart.channels, report.filename) == ("postmortem-incident-1-trends.png", [CHANNEL], "postmortem-incident-1.md")
    _decoded(chart.content)
    assert "## Trends\n\n![Key metrics of incident #1](postmortem-incident-1-trends.png)\n\n" in report.content.decode()


def test_a_sweep_whose_claim_fails_offers_the_next_minute_again(make_runtime, redis_url, queue):
    runtime = make_runtime(_queue_stack(redis_url, queue))
    minute = minute_of(utcnow()) - timedelta(minutes=10)
    claim = runtime.sampler.claim
    runtime.sampler.claim = lambda _minute: 1 / 0  # the store away for this minute
    with pytest.raises(ZeroDivisionError):
        runtime.sampler.sweep(minute + timedelta(seconds=5))
    runtime.sampler.claim = claim
    runtime.sampler.sweep(minute + timedelta(minutes=1, seconds=5))
    runtime.sampler.close(timeout=60)
    assert _rows(runtime.store) == [("queue_length", minute + timedelta(minutes=1), 3.0)]
