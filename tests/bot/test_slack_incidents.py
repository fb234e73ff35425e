"""Incidents in Slack: pins by reaction (Events API, retried and repeated), the message shortcut, and
post-mortems read from the channel's history and posted as a file; Bolt gets everything signed as Slack signs it."""

import os
import re
import subprocess
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from bot.approvals.service import APPROVE
from bot.frame.humanize import duration
from bot.incidents.model import COMMAND, SLACK_MESSAGE
from bot.jobs.model import Job
from bot.adapters.slack.manifest import TIMELINE_SHORTCUT
from bot.frame.roles import Role
from tests.bot.test_cli import BOT
from tests.conftest import bot_env
from tests.bot.test_slack_approvals import _request_message, _wait_message
from tests.conftest import grant
from tests.waiting import eventually

CHANNEL = "C0OPS"


def _bot(slack_bot, slack_double, stack=None, **settings):
    sender, runtime = bot = slack_bot(stack, **settings)
    for user, name, role in (("UOLGA", "Olga", Role.operator), ("UBEN", "Ben", Role.approver), ("UCLEO", "Cleo", Role.viewer)):
        grant(runtime, user, role)
        slack_double.add_user(user, name.lower(), real_name=f"{name} Example", display_name=name)
    return bot


def _slash(sender, slack_double, line, user, name, channel=CHANNEL):
    command, _, text = line.partition(" ")
    assert sender.slash(command, text, user, channel, response_url=slack_double.response_url(name)).status == 200
    return slack_double.wait_for_response(name, timeout=30)[0]["text"]


def _pin(ts, user, channel=CHANNEL, reaction="pushpin"):
    return {"type": "reaction_added", "user": user, "reaction": reaction, "item": {"type": "message", "channel": channel, "ts": ts},
            "item_user": "UCLEO", "event_ts": f"{time.time():.6f}"}


def _ephemerals(slack_double, count):
    return [c.params["text"] for c in slack_double.wait_for("chat.postEphemeral", count=count, timeout=30)]


def _pinned(runtime, incident_id=1):
    return [(e.ts, e.thread_ts, e.actor, e.details) for e in runtime.incidents.timeline.events(incident_id) if e.kind == SLACK_MESSAGE]


def _jobs(runtime, command="incident"):
    with runtime.store.session() as session:
        return [job.text for job in session.query(Job).filter(Job.command == command).order_by(Job.id)]


def test_a_pin_delivered_three_times_and_by_two_people_lands_on_the_timeline_once_with_its_thread(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double)
    _slash(sender, slack_double, "/incident start Checkout failing", "UOLGA", "start")
    parent = slack_double.seed_message(CHANNEL, "db cpu at 100%", "UCLEO")
    reply = slack_double.seed_message(CHANNEL, "it's the reports job", "UBEN", thread_ts=parent)
    for retry in (None, 1, 2):  # Slack redelivers with X-Slack-Retry-Num; the envelope's event_id stays
        assert sender.event(_pin(parent, "UCLEO"), event_id="Ev0001", retry_num=retry).status == 200
    assert _ephemerals(slack_double, 1) == ["📌 Added the message with 1 reply of its thread to the timeline of incident #1."]
    assert sender.event(_pin(parent, "UBEN"), event_id="Ev0002").status == 200
    assert _ephemerals(slack_double, 2)[1] == "That message is already on the timeline of incident #1."
    assert _jobs(runtime)[-2:] == [f"add-message {parent} reaction", f"add-message {parent} reaction"], "one job per event_id"
    assert _pinned(runtime) == [
        (parent, None, "UCLEO", {"pinned_by": "UCLEO", "via": "reaction"}),
        (reply, parent, "UBEN", {"in_thread_of": parent}),
    ]
    permalink = runtime.incidents.timeline.events(1)[-2].permalink
    assert permalink == f"https://example.slack.com/archives/{CHANNEL}/p{parent.replace('.', '')}"


