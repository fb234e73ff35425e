"""Follow-ups with owners: `/incident action @owner "TEXT" --due 3d` during or after an incident, `/actions` and
`/actions done ID`, the post-mortem's action items, and the daily reminder by direct message from the runners' sweep
on a clock the test moves (the Slack Web API double for what the owner reads; SQLite and PostgreSQL, replicas on
PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from bot.frame.roles import Role
from bot.incidents.model import ACTION, IncidentAction
from bot.store.engine import AuditEntry
from tests.bot.test_expiring_access import Replica, direct_messages, swept_only, sweep_together
from tests.conftest import grant
from tests.duties.conftest import ManualClock

OPS = "C0OPS"


def utc(day: int, hour: int, minute: int = 0, month: int = 12) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=timezone.utc)


@pytest.fixture
def replica(make_runtime, slack_double):
    """A bot with the Slack double as its Web API, its scheduler on a clock the test moves (bot.type(), bot.sweep_at())."""

    def build(database_url: str, clock: ManualClock | None = None, **settings) -> Replica:
        runtime = make_runtime(
            database_url=database_url, admins=["UADMIN"], slack_api_url=slack_double.api_url,
            slack_bot_token="xoxb-test-token", **settings,
        )
        bot = Replica(runtime, slack_double, clock or ManualClock(utc(5, 9)))
        for user in ("ULEAD", "UALICE", "UBOB", "UCAROL"):
            grant(runtime, user, Role.operator)
        return bot

    return build


def actions(runtime) -> list[tuple]:
    with runtime.store.session() as session:
        rows = session.scalars(select(IncidentAction).order_by(IncidentAction.id)).all()
    return [(row.id, row.incident_id, row.owner, row.text, row.due_at, row.done_by) for row in rows]


def timeline_actions(runtime, incident_id: int) -> list[str]:
    return [event.text for event in runtime.incidents.timeline.events(incident_id) if event.kind == ACTION]


def closings(runtime) -> list[tuple]:
    """The audit's rows of /actions done: who, which, how it ended."""
    with runtime.store.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.command == "actions").order_by(AuditEntry.id)).all()
    return [
        (row.user_id, row.arguments["action_id"], row.outcome, row.error)
        for row in rows if row.outcome != "allowed" and row.arguments["action"] == "done"
    ]


def test_a_follow_up_is_given_listed_with_its_owner_and_due_date_and_closed_once_by_its_owner(replica, database_url):
    bot = replica(database_url)
    bot.type("ULEAD", "/incident start Checkout failing --sev 2")
    said = bot.type("ULEAD", '/incident action <@UALICE|alice> "Add an alert on checkout errors" --due 3d')
    assert said == (
        "📋 Follow-up #1 of incident #1 is <@UALICE>'s, due Tue 2026-12-08: Add an alert on checkout errors; "
        "/actions lists the open ones."
    )
    bot.type("ULEAD", "/incident action <@UBOB> Write the checkout runbook --due 1d")
    assert actions(bot.rt) == [
        (1, 1, "UALICE", "Add an alert on checkout errors", utc(8, 9), None),
        (2, 1, "UBOB", "Write the checkout runbook", utc(6, 9), None),
    ]

    bot.clock.at = utc(7, 10)  # Bob's is a day overdue, Alice's is not due yet
    listed = bot.type("UALICE", "/actions").splitlines()
    assert listed == [
        "*Open follow-ups* (2; yours first) · `/actions done ID` closes one",
        "#1 <@UALICE> · due Tue 2026-12-08 · incident #1 (Checkout failing): Add an alert on checkout errors",
        "#2 ⚠️ *overdue* by 1 day · <@UBOB> · due Sun 2026-12-06 · incident #1 (Checkout failing): Write the checkout runbook",
    ]
    assert bot.type("UBOB", "/actions").splitlines()[1].startswith("#2 ⚠️ *overdue* by 1 day · <@UBOB>")

    assert bot.type("UCAROL", "/actions done 1") == (
        "Follow-up #1 is <@UALICE>'s; its owner, the lead of incident #1 (<@ULEAD>) or an admin closes it."
    )
    assert bot.type("UALICE", "/actions done 1") == "✅ Follow-up #1 of incident #1 is done: Add an alert on checkout errors."
    assert bot.type("UALICE", "/actions done 1") == "Follow-up #1 was already closed by <@UALICE> on Mon 2026-12-07; nothing changed."
    assert actions(bot.rt)[0][5] == "UALICE"
    assert bot.type("UALICE", "/actions").splitlines()[1:] == [
        "#2 ⚠️ *overdue* by 1 day · <@UBOB> · due Sun 2026-12-06 · incident #1 (Checkout failing): Write the checkout runbook",
    ]
    assert bot.type("ULEAD", "/actions done 2").startswith("✅ Follow-up #2")  # the incident's lead may close it too
    assert bot.type("UALICE", "/actions") == 'No follow-up is open; /incident action @owner "TEXT" --due 3d gives one.'

    assert timeline_actions(bot.rt, 1) == [
        "gave follow-up #1 to <@UALICE>, due Tue 2026-12-08: Add an alert on checkout errors",
        "gave follow-up #2 to <@UBOB>, due Sun 2026-12-06: Write the checkout runbook",
        "closed follow-up #1 of <@UALICE>: Add an alert on checkout errors",
        "closed follow-up #2 of <@UBOB>: Write the checkout runbook",
    ]
    assert [row[:3] for row in closings(bot.rt)] == [
        ("UCAROL", 1, "failed"), ("UALICE", 1, "succeeded"), ("UALICE", 1, "failed"), ("ULEAD", 2, "succeeded"),
    ]


