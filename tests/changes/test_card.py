"""The change card on a stack in memory (tests/fakes.py) and the embedded SQLite store: what each source shows, what a
source that cannot be read says, the secrets it never shows, and the windows /changes refuses. The live stack's own
tests (a release, a restart and an OOM kill from the real engine, the Slack button) are in test_card_live.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.frame.roles import Role
from bot.stack.compose import EngineEvent, LastRun
from bot.store.engine import utcnow
from tests.conftest import grant, run
from tests.duties.conftest import scheduled  # noqa: F401 (a fixture)
from tests.fakes import FakeStack

SECRET, NEW_SECRET = "hunter2-Zq8xLmP4vR7", "correct-horse-9Kd2Wq"


@pytest.fixture
def cards(make_runtime):
    yield from _cards(make_runtime)


@pytest.fixture
def cards_on(make_runtime, database_url):
    """The same, on SQLite and on PostgreSQL: the snapshots' one-winner UPDATE on both stores."""
    yield from _cards(make_runtime, database_url=database_url)


def _cards(make_runtime, **settings):
    runtime = make_runtime(admins=["UADMIN"], **settings)
    runtime.stack = FakeStack(["backend", "frontend"])
    grant(runtime, "UVIEW", Role.viewer)
    yield runtime
    runtime.stack.pool.shutdown(wait=False)


def hhmm(at) -> str:
    return at.strftime("%H:%M")


def test_restarts_exits_oom_kills_and_health_flips_show_with_their_times_and_a_restart_is_one_line(cards):
    now = utcnow()
    restart, oom, flip, exited = now - timedelta(minutes=50), now - timedelta(minutes=30), now - timedelta(minutes=20), now - timedelta(minutes=10)
    cards.stack.fake.engine_events = [
        EngineEvent(restart - timedelta(seconds=2), "backend", "fake-backend-1", "die", 0),
        EngineEvent(restart, "backend", "fake-backend-1", "restart"),
        EngineEvent(oom, "frontend", "fake-frontend-1", "oom"),
        EngineEvent(oom + timedelta(seconds=1), "frontend", "fake-frontend-1", "die", 137),
        EngineEvent(flip, "backend", "fake-backend-1", "health_status: unhealthy"),
        EngineEvent(flip + timedelta(seconds=4), "backend", "fake-backend-1", "health_status: unhealthy"),
        EngineEvent(exited, "frontend", "fake-frontend-1", "die", 1),
    ]
    text = run(cards, "UVIEW", "/changes").text
    assert f"{hhmm(restart)} backend restarted" in text, text
    assert f"{hhmm(oom)} frontend was killed for going over its memory limit (OOM kill), exit code 137" in text
    assert f"{hhmm(flip)} backend became unhealthy" in text and text.count("became unhealthy") == 1, "a repeated status is no flip"
    assert f"{hhmm(exited)} frontend exited with code 1" in text
    assert "exited with code 0" not in text and "exited with code 137" not in text, "a restart's and an OOM kill's die are folded in"
    assert "No release ledger: the stack file has no [deploy] section." in text


def test_an_environment_variable_that_changes_is_named_and_its_value_is_never_shown(cards_on):
    cards = cards_on
    fake = cards.stack.fake
    fake.environment = {"backend": {"API_TOKEN": SECRET, "DATABASE_URL": f"postgresql://app:{SECRET}@db/app", "PORT": "80"}}
    first = run(cards, "UVIEW", "/changes").text
    assert "No change of the stack file or of services' environment in the last 6 h." in first, first
    fake.environment["backend"] = {"API_TOKEN": NEW_SECRET, "DATABASE_URL": f"postgresql://app:{NEW_SECRET}@db/app", "PORT": "80", "DEBUG": "1"}
    second = run(cards, "UVIEW", "/changes").text
    assert "backend: env API_TOKEN changed" in second and "backend: env DATABASE_URL changed" in second, second
    assert "backend: env DEBUG added" in second and "PORT" not in second
    for value in (SECRET, NEW_SECRET, "hunter2", "correct-horse"):
        assert value not in second
    with cards.store.session() as session:
        from sqlalchemy import select

        from bot.changes.model import ChangeSnapshot, NoticedChange

        stored = repr([(s.digests, s.salt) for s in session.scalars(select(ChangeSnapshot))])
        noticed = [n.what for n in session.scalars(select(NoticedChange))]
    assert SECRET not in stored and NEW_SECRET not in stored, "digests only"
    assert sorted(noticed) == ["env API_TOKEN changed", "env DATABASE_URL changed", "env DEBUG added"], "noticed once, not per card"
    assert run(cards, "UVIEW", "/changes").text.count("env API_TOKEN changed") == 1