def test_a_pin_on_a_thread_reply_is_that_reply_and_other_reactions_and_channels_are_ignored(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double, incident_emoji=":round_pushpin:")
    _slash(sender, slack_double, "/incident start Queue stuck", "UOLGA", "start")
    parent = slack_double.seed_message(CHANNEL, "worker restarted?", "UCLEO")
    reply = slack_double.seed_message(CHANNEL, "yes, at 23:58", "UBEN", thread_ts=parent)
    elsewhere = slack_double.seed_message("C0RANDOM", "lunch?", "UBEN")
    sender.event(_pin(reply, "UCLEO", reaction="pushpin"), event_id="Ev1")  # not the configured emoji
    sender.event(_pin(elsewhere, "UCLEO", channel="C0RANDOM", reaction="round_pushpin"), event_id="Ev2")  # no incident there
    sender.event(_pin(reply, "UCLEO", reaction="round_pushpin::skin-tone-2"), event_id="Ev3")
    assert _ephemerals(slack_double, 1) == ["📌 Added the message to the timeline of incident #1."]
    assert _jobs(runtime) == ["start Queue stuck", f"add-message {reply} reaction"]
    assert [(ts, thread_ts, actor) for ts, thread_ts, actor, _ in _pinned(runtime)] == [(reply, parent, "UBEN")]


def test_a_forged_or_unsigned_event_is_refused_and_queues_nothing(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double)
    _slash(sender, slack_double, "/incident start Checkout failing", "UOLGA", "start")
    ts = slack_double.seed_message(CHANNEL, "db cpu at 100%", "UCLEO")
    assert sender.event(_pin(ts, "UCLEO"), sign_with="not-the-secret").status == 401
    assert sender.event(_pin(ts, "UCLEO"), unsigned=True).status == 401
    assert sender.event(_pin(ts, "UCLEO"), timestamp=int(time.time()) - 600).status == 401
    time.sleep(0.5)  # time for a wrongly accepted event to show up
    assert _jobs(runtime) == ["start Checkout failing"] and _pinned(runtime) == []


def test_the_message_shortcut_adds_the_message_and_says_so_only_to_the_clicker(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double)
    ts = slack_double.seed_message(CHANNEL, "rolling back 4.2.1", "UOLGA")
    url = slack_double.response_url
    assert sender.message_shortcut(TIMELINE_SHORTCUT, "UCLEO", CHANNEL, {"ts": ts}, url("early")).status == 200
    assert slack_double.wait_for_response("early", timeout=30)[0]["text"] == (
        "There is no open incident in this channel; /incident start TITLE opens one."
    )
    _slash(sender, slack_double, "/incident start Bad deploy", "UOLGA", "start")
    sender.message_shortcut(TIMELINE_SHORTCUT, "UCLEO", CHANNEL, {"ts": ts, "text": "rolling back 4.2.1"}, url("pin"))
    (answer,) = slack_double.wait_for_response("pin", timeout=30)
    assert (answer["text"], answer["response_type"]) == ("📌 Added the message to the timeline of incident #1.", "ephemeral")
    assert _pinned(runtime) == [(ts, None, "UOLGA", {"pinned_by": "UCLEO", "via": "shortcut"})]


def _sections(markdown: str) -> dict[str, str]:
    head, *rest = markdown.split("\n## ")
    return {"head": head, **{part.partition("\n\n")[0]: part.partition("\n\n")[2].strip() for part in rest}}


def _upload(slack_double, count=1):
    """The count-th post-mortem posted (a chart of the incident's metrics may come before it: the live stack is sampled)."""
    slack_double.wait_for("files.completeUploadExternal", count=count, timeout=60)
    return [upload for upload in slack_double.uploads() if upload.filename.endswith(".md")][count - 1]