def test_an_admin_closes_anyones_and_a_viewer_may_list_but_not_give_one(replica, database_url):
    bot = replica(database_url)
    grant(bot.rt, "UVIEW", Role.viewer)
    bot.type("ULEAD", "/incident start Checkout failing")
    assert bot.type("UVIEW", "/incident action <@UALICE> Add an alert") == "This use of /incident needs the operator role and you have viewer."
    bot.type("ULEAD", "/incident action <@UALICE> Add an alert")
    assert bot.type("UVIEW", "/actions").splitlines()[1].startswith("#1 <@UALICE> · due Sat 2026-12-12")
    assert bot.type("UADMIN", "/actions done 1").startswith("✅ Follow-up #1")


def test_after_the_resolve_it_goes_to_the_channels_last_incident_or_to_the_one_named(replica, database_url):
    bot = replica(database_url)
    bot.type("ULEAD", "/incident start Checkout failing")
    bot.type("ULEAD", "/incident resolve rolled back")
    said = bot.type("ULEAD", "/incident action <@UALICE> Add an alert --due 2d")
    assert said.startswith("📋 Follow-up #1 of incident #1 (resolved) is <@UALICE>'s, due Mon 2026-12-07: Add an alert;")
    bot.type("ULEAD", "/incident start Login slow")
    bot.type("ULEAD", "/incident action <@UBOB> Index the sessions table --incident 1")
    assert [(row[0], row[1], row[2]) for row in actions(bot.rt)] == [(1, 1, "UALICE"), (2, 1, "UBOB")]
    assert timeline_actions(bot.rt, 2) == []


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ('/incident action "Add an alert"', "Action needs an owner first (@name in Slack, a user id in the console), such as "),
        ("/incident action", "Action needs an owner first"),
        ("/incident action <@UALICE>", "Action needs a text after its owner, such as /incident action @owner"),
        ('/incident action <@UALICE> ""', "Action needs a text after its owner"),
        ("/incident action <@UALICE> Add an alert --due 0", "'0' is not a duration; use a number and s, m, h or d"),
        ("/incident action <@UALICE> Add an alert --due 53w", "The deadline can be at most 52w;"),
        ("/incident action <@UALICE> Add an alert --incident 9", "There is no incident #9; /incidents lists them."),
        ("/incident note checked --due 3d", "--due and --incident go with action, such as /incident action @owner"),
        ("/actions done 7", "There is no follow-up #7; /actions lists the open ones."),
        ("/actions done", "Done needs the follow-up's number, such as /actions done 3"),
    ],
)
def test_bad_input_is_refused_in_one_sentence_and_changes_nothing(replica, tmp_path, line, said):
    bot = replica(f"sqlite:///{tmp_path / 'bot.db'}")
    bot.type("ULEAD", "/incident start Checkout failing")
    before = bot.rt.incidents.timeline.count(1)
    reply = bot.type("ULEAD", line)
    assert reply.startswith(said)
    assert reply.count(". ") == 0 and "Traceback" not in reply
    assert actions(bot.rt) == [] and bot.rt.incidents.timeline.count(1) == before


