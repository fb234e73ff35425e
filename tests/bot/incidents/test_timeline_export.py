"""The timeline as data: exported as CSV and JSON (parsed back, equal to the stored timeline, safe to open in a
spreadsheet, redacted), and the incident lead's edits and deletions (refused for others, audited, the original kept,
the post-mortem showing the correction), through the console's path, on SQLite and PostgreSQL."""

import csv
import io
import json
from datetime import datetime
from pathlib import Path

from bot.frame.roles import Role
from bot.incidents.model import NOTE, SLACK_MESSAGE
from bot.store.engine import AuditEntry
from tests.conftest import grant, run

FORMULA = '=HYPERLINK("http://127.0.0.1/x","click")'
AWKWARD = 'db said "no", then\nthe pool, emptied; 50% of calls'
SECRET = "PGPASSWORD=hunter2-very-secret"


def _start(make_runtime, database_url, **settings):
    runtime = make_runtime(database_url=database_url, admins=["UADMIN"], **settings)
    grant(runtime, "ULEAD", Role.operator)
    grant(runtime, "UOTHER", Role.operator)
    grant(runtime, "UVIEW", Role.viewer)
    run(runtime, "ULEAD", "/incident start Checkout failing --sev 2")
    for user, text in (("UVIEW", FORMULA), ("UOTHER", AWKWARD), ("ULEAD", f"tried {SECRET}"), ("UVIEW", "-1 workers left")):
        run(runtime, user, f"/incident note {text}")
    return runtime


def _notes(runtime) -> list:
    return [e for e in runtime.incidents.timeline.events(1, deleted=True) if e.kind == NOTE]


def _exported(said: str) -> tuple[Path, Path]:
    csv_path, json_path = said.removesuffix(".").split(" is written to ")[1].split(" and ")
    return Path(csv_path), Path(json_path)


def test_the_export_parses_back_to_the_timeline_defuses_formulas_and_hides_secrets(make_runtime, database_url):
    runtime = _start(make_runtime, database_url, timezone="America/New_York")
    formula, awkward, secret, minus = (e.id for e in _notes(runtime))
    run(runtime, "ULEAD", f'/incident timeline edit {awkward} "the pool emptied, 50% of calls failed"')
    run(runtime, "ULEAD", f"/incident timeline delete {minus} a guess, not a fact")

    said = run(runtime, "UVIEW", "/incident timeline --export").text
    assert said.startswith("The timeline of incident #1 (5 entries) is written to "), said
    csv_path, json_path = _exported(said)
    assert (csv_path.name, json_path.name) == ("timeline-incident-1.csv", "timeline-incident-1.json")
    assert csv_path.parent == runtime.settings.home / "exports" and csv_path.stat().st_mode & 0o777 == 0o600

    stored = runtime.incidents.timeline.events(1, deleted=True)
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8"), newline="")))
    document = json.loads(json_path.read_text(encoding="utf-8"))
    entries = document["entries"]
    assert [int(r["id"]) for r in rows] == [e["id"] for e in entries] == [e.id for e in stored]
    assert [r["kind"] for r in rows] == [e["kind"] for e in entries] == [e.kind for e in stored]
    assert [r["actor"] for r in rows] == [e["actor"] for e in entries] == [e.actor for e in stored]
    assert [datetime.fromisoformat(r["occurred_at"]) for r in rows] == [e.occurred_at for e in stored]
    assert [datetime.fromisoformat(e["occurred_at"]) for e in entries] == [e.occurred_at for e in stored]
    assert all(r["occurred_at"].endswith("+00:00") and r["occurred_at_local"].endswith(("-05:00", "-04:00")) for r in rows)
    assert [datetime.fromisoformat(r["occurred_at_local"]) for r in rows] == [e.occurred_at for e in stored], "the same moment"
    assert [r["state"] for r in rows] == [e["state"] for e in entries] == ["shown", "shown", "edited", "shown", "deleted"]
    by_id = {int(r["id"]): r for r in rows}
    json_by_id = {e["id"]: e for e in entries}
    assert [by_id[i]["state"] for i in (formula, awkward, secret, minus)] == ["shown", "edited", "shown", "deleted"]

    assert json_by_id[formula]["text"] == FORMULA, "JSON is data: kept as typed"
    assert by_id[formula]["text"] == "'" + FORMULA, "a spreadsheet shows the formula as text and runs nothing"
    assert by_id[minus]["text"] == "'-1 workers left" and json_by_id[minus]["text"] == "-1 workers left"
    assert by_id[awkward]["original_text"] == json_by_id[awkward]["original_text"] == AWKWARD, "quotes, commas, a line break"
    assert by_id[awkward]["text"] == "the pool emptied, 50% of calls failed"
    assert (by_id[awkward]["edited_by"], by_id[minus]["deleted_by"], by_id[minus]["delete_reason"]) == ("ULEAD", "ULEAD", "a guess, not a fact")
    assert by_id[minus]["deleted_at"] and json_by_id[minus]["deleted_at_local"]

    for text in (csv_path.read_text(), json_path.read_text()):
        assert "hunter2" not in text and "PGPASSWORD=***" in text, "redacted as every output"
    assert document["incident"]["title"] == "Checkout failing" and document["incident"]["timezone"] == "America/New_York"


