"""The post-mortem's Markdown, section by section: an incident across midnight in Berlin, with a pinned alert,
an approved restart, status and severity changes, a thread reply and user text that tries to be markup."""

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from bot.incidents.model import APPROVAL, COMMAND, IMPORTED, NOTE, SEVERITY, SLACK_MESSAGE, STATUS, Incident, TimelineEvent
from bot.incidents.postmortem import Report, render
from bot.frame.durations import Moment, TimeError

BERLIN = ZoneInfo("Europe/Berlin")  # UTC+1 in March
START = datetime(2024, 3, 1, 22, 40, tzinfo=timezone.utc)  # 23:40 in Berlin, Friday
NAMES = {"UANA": "Ana", "UBEN": "Ben", "UCLEO": "Cleo [ops]"}


def _at(minutes: float) -> datetime:
    return START + timedelta(minutes=minutes)


def _event(kind, minutes, text, actor=None, details=None, ts=None, thread_ts=None, permalink=None):
    return TimelineEvent(
        kind=kind, occurred_at=_at(minutes), recorded_at=_at(minutes), text=text, actor=actor, details=details,
        channel_id="C0OPS", ts=ts, thread_ts=thread_ts, permalink=permalink,
    )


def _incident(**changes) -> Incident:
    values = dict(
        id=7, channel_id="C0OPS", title="Checkout *down* <b>EU</b>", severity=2, state="resolved",
        status="EU checkout failing", summary="Rolled back the frontend; error rate back under 1%.",
        started_at=START, started_by="UANA", resolved_at=_at(90), resolved_by="UANA", imported=False,
    )
    values.update(changes)
    return Incident(**values)


EVENTS = [
    _event(SLACK_MESSAGE, -5, "*FIRING* checkout 5xx &gt; 5% <https://grafana.example/d/1|dashboard>", None,
           {"bot": "alertmanager", "pinned_by": "UBEN"}, "1709332500.000100", permalink="https://example.slack.com/archives/C0OPS/p1709332500000100"),
    _event(STATUS, 0, "started the incident: Checkout *down* <b>EU</b> (SEV3)", "UANA", {"change": "started"}),
    _event(IMPORTED, 1, "I see <@UANA> is on it; db cpu at 100% &lt;script&gt;alert(1)&lt;/script&gt; <!channel>", "UBEN",
           None, "1709332860.000200"),
    _event(IMPORTED, -5, "*FIRING* checkout 5xx &gt; 5%", None, {"bot": "alertmanager"}, "1709332500.000100"),
    _event(APPROVAL, 3, "Request #1 `/restart frontend` asked for approval by <@UANA>", "UANA", {"step": "requested", "job_id": 1}),
    _event(APPROVAL, 4, "Request #1 `/restart frontend` approved by <@UBEN>", "UBEN", {"step": "approved", "job_id": 1}),
    _event(APPROVAL, 4.5, "Request #1 `/restart frontend` started (approved by <@UBEN>)", "UANA", {"step": "running", "job_id": 1}),
    _event(COMMAND, 6, "`/restart frontend` succeeded", "UANA",
           {"outcome": "succeeded", "duration_ms": 3200, "command": "/restart frontend", "job_id": 1, "approved_by": "UBEN"}),
    _event(STATUS, 10, "EU checkout failing", "UANA", {"change": "status"}),
    _event(SEVERITY, 15, "changed the severity from SEV3 to SEV2", "UANA", {"from": 3, "to": 2}),
    _event(IMPORTED, 25, "looks better now", "UCLEO", {"edited": True}, "1709334300.000300", thread_ts="1709332860.000200"),
    _event(COMMAND, 30, "`/audit` denied", "UCLEO", {"outcome": "denied", "duration_ms": 0, "command": "/audit", "error": "needs admin, has operator"}),
    _event(APPROVAL, 35, "Request #2 `/restart backend` expired without approval", None, {"step": "expired", "job_id": 2}),
    _event(NOTE, 40, "watching the error rate", "UBEN"),
    _event(STATUS, 90, "resolved the incident: Rolled back the frontend; error rate back under 1%.", "UANA", {"change": "resolved"}),
]