def test_no_incident_in_the_channel_is_said_and_nothing_is_stored(replica, tmp_path):
    bot = replica(f"sqlite:///{tmp_path / 'bot.db'}")
    assert bot.type("ULEAD", "/incident action <@UALICE> Add an alert") == (
        "No incident was started in this channel; name one with --incident ID (/incidents lists them)."
    )
    assert actions(bot.rt) == []


def test_the_postmortem_lists_every_follow_up_with_its_owner_due_date_and_state(replica, database_url):
    bot = replica(database_url, ManualClock(utc(5, 9, month=11)))  # in the past: the post-mortem is written now
    bot.type("ULEAD", "/incident start Checkout failing")
    bot.type("ULEAD", "/incident action <@UALICE> Add an alert on checkout errors --due 3d")
    bot.type("ULEAD", "/incident action <@UBOB> Write the *runbook* | twice --due 1d")
    bot.clock.at = utc(7, 9, month=11)
    bot.type("UALICE", "/actions done 1")
    bot.type("ULEAD", "/incident resolve rolled back")
    incident = bot.rt.incidents.which(OPS, 1)
    names = {"UALICE": "Alice", "UBOB": "Bob", "ULEAD": "Lea"}
    markdown = bot.rt.incidents.report(incident, names)
    items = markdown.split("## Action items\n\n", 1)[1].strip().splitlines()
    assert items == [
        "| Action | Owner | Due | State |",
        "|---|---|---|---|",
        "| #1 Add an alert on checkout errors | Alice | Sun 2026-11-08 | done Sat 2026-11-07 by Alice |",
        "| #2 Write the \\*runbook\\* \\| twice | Bob | Fri 2026-11-06 | **overdue** |",
    ]
    assert "Lea: gave follow-up #2 to @Bob, due Fri 2026-11-06: Write the \\*runbook\\* \\| twice" in markdown


def test_an_overdue_follow_up_is_reminded_to_its_owner_once_a_local_day_until_it_is_done(replica, database_url, slack_double):
    bot = replica(database_url, timezone="Europe/Berlin")
    bot.type("ULEAD", "/incident start Checkout failing")
    bot.type("ULEAD", "/incident action <@UALICE> Add an alert on checkout errors --due 2d")  # due 7 Dec, 10:00 Berlin
    bot.sweep_at(utc(7, 8, 59))
    assert direct_messages(slack_double, "UALICE") == []

    bot.sweep_at(utc(7, 9))  # due: the first reminder
    bot.sweep_at(utc(7, 9, 2))
    bot.sweep_at(utc(7, 22, 59))  # 23:59 in Berlin: still the same local day
    assert direct_messages(slack_double, "UALICE") == [
        "⏰ Your follow-up #1 of incident #1 (Checkout failing) was due Mon 2026-12-07 (overdue since today): "
        "Add an alert on checkout errors. When it is done, `/actions done 1` closes it."
    ]
    bot.sweep_at(utc(7, 23, 0))  # midnight in Berlin: the next local day
    bot.sweep_at(utc(8, 9))
    assert len(direct_messages(slack_double, "UALICE")) == 2
    assert direct_messages(slack_double, "UALICE")[1].startswith(
        "⏰ Your follow-up #1 of incident #1 (Checkout failing) was due Mon 2026-12-07 (1 day overdue):"
    )
    bot.clock.at = utc(8, 10)
    bot.type("UALICE", "/actions done 1")
    bot.sweep_at(utc(9, 9))
    bot.sweep_at(utc(10, 9))
    assert len(direct_messages(slack_double, "UALICE")) == 2
    assert direct_messages(slack_double, "UBOB") == [] and direct_messages(slack_double, "ULEAD") == []