def test_only_the_lead_or_an_admin_edits_or_deletes_audited_and_the_original_kept(make_runtime, database_url):
    runtime = _start(make_runtime, database_url)
    formula, awkward, _secret, minus = (e.id for e in _notes(runtime))
    refused = (
        "Only the lead of incident #1 (<@ULEAD>, who started it) or an admin can change its timeline; "
        "ask them, or add what you know with /incident note TEXT."
    )
    assert run(runtime, "UOTHER", f"/incident timeline edit {awkward} mine, really").text == refused
    assert run(runtime, "UOTHER", f"/incident timeline delete {formula} noise").text == refused
    assert run(runtime, "UVIEW", f"/incident timeline delete {formula} noise").text == (
        "This use of /incident needs the operator role and you have viewer."
    )
    assert [e.text for e in _notes(runtime)][:2] == [FORMULA, AWKWARD], "nothing changed"

    said = run(runtime, "ULEAD", f'/incident timeline edit {awkward} "the pool emptied"').text
    assert said == (
        f"✏️ Timeline entry #{awkward} of incident #1 is edited; the timeline and the post-mortem mark it (edited), "
        "and its original text is kept."
    )
    said = run(runtime, "UADMIN", f"/incident timeline edit {awkward} the connection pool emptied").text
    assert said.startswith(f"✏️ Timeline entry #{awkward} of incident #1 is edited;"), "an admin may too"
    edited = runtime.incidents.timeline.entry(awkward)
    assert (edited.text, edited.original_text, edited.edited_by) == ("the connection pool emptied", AWKWARD, "UADMIN")

    said = run(runtime, "ULEAD", f"/incident timeline delete #{minus} a guess, not a fact").text
    assert said.startswith(f"🗑 Timeline entry #{minus} of incident #1 is deleted;")
    assert run(runtime, "ULEAD", f"/incident timeline delete {minus} again").text == (
        f"Timeline entry #{minus} was deleted by <@ULEAD> already; nothing changed."
    )
    assert run(runtime, "ULEAD", f"/incident timeline edit {minus} revived").text == (
        f"Timeline entry #{minus} was deleted by <@ULEAD> already; nothing changed."
    )
    deleted = runtime.incidents.timeline.entry(minus)
    assert (deleted.text, deleted.deleted_by, deleted.delete_reason) == ("-1 workers left", "ULEAD", "a guess, not a fact")
    assert minus not in [e.id for e in runtime.incidents.timeline.events(1)], "left out of the timeline"

    started = runtime.incidents.timeline.events(1)[0]
    assert run(runtime, "ULEAD", "/incident timeline edit 999 x").text == (
        "This channel's incidents have no timeline entry #999; /incident timeline shows their numbers."
    )
    assert run(runtime, "ULEAD", f"/incident timeline edit {formula} x", channel="C0ELSEWHERE").text == (
        f"This channel's incidents have no timeline entry #{formula}; /incident timeline shows their numbers."
    )
    assert run(runtime, "ULEAD", "/incident timeline edit twelve words").text.startswith(
        "Timeline edit needs an entry's number (/incident timeline shows them) and the new text; usage:"
    )
    assert run(runtime, "ULEAD", f"/incident timeline delete {formula}").text.startswith(
        "Timeline delete needs a reason after the entry's number"
    )
    run(runtime, "ULEAD", "/incident sev 1")
    severity = runtime.incidents.timeline.events(1)[-1]
    assert run(runtime, "ULEAD", f"/incident timeline edit {severity.id} it was SEV3").text.startswith(
        f"Timeline entry #{severity.id} is the bot's own record, as the audit has it, so it is not rewritten;"
    )
    assert started.text == "started the incident: Checkout failing (SEV2)"

    with runtime.store.session() as session:
        rows = session.query(AuditEntry).filter(AuditEntry.command == "incident", AuditEntry.outcome.in_(("succeeded", "failed")))
        audited = [(r.user_id, r.outcome, r.details, r.error) for r in rows.order_by(AuditEntry.id) if "timeline" in str(r.arguments)]
    assert ("UOTHER", "failed", refused) in [(user, outcome, error) for user, outcome, _details, error in audited]
    assert ("ULEAD", "succeeded", {"timeline_entry": awkward, "incident": 1, "change": "edited", "before": AWKWARD}, None) in audited
    assert ("UADMIN", "succeeded", {"timeline_entry": awkward, "incident": 1, "change": "edited", "before": "the pool emptied"}, None) in audited
    assert ("ULEAD", "succeeded", {"timeline_entry": minus, "incident": 1, "change": "deleted", "reason": "a guess, not a fact"}, None) in audited