def _sections(markdown: str) -> dict[str, str]:
    head, *rest = markdown.split("\n## ")
    sections = {"head": head}
    for part in rest:
        title, _, body = part.partition("\n\n")
        sections[title] = body.strip()
    return sections


def _write(incident=None, events=EVENTS, results=None) -> dict[str, str]:
    report = Report(incident or _incident(), events, NAMES, results or {1: "Restarted\n🟢 *frontend* is healthy again after 3.2 s"}, BERLIN, _at(200))
    return _sections(render(report))


def test_the_facts_come_first_with_times_in_the_configured_zone_and_the_people_who_took_part():
    head = _write()["head"]
    assert head.splitlines()[0] == r"# Post-mortem: Checkout \*down\* \<b\>EU\</b\> (incident #7)"
    assert head.splitlines()[2] == "_A draft by flowstate-bot from the incident's timeline and the channel's history; times in Europe/Berlin._"
    assert head.split("\n\n")[-1].splitlines() == [
        "| | |",
        "|---|---|",
        "| Severity | SEV2 |",
        "| Started | 2024-03-01 23:40 CET by Ana |",
        "| Resolved | 2024-03-02 01:10 CET by Ana |",
        "| Duration | 1 h 30 min |",
        r"| Participants | Ana, Ben, Cleo \[ops\] |",
    ]


def test_summary_impact_and_detection_come_from_the_resolution_the_status_updates_and_the_first_alert():
    sections = _write()
    assert list(sections) == [
        "head", "Summary", "Impact", "Detection and response", "Response times", "Trends", "Timeline", "What was done", "Resolution",
        "Action items",
    ]
    # Acknowledged by the request at 3 min (not the pinned alert, Ana's start or Ben's message); the restart was
    # followed by no /health, so nothing says when it was mitigated.
    assert sections["Response times"].splitlines()[:3] == [
        "- Time to acknowledge: 3 min",
        "- Time to mitigate: — (no /health found everything green after a /restart, /rollback or /restore)",
        "- Time to resolve: 1 h 30 min",
    ]
    assert sections["Summary"] == "Rolled back the frontend; error rate back under 1%."
    assert sections["Impact"].splitlines() == [
        "- Duration: 1 h 30 min",
        "- Severity: SEV2 (changed the severity from SEV3 to SEV2 at 23:55 by Ana)",
        "- Edge error rate: not measured (no /health or /stats during the incident recorded it)",
        "- Services down: not checked (no /health during the incident)",
        "- Status updates:",
        "  - 23:50 Ana: EU checkout failing",
    ]
    assert sections["Detection and response"].splitlines() == [
        r"- First alert or message: 2024-03-01 23:35 CET, alertmanager (bot): \*FIRING\* checkout 5xx \> 5% [dashboard](https://grafana.example/d/1)",
        "- Detection to start: 5 min",
        "- Start to first action: 3 min (Request #1 `/restart frontend` asked for approval by @Ana, Ana)",
        "- Start to resolution: 1 h 30 min",
    ]