def test_a_postmortem_reads_the_channel_posts_a_file_and_the_cli_writes_the_same_without_slack(slack_bot, slack_double, tmp_path):
    sender, runtime = _bot(slack_bot, slack_double, timezone="Asia/Tokyo")
    assert _slash(sender, slack_double, "/incident start Checkout failing --sev 2", "UOLGA", "start").startswith("You started incident #1")
    summary = slack_double.messages(CHANNEL)[0]
    assert summary["text"] == "Incident #1: Checkout failing (SEV2, open)", "the summary message is a real channel message"
    asked = slack_double.seed_message(CHANNEL, "is <@UOLGA> on it? *everything* is <b>red</b>", "UCLEO")
    answered = slack_double.seed_message(CHANNEL, "yes, looking at the db", "UOLGA", thread_ts=asked)
    _slash(sender, slack_double, "/whoami", "UBEN", "whoami")
    # A question's outcome row, which the timeline takes, is written just after its reply went out.
    eventually(lambda: any(e.kind == COMMAND for e in runtime.incidents.timeline.events(1)), "/whoami on the timeline")
    _slash(sender, slack_double, "/incident status EU customers can't pay", "UOLGA", "status")
    _slash(sender, slack_double, "/incident resolve Restarted the reports job", "UOLGA", "resolve")
    assert "✅" in str(slack_double.message(CHANNEL, summary["ts"])["blocks"]), "the summary message was updated in place"
    slack_double.seed_message(CHANNEL, "after the end", "UCLEO")
    said = _slash(sender, slack_double, "/postmortem", "UOLGA", "pm")
    assert said.startswith("Post-mortem of incident #1 posted to the channel as postmortem-incident-1.md (stored as post-mortem #1;")
    upload = _upload(slack_double)
    assert (upload.filename, upload.title, upload.channels, upload.completed) == (
        "postmortem-incident-1.md", "Post-mortem: Checkout failing (incident #1)", [CHANNEL], True,
    )
    markdown = upload.content.decode()
    sections = _sections(markdown)
    assert "| Participants | Olga, Cleo, Ben |" in sections["head"] and "JST by Olga |" in sections["head"]
    assert sections["Summary"] == "Restarted the reports job"
    assert sections["Impact"].splitlines()[-1].endswith(" Olga: EU customers can't pay")
    lines = [line.split(" ", 2)[2] for line in sections["Timeline"].splitlines() if line.startswith("- ")]
    link = f"https://example.slack.com/archives/{CHANNEL}/p"
    assert lines == [
        "📣 **Olga** started the incident: Checkout failing (SEV2)",
        rf"Cleo: is @Olga on it? \*everything\* is \<b\>red\</b\> ([message]({link}{asked.replace('.', '')}))",
        f"↳ Olga: yes, looking at the db ([message]({link}{answered.replace('.', '')}?thread_ts={asked}&cid={CHANNEL}))",
        "Ben `/whoami` succeeded",  # a look, not a key action
        "📣 **Olga** EU customers can't pay",
        "📣 **Olga** resolved the incident: Restarted the reports job",
    ], "in order, the bot's own messages and what came after the resolution left out"
    assert sections["What was done"] == "- No command from the channel changed anything or found a problem.", "a look is not something done"
    incident = runtime.incidents.timeline.get(1)
    whoami = next(e for e in runtime.incidents.timeline.events(1) if e.kind == COMMAND)
    acknowledged = duration((whoami.occurred_at - incident.started_at).total_seconds())
    assert sections["Response times"].splitlines()[:3] == [
        f"- Time to acknowledge: {acknowledged}",  # Ben's /whoami: not Olga's start, nor the messages before it
        "- Time to mitigate: — (no /health found everything green after a /restart, /rollback or /restore)",
        f"- Time to resolve: {duration((incident.resolved_at - incident.started_at).total_seconds())}",
    ]

    out = tmp_path / "pm.md"
    env = bot_env(FLOWSTATE_HOME=str(runtime.settings.home), FLOWSTATE_TIMEZONE="Asia/Tokyo", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([BOT, "postmortem", "1", "--out", str(out)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Wrote the post-mortem of incident #1 to {out}.\n"
    assert out.read_text() == markdown, "the same report, from the bot's database alone"


def _seed_channel(slack_double, start: float) -> dict:
    """Over a thousand messages (two pages of history): an alert, a join, a deleted message that kept its
    thread, an edit, a thread of three; the rest plain talk. Returns the ts of the notable ones."""
    at = iter(f"{start + 5 * i:.6f}" for i in range(2000))
    seen = {
        "alert": slack_double.seed_message(CHANNEL, "*FIRING* reports queue &gt; 500", None, ts=next(at), subtype="bot_message", bot_id="B0ALERT", username="alertmanager"),
        "join": slack_double.seed_message(CHANNEL, "<@UNEW> has joined the channel", "UNEW", ts=next(at), subtype="channel_join"),
        "deleted": slack_double.seed_message(CHANNEL, "This message was deleted.", "USLACKBOT", ts=next(at), subtype="tombstone", hidden=True),
    }
    seen["kept"] = [slack_double.seed_message(CHANNEL, f"kept reply {i}", "UBEN", ts=next(at), thread_ts=seen["deleted"]) for i in range(2)]
    seen["edited"] = slack_double.seed_message(CHANNEL, "queue is at 900 (not 9000)", "UBEN", ts=next(at), edited={"user": "UBEN", "ts": "1"})
    seen["thread"] = slack_double.seed_message(CHANNEL, "who runs the reports job?", "UOLGA", ts=next(at))
    seen["replies"] = [slack_double.seed_message(CHANNEL, f"me, reply {i}", "UCLEO", ts=next(at), thread_ts=seen["thread"]) for i in range(3)]
    seen["plain"] = [slack_double.seed_message(CHANNEL, f"line {i}", ("UOLGA", "UBEN")[i % 2], ts=next(at)) for i in range(1045)]
    return seen


def test_a_channel_with_no_incident_becomes_a_resolved_incident_and_its_postmortem(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double, timezone="America/New_York")
    start = time.time() - 2 * 3600
    seen = _seed_channel(slack_double, start)
    slack_double.ratelimit_next("conversations.replies", retry_after=1)  # Slack says slow down in the middle of the import
    said = _slash(sender, slack_double, '/postmortem --since 3h "Reports job overload"', "UOLGA", "pm")
    assert said.startswith("Post-mortem of incident #1 posted to the channel as postmortem-incident-1.md")
    sections = _sections(_upload(slack_double).content.decode())
    head = sections["head"].splitlines()
    assert head[0] == "# Post-mortem: Reports job overload (incident #1)"
    new_york = ZoneInfo("America/New_York")
    first = datetime.fromtimestamp(float(seen["alert"]), timezone.utc).astimezone(new_york).strftime("%Y-%m-%d %H:%M %Z")
    last = datetime.fromtimestamp(float(seen["plain"][-1]), timezone.utc).astimezone(new_york).strftime("%Y-%m-%d %H:%M %Z")
    assert f"| Started | {first} by Olga (imported from the channel's history) |" in head
    assert f"| Resolved | {last} |" in head and "| Participants | Olga, Ben, Cleo |" in head
    timeline = [line for line in sections["Timeline"].splitlines() if line.startswith("- ")]
    assert len(timeline) == 1 + 2 + 1 + 1 + 3 + 1045, "no join, no deleted message; its replies and every thread kept"
    assert timeline[0].split(" ", 2)[2] == r"alertmanager (bot): \*FIRING\* reports queue \> 500" + f" ([message](https://example.slack.com/archives/{CHANNEL}/p{seen['alert'].replace('.', '')}))"
    texts = [line.split(" ", 2)[2].split(" ([message]")[0] for line in timeline]
    assert texts[1:9] == [
        "↳ Ben: kept reply 0", "↳ Ben: kept reply 1", "Ben: queue is at 900 (not 9000) _(edited)_", "Olga: who runs the reports job?",
        "↳ Cleo: me, reply 0", "↳ Cleo: me, reply 1", "↳ Cleo: me, reply 2", "Olga: line 0",
    ]
    assert texts[-1] == "Olga: line 1044"
    assert sections["Detection and response"].splitlines()[0].startswith(f"- First alert or message: {first}, alertmanager (bot):")
    assert sections["Response times"].startswith("_Not measured: this incident was imported from the channel's history")
    calls = {method: len(slack_double.calls_to(method)) for method in ("conversations.history", "conversations.replies", "users.info")}
    assert calls == {"conversations.history": 2, "conversations.replies": 2 + 1, "users.info": 3}, "pages, threads, one 429 retried; names once each"
    incident = runtime.incidents.timeline.get(1)
    assert (incident.state, incident.imported, incident.names) == ("resolved", True, {"UBEN": "Ben", "UCLEO": "Cleo", "UOLGA": "Olga"})


def test_postmortem_since_with_nothing_in_the_window_says_so_and_creates_nothing(slack_bot, slack_double):
    sender, runtime = _bot(slack_bot, slack_double)
    slack_double.seed_message(CHANNEL, "old news", "UBEN", ts=f"{time.time() - 5 * 86400:.6f}")
    said = _slash(sender, slack_double, "/postmortem --since 2d --until 1d", "UOLGA", "pm")
    assert said.startswith("This channel has no messages between ") and said.endswith("; nothing to import.")
    assert _slash(sender, slack_double, "/postmortem --since tomorrow", "UOLGA", "pm2").startswith("'tomorrow' is not a time; give an age such as 3h")
    assert runtime.incidents.timeline.recent() == []


def test_an_incident_with_an_approved_restart_shows_who_asked_who_approved_and_what_it_did(slack_bot, slack_double, live_stack):
    sender, runtime = _bot(slack_bot, slack_double, live_stack)
    _slash(sender, slack_double, "/incident start Frontend errors", "UOLGA", "start")
    assert _slash(sender, slack_double, "/restart frontend", "UOLGA", "ask").startswith("Request #2: `/restart frontend` needs a second person's approval")
    ts = _request_message(slack_double, 2)["ts"]  # job #1 was the /incident start
    sender.click(APPROVE, "2", "UBEN", CHANNEL, ts, slack_double.response_url("approve"))
    _wait_message(slack_double, ts, "✅ Done (approved by <@UBEN>)")
    _slash(sender, slack_double, "/incident resolve Frontend restarted", "UOLGA", "resolve")
    _slash(sender, slack_double, "/postmortem", "UOLGA", "pm")
    sections = _sections(_upload(slack_double).content.decode())
    actions = [line.split(" ", 2)[2] for line in sections["Timeline"].splitlines() if line.startswith("- ") and "🔧" in line]
    assert actions == [
        "🔧 **Olga** Request #2 `/restart frontend` asked for approval by @Olga",
        "🔧 **Ben** Request #2 `/restart frontend` approved by @Ben",
        "🔧 **Olga** Request #2 `/restart frontend` started (approved by @Ben)",
        "🔧 **Olga** `/restart frontend` succeeded",
    ]
    assert re.fullmatch(
        r"- \d\d:\d\d `/restart frontend` by Olga \(request #2, approved by Ben\): succeeded in \d+\.\d s: "
        r"Restarted · 🟢 \\\*frontend\\\* is healthy again after \d+\.\d s; every check held for 2 s",
        sections["What was done"],
    ), sections["What was done"]
    assert "- Start to first action: " in sections["Detection and response"]


def test_a_pin_while_the_bots_database_is_down_is_answered_500_and_lands_once_when_slack_delivers_it_again(
    slack_bot, slack_double, postgres_url, caplog
):
    from tests.bot.test_database_outage_log import _connections

    sender, runtime = _bot(slack_bot, slack_double, database_url=postgres_url)
    _slash(sender, slack_double, "/incident start Checkout failing", "UOLGA", "start")
    parent = slack_double.seed_message(CHANNEL, "db cpu at 100%", "UCLEO")
    database = postgres_url.rsplit("/", 1)[1]
    _connections(database, allowed=False)
    try:
        refused = sender.event(_pin(parent, "UCLEO"), event_id="EvDOWN1")
    finally:
        _connections(database, allowed=True)
    assert refused.status == 500, "not acknowledged: Slack delivers the event again"
    assert "Traceback" not in refused.body
    assert sender.event(_pin(parent, "UCLEO"), event_id="EvDOWN1", retry_num=1).status == 200
    assert sender.event(_pin(parent, "UCLEO"), event_id="EvDOWN1", retry_num=2).status == 200
    assert _ephemerals(slack_double, 1) == ["📌 Added the message to the timeline of incident #1."]
    assert _jobs(runtime)[-1:] == [f"add-message {parent} reaction"], "one job for the event, stored on its redelivery"
    assert [ts for ts, *_ in _pinned(runtime)] == [parent]