def test_the_commands_that_changed_something_show_who_and_when_and_those_that_only_showed_do_not(cards):
    grant(cards, "UOP", Role.viewer)
    before = utcnow()
    assert run(cards, "UADMIN", "/role grant UOP operator").text
    run(cards, "UADMIN", "/role list")
    run(cards, "UADMIN", "/freeze")
    text = run(cards, "UVIEW", "/changes 1h").text
    assert f"{hhmm(before)} `/role grant UOP operator` by <@UADMIN> → succeeded" in text or \
        f"{hhmm(utcnow())} `/role grant UOP operator` by <@UADMIN> → succeeded" in text, text
    assert "/role list" not in text and "`/freeze`" not in text


def test_a_source_that_cannot_be_read_is_named_and_never_reads_as_nothing_changed(cards):
    cards.stack.fake.events_fail = "The Docker engine is not reachable at unix:///nowhere.sock."
    text = run(cards, "UVIEW", "/changes").text
    assert "⚠️ Docker events could not be read: The Docker engine is not reachable at unix:///nowhere.sock." in text, text
    assert "No restart, exit, OOM kill or health change" not in text


def test_events_the_engine_no_longer_keeps_are_said_to_be_missing_and_each_containers_last_exit_stands_in(cards):
    now = utcnow()
    kept, exited, started = now - timedelta(minutes=7), now - timedelta(hours=2), now - timedelta(hours=2) + timedelta(minutes=1)
    cards.stack.fake.events_kept_from = kept
    cards.stack.fake.runs = [
        LastRun("backend", "fake-backend-1", started, exited, 137, True, True),
        LastRun("frontend", "fake-frontend-1", now - timedelta(days=2), None, 0, False, True),  # before the window
    ]
    text = run(cards, "UVIEW", "/changes").text
    assert f"Docker events before {hhmm(kept)} are no longer kept by the engine." in text, text
    assert f"{hhmm(exited)} backend exited with code 137 after going over its memory limit (OOM kill)" in text
    assert f"{hhmm(started)} backend started" in text and "frontend" not in text


@pytest.mark.parametrize("window, said", [
    ("8d", "The window can be at most 7d; usage: `/changes [window, e.g. 6h]`"),
    ("soon", "'soon' is not a time window; use a number and s, m, h or d, such as 15m or 2h; usage: `/changes [window, e.g. 6h]`"),
    ("-1h", None),
])
def test_a_bad_window_is_refused_in_one_sentence(cards, window, said):
    reply = run(cards, "UVIEW", f"/changes {window}")
    assert "What changed" not in reply.text, reply.text
    if said:
        assert reply.text == said


def test_the_longest_window_is_seven_days_and_a_viewer_may_ask(cards):
    text = run(cards, "UVIEW", "/changes 7d").text
    assert text.startswith("What changed in fake in the last 7 d"), text


def test_an_incident_start_in_the_console_shows_the_card_with_its_reply(cards):
    grant(cards, "UOP", Role.operator)
    cards.stack.fake.engine_events = [EngineEvent(utcnow() - timedelta(minutes=5), "backend", "fake-backend-1", "restart")]
    text = run(cards, "UOP", "/incident start Checkout failing --sev 2").text
    assert "What changed before incident #1 in fake in the last 6 h" in text, text
    assert "backend restarted" in text


def test_a_failing_health_ends_with_the_card_and_a_healthy_one_does_not(cards):
    assert "What changed" not in run(cards, "UVIEW", "/health").text
    cards.stack.fake.fail("backend")
    text = run(cards, "UVIEW", "/health").text
    assert "What changed in fake in the last 6 h" in text, text


def test_a_watch_alert_is_posted_with_the_card_of_the_hours_before_it(scheduled):
    from tests.duties.test_watch import START, Values, checks

    values = Values()
    duties = scheduled(START, values, watch_minutes=5, watch_checks=2)
    duties.rt.stack = FakeStack(["backend"])
    duties.rt.stack.fake.engine_events = [EngineEvent(START - timedelta(minutes=40), "backend", "fake-backend-1", "restart")]
    said = checks(duties, values, [True, True])
    (alert,) = said[1]
    head, card = alert.split("\n\n", 1)
    assert head.startswith("🚨 *Watch: cpu:backend*") and card.startswith("What changed before this alert in fake in the last 6 h"), alert
    assert "10:20 backend restarted" in card, "at the scheduler's time, in the configured zone (CET)"
    duties.rt.stack.pool.shutdown(wait=False)


def test_an_incident_start_posts_the_card_in_the_incidents_channel(cards):
    from tests.duties.conftest import ChannelPosts

    channel = ChannelPosts()
    cards.notifier = channel
    grant(cards, "UOP", Role.operator)
    reply = run(cards, "UOP", "/incident start Checkout failing", channel="C0INC")
    assert "What changed" not in reply.text, "the card is a message of the channel, not a part of the reply"
    posted = [(where, r.text) for where, r in channel.posts if r.text.startswith("What changed before incident #1")]
    assert [where for where, _text in posted] == ["C0INC"], channel.texts
    (card,) = [r for _where, r in channel.posts if r.text.startswith("What changed before incident #1")]
    assert card.in_channel and card.blocks[0]["type"] == "header"