def test_the_timeline_has_a_header_per_day_in_berlin_marks_pins_and_key_actions_and_escapes_user_text():
    timeline = _write()["Timeline"]
    days = [line for line in timeline.splitlines() if line.startswith("### ")]
    assert days == ["### 2024-03-01 (Friday)", "### 2024-03-02 (Saturday)"]
    friday = timeline.split("### 2024-03-01 (Friday)\n\n")[1].split("\n\n###")[0].splitlines()
    assert friday == [
        r"- 23:35 📌 alertmanager (bot): \*FIRING\* checkout 5xx \> 5% [dashboard](https://grafana.example/d/1) ([message](https://example.slack.com/archives/C0OPS/p1709332500000100))",
        r"- 23:40 📣 **Ana** started the incident: Checkout \*down\* \<b\>EU\</b\> (SEV3)",
        r"- 23:41 Ben: I see @Ana is on it; db cpu at 100% \<script\>alert(1)\</script\> \<!channel\>",
        "- 23:43 🔧 **Ana** Request #1 `/restart frontend` asked for approval by @Ana",
        "- 23:44 🔧 **Ben** Request #1 `/restart frontend` approved by @Ben",
        "- 23:44 🔧 **Ana** Request #1 `/restart frontend` started (approved by @Ben)",
        "- 23:46 🔧 **Ana** `/restart frontend` succeeded",
        "- 23:50 📣 **Ana** EU checkout failing",
        "- 23:55 📣 **Ana** changed the severity from SEV3 to SEV2",
    ]
    saturday = timeline.split("### 2024-03-02 (Saturday)\n\n")[1].splitlines()
    assert saturday == [
        r"- 00:05 ↳ Cleo \[ops\]: looks better now _(edited)_",
        r"- 00:10 🔧 **Cleo \[ops\]** `/audit` denied",
        "- 00:15 🔧 **flowstate-bot** Request #2 `/restart backend` expired without approval",
        "- 00:20 📝 Ben: watching the error rate",
        "- 01:10 📣 **Ana** resolved the incident: Rolled back the frontend; error rate back under 1%.",
    ]
    assert timeline.count("FIRING") == 1, "a message both pinned and imported shows once, as pinned"


def _health(minutes, found, down, rate=None, command="/health"):
    facts = {"found": found} if found else {}
    if down is not None:
        facts["down"] = down
    if rate is not None:
        facts["edge_error_rate"] = rate
    details = {"outcome": "succeeded", "duration_ms": 900, "command": command, "facts": facts}
    if not found:
        details["key"] = False
    said = f"found {found}" if found else "succeeded"
    return _event(COMMAND, minutes, f"`{command}` {said}", "UBEN", details)


def test_impact_gives_the_edge_error_rate_s_peak_and_each_service_down_and_for_how_long():
    events = [
        EVENTS[1],
        _health(2, "2 failing checks", ["backend", "python-worker"], 37.5),
        _health(5, "1 threshold crossed", None, 82.25, command="/stats 1m"),
        _health(20, "1 failing check", ["python-worker"], 4.0),
        _health(31, None, ["python-worker"], 0.0),
        EVENTS[-1],
    ]
    sections = _write(events=events)
    impact = sections["Impact"].splitlines()
    assert impact[2] == "- Edge error rate: peak 82.2% at 23:45 (4 measurements)"
    assert impact[3] == (
        "- Services down (from the first /health that found each down to the first that found it up): "
        "backend from 23:42 to 00:00 (18 min); python-worker from 23:42, still down at the last check at 00:11 (at least 29 min)"
    )
    timeline = sections["Timeline"]
    assert "- 23:42 🔧 **Ben** `/health` found 2 failing checks" in timeline
    assert "- 23:45 🔧 **Ben** `/stats 1m` found 1 threshold crossed" in timeline
    assert "- 00:11 Ben `/health` succeeded" in timeline, "a look that found nothing is not a key action"
    assert sections["What was done"].splitlines() == [
        "- 23:42 `/health` by Ben: found 2 failing checks in 0.9 s",
        "- 23:45 `/stats 1m` by Ben: found 1 threshold crossed in 0.9 s",
        "- 00:00 `/health` by Ben: found 1 failing check in 0.9 s",
    ], "a look that found nothing is not something done"


def test_a_health_that_always_found_every_container_up_says_none_were_down():
    impact = _write(events=[EVENTS[1], _health(2, None, []), _health(9, None, []), EVENTS[-1]])["Impact"].splitlines()
    assert impact[3] == "- Services down: none (every container was up at each /health)"