def test_the_postmortem_and_the_timeline_show_the_edit_and_leave_the_deleted_entry_out(make_runtime, database_url):
    runtime = _start(make_runtime, database_url)
    formula, awkward, _secret, minus = (e.id for e in _notes(runtime))
    run(runtime, "ULEAD", f"/incident timeline edit {awkward} the connection pool emptied")
    run(runtime, "ULEAD", f"/incident timeline delete {minus} a guess")
    shown = run(runtime, "UVIEW", "/incident timeline").text
    assert f"`#{awkward}` " in shown and "the connection pool emptied _(edited)_" in shown and f"`#{formula}` " in shown
    assert "workers left" not in shown and f"`#{minus}`" not in shown and "emptied;" not in shown

    run(runtime, "ULEAD", "/incident resolve pool resized")
    markdown = run(runtime, "ULEAD", "/postmortem").text
    timeline = markdown.split("\n## Timeline\n")[1].split("\n## ")[0]
    assert "📝 UOTHER: the connection pool emptied _(edited)_" in timeline, timeline
    assert "workers left" not in markdown and "then\nthe pool" not in markdown and "emptied; 50%" not in markdown


def test_in_slack_the_export_is_two_files_in_one_message_of_the_channel(slack_bot, slack_double):
    from tests.bot.test_slack_incidents import CHANNEL, _bot, _slash

    sender, runtime = _bot(slack_bot, slack_double, timezone="Asia/Tokyo")
    _slash(sender, slack_double, "/incident start Checkout failing --sev 2", "UOLGA", "start")
    _slash(sender, slack_double, f"/incident note @everyone look {FORMULA}", "UCLEO", "note")
    said = _slash(sender, slack_double, "/incident timeline --export", "UCLEO", "export")
    assert said == "The timeline of incident #1 (2 entries) is posted to the channel as timeline-incident-1.csv and timeline-incident-1.json."
    slack_double.wait_for("files.completeUploadExternal", count=1, timeout=60)
    uploads = slack_double.uploads()
    assert [(u.filename, u.title, u.channels, u.completed) for u in uploads] == [
        (f"timeline-incident-1.{kind}", "Timeline of incident #1: Checkout failing", [CHANNEL], True) for kind in ("csv", "json")
    ]
    (message,) = [m for m in slack_double.messages(CHANNEL) if m.get("files")]
    assert message["text"] == "🗂 The timeline of incident #1 (2 entries) as CSV and JSON, asked for by <@UCLEO>."
    assert [f["name"] for f in message["files"]] == ["timeline-incident-1.csv", "timeline-incident-1.json"]
    rows = list(csv.DictReader(io.StringIO(uploads[0].content.decode(), newline="")))
    entries = json.loads(uploads[1].content)["entries"]
    stored = runtime.incidents.timeline.events(1, deleted=True)
    assert [(int(r["id"]), r["kind"], r["actor"]) for r in rows] == [(e.id, e.kind, e.actor) for e in stored]
    assert [(e["id"], e["kind"], e["actor"], e["text"]) for e in entries] == [(e.id, e.kind, e.actor, e.text) for e in stored]
    assert [r["text"] for r in rows] == [stored[0].text, f"'@everyone look {FORMULA}"], "a cell starting with @ is defused too"
    assert rows[0]["occurred_at_local"].endswith("+09:00") and rows[0]["occurred_at"].endswith("+00:00")


def test_a_pinned_message_the_lead_deleted_stays_out_of_the_postmortem_that_reads_the_history(slack_bot, slack_double):
    from tests.bot.test_slack_incidents import CHANNEL, _bot, _slash, _upload

    sender, runtime = _bot(slack_bot, slack_double)
    _slash(sender, slack_double, "/incident start Checkout failing", "UOLGA", "start")
    wrong = slack_double.seed_message(CHANNEL, "it is surely the CDN", "UCLEO")
    right = slack_double.seed_message(CHANNEL, "the reports job holds every connekshun", "UBEN")
    for ts, name in ((wrong, "pin1"), (right, "pin2")):
        assert _slash(sender, slack_double, f"/incident add-message {ts}", "UCLEO", name).startswith("📌 Added the message")
    pinned = {e.ts: e.id for e in runtime.incidents.timeline.events(1) if e.kind == SLACK_MESSAGE}
    said = _slash(sender, slack_double, f"/incident timeline delete {pinned[wrong]} a guess, not a fact", "UOLGA", "delete")
    assert said.startswith(f"🗑 Timeline entry #{pinned[wrong]} of incident #1 is deleted;")
    said = _slash(sender, slack_double, f"/incident timeline edit {pinned[right]} the reports job holds every connection", "UOLGA", "edit")
    assert said.startswith(f"✏️ Timeline entry #{pinned[right]} of incident #1 is edited;")
    _slash(sender, slack_double, "/incident resolve", "UOLGA", "resolve")
    assert _slash(sender, slack_double, "/postmortem", "UOLGA", "pm").startswith("Post-mortem of incident #1 posted")
    markdown = _upload(slack_double).content.decode()
    assert "CDN" not in markdown and "connekshun" not in markdown, "read from the history again, still left out"
    assert "📌 Ben: the reports job holds every connection _(edited)_ ([message](" in markdown
    timeline = markdown.split("\n## Timeline\n")[1].split("\n## ")[0]
    assert timeline.count("the reports job holds") == 1, "the pinned message once, not again as read from the history"
    assert "First alert or message: " in markdown and ", Ben: the reports job holds every connection _(edited)_" in markdown