def test_three_replicas_sweeping_together_on_postgresql_send_one_reminder_a_day(replica, postgres_url, slack_double):
    clock = ManualClock(utc(5, 9))
    bots = [replica(postgres_url, clock=clock) for _ in range(3)]
    bots[0].type("ULEAD", "/incident start Checkout failing")
    bots[1].type("ULEAD", "/incident action <@UALICE> Add an alert --due 1d")
    bots[2].type("ULEAD", "/incident action <@UBOB> Write the runbook --due 1d")
    for moment in (utc(6, 9), utc(6, 9, 1), utc(6, 15)):
        sweep_together(bots, moment)
    assert len(direct_messages(slack_double, "UALICE")) == 1 and len(direct_messages(slack_double, "UBOB")) == 1
    sweep_together(bots, utc(7, 9))
    assert len(direct_messages(slack_double, "UALICE")) == 2 and len(direct_messages(slack_double, "UBOB")) == 2
    with bots[0].rt.store.session() as session:
        reminded = session.scalars(select(func.count()).select_from(IncidentAction).where(IncidentAction.reminded_on.is_not(None))).one()
    assert reminded == 2


@pytest.mark.process
def test_two_bot_processes_on_postgresql_remind_once_a_day_at_the_test_clocks_times(tmp_path, make_runtime, slack_double, postgres_url):
    """As production runs: two `flowstate-bot run` processes whose runners sweep every couple of seconds, their
    scheduler's clock moved together through the test-only clock file."""
    import time

    from bot.frame.registry import Invocation
    from tests.conftest import BotProcess

    stack_file, clock, env = swept_only(tmp_path, postgres_url, "2026-12-05T09:00:00+00:00")
    lead = make_runtime(database_url=postgres_url, clock_file=clock)
    grant(lead, "U0LEAD", Role.operator)
    grant(lead, "U0ALICE", Role.viewer)

    def type_(user: str, line: str) -> str:
        name, _, text = line.lstrip("/").partition(" ")
        return lead.pipeline.dispatch(Invocation(user, name, text, OPS, "console")).text

    type_("U0LEAD", "/incident start Checkout failing")
    assert type_("U0LEAD", "/incident action U0ALICE Add an alert --due 1d").startswith("📋 Follow-up #1 of incident #1 is <@U0ALICE>'s")
    dm = slack_double.dm_channel("U0ALICE")
    bots = [BotProcess(tmp_path, slack_double, tmp_path / f"home{n}", str(stack_file), **env) for n in range(2)]
    try:
        for bot in bots:
            bot.start()
        clock.write_text("2026-12-06T09:00:00+00:00")
        slack_double.wait_for("chat.postMessage", timeout=30, predicate=lambda call: call.params.get("channel") == dm)
        time.sleep(5)  # two more sweeps of every runner, the same day: no second reminder
        assert len(direct_messages(slack_double, "U0ALICE")) == 1
        clock.write_text("2026-12-07T08:00:00+00:00")
        slack_double.wait_for(
            "chat.postMessage", timeout=30, predicate=lambda call: call.params.get("channel") == dm and "1 day overdue" in call.params.get("text", "")
        )
        time.sleep(5)
        assert len(direct_messages(slack_double, "U0ALICE")) == 2
        assert type_("U0ALICE", "/actions done 1") == "✅ Follow-up #1 of incident #1 is done: Add an alert."
        clock.write_text("2026-12-08T08:00:00+00:00")
        time.sleep(5)
        assert len(direct_messages(slack_double, "U0ALICE")) == 2
    finally:
        for bot in bots:
            if bot.process is not None:
                bot.close()
