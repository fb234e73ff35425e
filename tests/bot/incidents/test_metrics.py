"""An incident's times to acknowledge, mitigate and resolve, from timelines written at chosen times (SQLite and
PostgreSQL), as the post-mortem, /incidents, /incidents --stats and /metrics show them."""

from __future__ import annotations

from datetime import timedelta

from prometheus_client import generate_latest

from bot.adapters.metrics import registry
from bot.frame.config import StackConfig
from bot.incidents.metrics import is_green_health, measure, median
from bot.incidents.model import APPROVAL, COMMAND, NOTE, SLACK_MESSAGE, STATUS
from bot.incidents.timeline import Event
from bot.store.engine import utcnow
from tests.bot.test_metrics import _samples
from tests.conftest import run
from tests.loopback import StatusServer

CHANNEL = "C0OPS"


def _health(at, found: str | None = None) -> Event:
    """A /health as the audit's capture writes it: a green one found nothing (and is no key action)."""
    details = {"outcome": "succeeded", "duration_ms": 800, "command": "/health", "facts": {"down": [], "green": True}}
    if found:
        details["facts"] = {"down": ["backend"], "found": found}
    else:
        details["key"] = False
    return Event(COMMAND, at, f"`/health` found {found}" if found else "`/health` succeeded", "UOP", details, CHANNEL)


def _command(at, line: str, outcome: str, actor: str | None = "UOP") -> Event:
    details = {"outcome": outcome, "duration_ms": 12000, "command": line, "job_id": 7}
    return Event(COMMAND, at, f"`{line}` {outcome}", actor, details, CHANNEL)


def _incident(runtime, start, minutes: list[tuple[float, Event]], resolved_after: float | None, channel=CHANNEL):
    """An incident started at `start` whose timeline holds the events at the given minutes after it."""
    timeline = runtime.incidents.timeline
    incident = timeline.open(channel, "Checkout failing", 2, "UOP", at=start)
    started = Event(STATUS, start, "started the incident: Checkout failing (SEV2)", "UOP", {"change": "started"}, channel)
    events = [started]
    for after, event in minutes:
        event.occurred_at = start + timedelta(minutes=after)
        event.channel_id = channel
        events.append(event)
    timeline.add(incident.id, *events)
    if resolved_after is not None:
        at = start + timedelta(minutes=resolved_after)
        timeline.resolve(incident.id, "UOP", "fixed", at=at)
        timeline.add(incident.id, Event(STATUS, at, "resolved the incident: fixed", "UOP", {"change": "resolved"}, channel))
    return incident


def _scripted(runtime, start):
    """Acknowledged at 4 min (the note: not the start, the bot's step, a Slack message or a denied command before
    it), mitigated at 13 min (the first green /health after the /restart at 10 min; the green one at 6 min came
    before any change), resolved at 40 min."""
    return _incident(runtime, start, [
        (0.5, Event(APPROVAL, start, "Request #3 `/restart backend` waits for the change before it to finish", None,
                    {"step": "waiting", "job_id": 3, "command": "/restart backend"})),
        (0.7, Event(SLACK_MESSAGE, start, "looking", "UALICE", None, ts="1700000000.000100")),
        (1, _command(start, "/audit", "denied", "USTRANGER")),
        (4, Event(NOTE, start, "the CDN says degraded", "UBOB")),
        (5, _health(start, "1 failing check")),
        (6, _health(start)),
        (10, _command(start, "/restart backend", "failed")),
        (11, _health(start, "1 failing check")),
        (13, _health(start)),
        (20, _health(start)),
    ], resolved_after=40)