def test_what_was_done_lists_each_command_with_its_result_and_who_approved_it():
    assert _write()["What was done"].splitlines() == [
        "- 23:46 `/restart frontend` by Ana (request #1, approved by Ben): succeeded in 3.2 s: Restarted · 🟢 \\*frontend\\* is healthy again after 3.2 s",
        "- 00:10 `/audit` by Cleo \\[ops\\]: denied: needs admin, has operator",
        "- 00:15 Request #2 `/restart backend` expired without approval; not run",
    ]


def test_the_resolution_and_the_action_items_to_fill_in_close_it():
    sections = _write()
    assert sections["Resolution"] == "Resolved 2024-03-02 01:10 CET by Ana, 1 h 30 min after the start: Rolled back the frontend; error rate back under 1%."
    assert sections["Action items"].splitlines()[-3:] == ["| Action | Owner | Due | State |", "|---|---|---|---|", "| | | | |"]


def test_a_break_glass_run_is_marked_and_an_open_incident_says_so():
    events = [
        _event(STATUS, 0, "started the incident: x (SEV3)", "UANA", {"change": "started"}),
        _event(APPROVAL, 2, "Break-glass: <@UANA> ran `/restart frontend` without approval; reason: nobody awake", "UANA",
               {"step": "break-glass", "job_id": 3, "break_glass": "nobody awake"}),
        _event(COMMAND, 3, "`/restart frontend` failed", "UANA",
               {"outcome": "failed", "duration_ms": 120000, "command": "/restart frontend", "job_id": 3, "break_glass": "nobody awake", "error": "not healthy"}),
    ]
    sections = _write(_incident(state="open", resolved_at=None, resolved_by=None, summary=None), events)
    assert "| Resolved | still open |" in sections["head"] and "| Duration | 3 h 20 min so far |" in sections["head"]
    assert "- 23:42 🔧 **break-glass** **Ana** Break-glass: @Ana ran `/restart frontend` without approval; reason: nobody awake" in sections["Timeline"]
    assert sections["What was done"] == (
        "- 23:43 `/restart frontend` by Ana (request #3, **break-glass** (nobody awake)): failed in 120.0 s: not healthy"
    )
    assert sections["Summary"] == "_To be written._"
    assert sections["Resolution"] == "The incident is still open."
    assert "- Start to first action: 2 min" in sections["Detection and response"]


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("3h", datetime(2024, 3, 1, 19, 40, tzinfo=timezone.utc)),
        ("2d", datetime(2024, 2, 28, 22, 40, tzinfo=timezone.utc)),
        ("45m", datetime(2024, 3, 1, 21, 55, tzinfo=timezone.utc)),
        ("2024-03-01T23:00", datetime(2024, 3, 1, 22, 0, tzinfo=timezone.utc)),  # no offset: Berlin time
        ("2024-03-01 23:00Z", datetime(2024, 3, 1, 23, 0, tzinfo=timezone.utc)),
        ("2024-03-01T23:00+02:00", datetime(2024, 3, 1, 21, 0, tzinfo=timezone.utc)),
    ],
)
def test_times_are_ages_or_iso_8601_in_the_configured_zone(typed, expected):
    assert Moment.parse(typed).resolve(BERLIN, START) == expected


def test_a_time_that_is_neither_says_what_to_give():
    with pytest.raises(TimeError, match="'yesterday' is not a time; give an age such as 3h or 2d"):
        Moment.parse("yesterday").resolve(BERLIN, START)


def test_a_multi_line_summary_stays_text_at_every_line_start():
    summary = "Rolled back.\n# Injected heading\n- injected item\n  1. numbered\n+ plus\n===\n> quoted"
    sections = _write(_incident(summary=summary))
    assert sections["Summary"].splitlines() == [
        "Rolled back.", r"\# Injected heading", r"\- injected item", r"  1\. numbered", r"\+ plus", r"\===", r"\> quoted",
    ]
    assert sections["Resolution"].splitlines()[1:] == sections["Summary"].splitlines()[1:]
