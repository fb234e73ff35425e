"""An incident's lifecycle and the timeline that records itself, through the console's path, on SQLite and PostgreSQL."""

from datetime import datetime, timezone

from bot.incidents.model import APPROVAL, COMMAND, NOTE, SEVERITY, SLACK_MESSAGE, STATUS
from bot.incidents.timeline import Event
from bot.frame.roles import Role
from tests.bot.test_approvals import _decide, _runtime
from tests.conftest import grant, run


def _timeline(runtime, incident_id=1):
    return [(e.kind, e.actor, e.text) for e in runtime.incidents.timeline.events(incident_id)]


def test_one_open_incident_per_channel_and_a_second_start_says_which_is_open(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"], timezone="Europe/Berlin")
    first = run(runtime, "UOP", "/incident start Checkout failing --sev 2", channel="C0OPS")
    assert first.text.startswith("You started incident #1 (SEV2); the timeline records itself from now on.")
    again = run(runtime, "UOP", "/incident start Another one", channel="C0OPS").text
    assert again.startswith("Incident #1 (Checkout failing, SEV2) has been open in this channel since ")
    assert again.endswith("; resolve it with /incident resolve before starting another.")
    assert run(runtime, "UOP", "/incident start Elsewhere", channel="C0DB").text.startswith("You started incident #2 (SEV3)")
    assert [(i.id, i.channel_id, i.state) for i in runtime.incidents.timeline.recent()] == [(2, "C0DB", "open"), (1, "C0OPS", "open")]


def test_a_title_with_a_line_break_is_refused_and_starts_nothing(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    said = run(runtime, "UOP", "/incident start Checkout failing\n# Injected heading", channel="C0OPS").text
    assert said.startswith("The title should be one line; usage:")
    said = run(runtime, "UOP", "/postmortem --since 3h Reports\r\n- injected", channel="C0OPS").text
    assert said.startswith("The title should be one line; usage:")
    assert runtime.incidents.timeline.recent() == []


def test_operators_change_an_incident_viewers_add_notes(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url)
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UVIEW", Role.viewer)
    assert run(runtime, "UVIEW", "/incident start Site down").text == "This use of /incident needs the operator role and you have viewer."
    run(runtime, "UOP", "/incident start Site down")
    assert run(runtime, "UVIEW", "/incident note the CDN status page says degraded").text == "📝 Noted on the timeline of incident #1."
    assert run(runtime, "UVIEW", "/incident sev 1").text == "This use of /incident needs the operator role and you have viewer."
    assert run(runtime, "UOP", "/incident status can't load checkout; 'EU only'").text.startswith("The status of incident #1 is updated.")
    assert run(runtime, "UOP", "/incident sev 1").text.startswith("Incident #1 is SEV1 now.")
    assert run(runtime, "UOP", "/incident sev 1").text == "Incident #1 is already SEV1."
    assert run(runtime, "UOP", "/incident sev 7").text.startswith("Severity should be 1 (worst) to 4, not '7'; usage:")
    assert run(runtime, "UOP", "/incident resolve CDN fixed on their side").text.startswith("Incident #1 is resolved.")
    assert run(runtime, "UOP", "/incident note late").text == "There is no open incident in this channel; /incident start TITLE opens one."
    assert _timeline(runtime) == [
        (STATUS, "UOP", "started the incident: Site down (SEV3)"),
        (NOTE, "UVIEW", "the CDN status page says degraded"),
        (STATUS, "UOP", "can't load checkout; 'EU only'"),
        (SEVERITY, "UOP", "changed the severity from SEV3 to SEV1"),
        (STATUS, "UOP", "resolved the incident: CDN fixed on their side"),
    ]
    incident = runtime.incidents.timeline.get(1)
    assert (incident.state, incident.severity, incident.status, incident.summary) == ("resolved", 1, "can't load checkout; 'EU only'", "CDN fixed on their side")


def test_commands_in_the_incidents_channel_land_on_its_timeline_with_their_outcome(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    run(runtime, "UOP", "/whoami", channel="C0OPS")  # before the incident: not on it
    run(runtime, "UOP", "/incident start Slow API", channel="C0OPS")
    run(runtime, "UOP", "/audit 3", channel="C0OPS")
    run(runtime, "UOP", "/whoami", channel="C0OTHER")  # another channel: not on it
    run(runtime, "USTRANGER", "/audit", channel="C0OPS")
    run(runtime, "UOP", "/audit 0", channel="C0OPS")
    run(runtime, "UOP", "/incident", channel="C0OPS")  # the incident's own commands record their own steps
    events = runtime.incidents.timeline.events(1)
    commands = [(e.actor, e.text, e.details["outcome"]) for e in events if e.kind == COMMAND]
    assert commands == [
        ("UOP", "`/audit 3` succeeded", "succeeded"),
        ("USTRANGER", "`/audit` denied", "denied"),
        ("UOP", "`/audit 0` rejected", "rejected"),
    ]
    assert [e.details.get("error") for e in events if e.kind == COMMAND] == [
        None, "needs admin, has no role", "count should be greater than or equal to 1",
    ]
    assert all(e.occurred_at.tzinfo is not None and e.recorded_at.tzinfo is not None for e in events)


def test_every_approval_step_and_the_run_land_on_the_timeline(make_runtime, database_url):
    runtime = _runtime(make_runtime, database_url)
    run(runtime, "UOP", "/incident start Stuck queue", channel="C1")
    run(runtime, "UOP", "/flip worker")
    _decide(runtime, "UAPP", "/approvals deny 1")
    run(runtime, "UOP", "/flip worker")
    _decide(runtime, "UAPP", "/approvals approve 2")
    run(runtime, "UADMIN", '/flip cache --break-glass "approvers asleep"')
    approvals = [(e.actor, e.text) for e in runtime.incidents.timeline.events(1) if e.kind == APPROVAL]
    assert approvals == [
        ("UOP", "Request #1 `/flip worker` asked for approval by <@UOP>"),
        ("UAPP", "Request #1 `/flip worker` denied by <@UAPP>"),
        ("UOP", "Request #2 `/flip worker` asked for approval by <@UOP>"),
        ("UAPP", "Request #2 `/flip worker` approved by <@UAPP>"),
        ("UOP", "Request #2 `/flip worker` started (approved by <@UAPP>)"),
        ("UADMIN", "Break-glass: <@UADMIN> ran `/flip cache` without approval; reason: approvers asleep"),
        ("UADMIN", "Request #3 `/flip cache` started (break-glass)"),
    ]
    runs = [e.details for e in runtime.incidents.timeline.events(1) if e.kind == COMMAND]
    assert [(d["command"], d["outcome"], d.get("approved_by"), d.get("break_glass")) for d in runs] == [
        ("/flip worker", "succeeded", "UAPP", None),
        ("/flip cache", "succeeded", None, "approvers asleep"),
    ]


def test_a_message_captured_twice_is_stored_once(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url, admins=["UOP"])
    run(runtime, "UOP", "/incident start Disk full")
    timeline = runtime.incidents.timeline
    at = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)
    pinned = Event(SLACK_MESSAGE, at, "disk at 100%", "UA", None, "C1", "1709294400.000100")
    assert timeline.add(1, pinned) == 1
    assert timeline.add(1, pinned) == 0
    other = Event(SLACK_MESSAGE, at, "inode count too", "UA", None, "C1", "1709294400.000200")
    assert timeline.add(1, pinned, other, pinned) == 1
    assert [e.ts for e in timeline.events(1) if e.kind == SLACK_MESSAGE] == ["1709294400.000100", "1709294400.000200"]


def test_a_look_that_finds_something_is_recorded_as_what_it_found_with_its_numbers_in_the_audit(make_runtime, database_url):
    from bot.frame.config import StackConfig
    from bot.store.engine import AuditEntry
    from tests.loopback import closed_port

    stack = StackConfig(probes=[{"kind": "http", "name": "api", "url": f"http://127.0.0.1:{closed_port()}/health"}])
    runtime = make_runtime(stack, database_url=database_url, admins=["UOP"])
    run(runtime, "UOP", "/incident start API down", channel="C0OPS")
    run(runtime, "UOP", "/health", channel="C0OPS")
    run(runtime, "UOP", "/whoami", channel="C0OPS")
    commands = [(e.text, e.details.get("key", True)) for e in runtime.incidents.timeline.events(1) if e.kind == COMMAND]
    assert commands == [("`/health` found 1 failing check", True), ("`/whoami` succeeded", False)]
    shown = run(runtime, "UOP", "/incident timeline", channel="C0OPS").text
    assert "🔧 <@UOP>: `/health` found 1 failing check" in shown and "🔎 <@UOP>: `/whoami` succeeded" in shown, shown
    with runtime.store.session() as session:
        health = session.query(AuditEntry).filter_by(command="health", outcome="succeeded").one()
    assert health.details == {"found": "1 failing check"}, "what it found, as data, in the audit row"