def test_the_times_of_a_scripted_timeline_are_the_hand_computed_ones(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    start = utcnow().replace(microsecond=0) - timedelta(days=2)
    incident = _scripted(runtime, start)
    timeline = runtime.incidents.timeline
    measured = measure(timeline.get(incident.id), timeline.events(incident.id))
    assert (measured.acknowledge, measured.mitigate, measured.resolve) == (240.0, 780.0, 2400.0)
    assert measured.mitigated_by == "/restart backend"

    report = runtime.incidents.report(timeline.get(incident.id), {})
    assert "## Response times\n\n- Time to acknowledge: 4 min\n- Time to mitigate: 13 min (the first green /health after `/restart backend`)\n- Time to resolve: 40 min\n" in report

    listed = run(runtime, "UOP", "/incidents", channel=CHANNEL).text
    assert listed.endswith(" · ack 4 min · mitigated 13 min · resolved 40 min"), listed


def test_an_open_unacknowledged_incident_shows_dashes(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    start = utcnow().replace(microsecond=0) - timedelta(hours=1)
    # A /restart with no /health after it mitigates nothing; a rejected command by a person acknowledges nothing.
    incident = _incident(runtime, start, [(2, _command(start, "/audit 0", "rejected")), (3, _command(start, "/restart", "succeeded", None))], None)
    timeline = runtime.incidents.timeline
    measured = measure(timeline.get(incident.id), timeline.events(incident.id))
    assert (measured.acknowledge, measured.mitigate, measured.resolve) == (None, None, None)
    assert run(runtime, "UOP", "/incidents", channel=CHANNEL).text.endswith(" · ack — · mitigated — · resolved —")
    report = runtime.incidents.report(timeline.get(incident.id), {})
    assert "- Time to acknowledge: — (no one acted after the start)\n" in report
    assert "- Time to mitigate: — (no /health found everything green after a /restart, /rollback or /restore)\n" in report
    assert "- Time to resolve: — (still open)\n" in report


def test_commands_run_in_the_channel_acknowledge_it(make_runtime, database_url):
    """The events the bot itself writes: the start does not acknowledge, the first command of a person does."""
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    run(runtime, "UOP", "/incident start Slow API", channel=CHANNEL)
    run(runtime, "UOP", "/whoami", channel=CHANNEL)
    run(runtime, "UOP", "/incident resolve", channel=CHANNEL)
    timeline = runtime.incidents.timeline
    incident, events = timeline.get(1), timeline.events(1)
    whoami = next(e for e in events if e.kind == COMMAND)
    measured = measure(incident, events)
    assert measured.acknowledge == (whoami.occurred_at - incident.started_at).total_seconds()
    assert measured.resolve == (incident.resolved_at - incident.started_at).total_seconds()
    assert measured.mitigate is None


def test_a_real_green_health_after_a_change_mitigates_a_red_one_does_not(make_runtime):
    """/health run in the channel as the audit's capture records it: red before the change, then green after it."""
    with StatusServer(503) as backend:
        runtime = make_runtime(StackConfig(probes=[{"name": "backend", "kind": "http", "url": backend.url}]), admins=["UOP"])
        run(runtime, "UOP", "/incident start Backend down", channel=CHANNEL)
        run(runtime, "UOP", "/health", channel=CHANNEL)  # red
        timeline = runtime.incidents.timeline
        timeline.add(1, _command(utcnow(), "/restart backend", "succeeded"))  # the change's row (its run needs Docker)
        run(runtime, "UOP", "/health", channel=CHANNEL)  # still red
        backend.status = 200
        run(runtime, "UOP", "/health", channel=CHANNEL)  # green
        run(runtime, "UOP", "/health", channel=CHANNEL)  # green again: not the first
    incident, events = timeline.get(1), timeline.events(1)
    healths = [e for e in events if e.kind == COMMAND and e.details["command"] == "/health"]
    assert [e.text for e in healths] == ["`/health` found 1 failing check"] * 2 + ["`/health` succeeded"] * 2
    measured = measure(incident, events)
    assert measured.mitigate == (healths[2].occurred_at - incident.started_at).total_seconds()
    assert measured.acknowledge == (healths[0].occurred_at - incident.started_at).total_seconds()
    assert measured.mitigated_by == "/restart backend"


def test_a_health_with_nothing_to_check_is_never_green(make_runtime):
    runtime = make_runtime(admins=["UOP"])  # no stack file: /health says there is nothing to check
    run(runtime, "UOP", "/incident start Backend down", channel=CHANNEL)
    runtime.incidents.timeline.add(1, _command(utcnow(), "/rollback", "succeeded"))
    assert run(runtime, "UOP", "/health", channel=CHANNEL).text.startswith("No services to check")
    assert measure(runtime.incidents.timeline.get(1), runtime.incidents.timeline.events(1)).mitigate is None


def test_a_health_row_is_green_by_its_verdict_or_when_it_checked_containers_and_found_nothing():
    def row(facts):
        return Event(COMMAND, utcnow(), "`/health` succeeded", "UOP", {"outcome": "succeeded", "command": "/health", "facts": facts})

    assert is_green_health(row({"down": []}))
    assert not is_green_health(row({"down": []} | {"found": "1 check above a threshold"}))
    assert not is_green_health(row({})), "nothing checked"
    assert is_green_health(row({"green": True})), "a /health of probes only, every one green"


def test_medians_of_an_odd_and_an_even_count():
    assert median([300.0, 60.0, 120.0]) == 120.0
    assert median([400.0, 100.0, 300.0, 200.0]) == 250.0
    assert median([]) is None


def test_medians_over_30_and_90_days_in_incidents_stats_and_metrics(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    now = utcnow().replace(microsecond=0)

    def acked_at(minutes: float, days_ago: float, resolved_after: float | None, channel: str):
        start = now - timedelta(days=days_ago)
        note = Event(NOTE, start, "on it", "UBOB")
        _incident(runtime, start, [(minutes, note), (minutes + 1, _command(start, "/rollback", "succeeded")), (minutes + 5, _health(start))],
                  resolved_after, channel)

    # In the last 30 days: acknowledged at 2, 4 and 9 min (an odd count: 4 min); resolved at 30 and 60 min, the third
    # still open (an even count: 45 min); mitigated 5 min after each acknowledgement (7, 9, 14: 9 min).
    acked_at(2, 3, 30, "C1")
    acked_at(9, 10, 60, "C2")
    acked_at(4, 20, None, "C3")
    # 30 to 90 days ago: acknowledged at 20 min, resolved at 120 min, plus one nobody acknowledged, resolved at 10 min.
    acked_at(20, 50, 120, "C4")
    _incident(runtime, now - timedelta(days=60), [], 10, "C5")
    # Older than 90 days: in no median.
    acked_at(1, 100, 5, "C6")

    said = run(runtime, "UOP", "/incidents --stats", channel=CHANNEL).text
    assert "Last 30 days, 3 incidents: median time to acknowledge 4 min (3 of 3) · time to mitigate 9 min (3 of 3) · time to resolve 45 min (2 of 3)" in said
    # 90 days: acknowledged 2, 4, 9, 20 (6 min 30 s, shown as 6 min); resolved 10, 30, 60, 120 (45 min).
    assert "Last 90 days, 5 incidents: median time to acknowledge 6 min (4 of 5) · time to mitigate 11 min (4 of 5) · time to resolve 45 min (4 of 5)" in said

    values = _samples(generate_latest(registry(runtime.store)).decode())
    seconds = {
        (measure_, window): values[("flowstate_bot_incident_median_seconds", (("measure", measure_), ("window", window)))]
        for measure_ in ("acknowledge", "mitigate", "resolve") for window in ("30d", "90d")
    }
    assert seconds == {
        ("acknowledge", "30d"): 240, ("mitigate", "30d"): 540, ("resolve", "30d"): 2700,
        ("acknowledge", "90d"): 390, ("mitigate", "90d"): 690, ("resolve", "90d"): 2700,
    }
    assert values[("flowstate_bot_incidents_measured", (("measure", "resolve"), ("window", "30d")))] == 2
    assert values[("flowstate_bot_incidents_measured", (("measure", "acknowledge"), ("window", "90d")))] == 4


def test_with_no_incidents_the_stats_and_metrics_count_none(make_runtime):
    runtime = make_runtime(admins=["UOP"])
    said = run(runtime, "UOP", "/incidents --stats", channel=CHANNEL).text
    assert "Last 30 days, 0 incidents: median time to acknowledge — (0 of 0) · time to mitigate — (0 of 0) · time to resolve — (0 of 0)" in said
    values = _samples(generate_latest(registry(runtime.store)).decode())
    assert values[("flowstate_bot_incidents_measured", (("measure", "mitigate"), ("window", "90d")))] == 0
    assert not [key for key in values if key[0] == "flowstate_bot_incident_median_seconds"], "no median of nothing"
