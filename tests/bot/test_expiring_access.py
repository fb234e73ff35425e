"""Access that expires: `/role grant @user ROLE --for 2h` and `/user-role EMAIL ROLE --for 2h`, warned by direct message
five minutes before the end and reverted at the end, once, through the runners' sweep on a clock the test moves; with
the Slack Web API double for what people read, and real SQLite, PostgreSQL and an app users table on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone

import psycopg
import pytest
from sqlalchemy import select

from bot.access.model import TemporaryGrant
from bot.adapters.console import run_approved
from bot.adapters.slack.client import SlackNotifier, web_client
from bot.duties.service import Duties
from bot.frame.config import DatabaseSection, StackConfig
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.jobs.runner import Runner
from bot.store.engine import AuditEntry
from tests.bot.test_replicas import app_dsn as app_users  # noqa: F401 (a fixture: the app's users table on PostgreSQL)
from tests.commands.test_users_live import users  # noqa: F401 (a fixture: the live stack's users table, left as found)
from tests.conftest import grant
from tests.duties.conftest import ManualClock

OPS = "C0OPS"


def utc(hour: int, minute: int, day: int = 5) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=timezone.utc)


class Replica:
    """A bot whose Slack is the double, whose scheduler's clock the test moves, and whose runner's sweep the test runs."""

    def __init__(self, runtime, slack_double, clock: ManualClock):
        self.rt, self.double, self.clock = runtime, slack_double, clock
        client = web_client(runtime.settings)
        runtime.notifier, runtime.slack = SlackNotifier(client), client
        runtime.duties = Duties(runtime, clock, evaluator=lambda _duties: [])
        self.runner = Runner(runtime, client)

    def type(self, user: str, line: str) -> str:
        """A command typed in the ops channel; an approval runs the approved request here, as the console does."""
        name, _, text = line.lstrip("/").partition(" ")
        reply = self.rt.pipeline.dispatch(Invocation(user, name, text.strip(), OPS, "console")).text
        ran = [result.text for result in run_approved(self.rt, lambda _text: None)]
        return "\n".join([reply, *ran])

    def sweep_at(self, moment: datetime) -> None:
        self.clock.at = moment
        self.runner._sweep()

    def role_of(self, user: str) -> Role | None:
        return self.rt.authz.role_of(user)


def sweep_together(bots: list[Replica], moment: datetime) -> None:
    """Every replica's runner sweeps at the same moment, on threads released together."""
    start = threading.Barrier(len(bots))

    def sweep(bot: Replica) -> None:
        start.wait()
        bot.sweep_at(moment)

    threads = [threading.Thread(target=sweep, args=(bot,)) for bot in bots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def direct_messages(double, user: str) -> list[str]:
    return [message["text"] for message in double.messages(double.dm_channel(user))]


def channel_news(double) -> list[str]:
    """The channel's messages that are not a request's (a grant's end)."""
    return [message["text"] for message in double.messages(OPS) if not message["text"].startswith("Request #")]


def scheduler_rows(runtime) -> list[tuple]:
    with runtime.store.session() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.user_id == "scheduler").order_by(AuditEntry.id)).all()
    return [(row.command, row.outcome, row.arguments, row.channel_id) for row in rows]


def grants(runtime) -> list[tuple]:
    with runtime.store.session() as session:
        rows = session.scalars(select(TemporaryGrant).order_by(TemporaryGrant.id)).all()
    return [(row.subject, row.role, row.previous_role, row.expires_at, row.ended, row.ended_by) for row in rows]


@pytest.fixture
def replica(make_runtime, slack_double):
    def build(database_url: str, stack: StackConfig | None = None, clock: ManualClock | None = None, **settings) -> Replica:
        runtime = make_runtime(
            stack, database_url=database_url, admins=["UADMIN", "UPEER"], slack_api_url=slack_double.api_url,
            slack_bot_token="xoxb-test-token", **settings,
        )
        return Replica(runtime, slack_double, clock or ManualClock(utc(14, 30)))

    return build


def test_a_role_granted_for_two_hours_is_warned_once_at_1h55_and_reverted_once_at_2h(replica, database_url, slack_double):
    bot = replica(database_url)
    assert bot.type("UADMIN", "/role grant <@UALICE> viewer") == "<@UALICE> now has the viewer role."
    said = bot.type("UADMIN", "/role grant <@UALICE|alice> operator --for 2h")
    assert said == "<@UALICE> has the operator role until 16:30 UTC, then viewer again."
    assert bot.role_of("UALICE") is Role.operator
    listed = bot.type("UADMIN", "/role list")
    assert "<@UALICE> operator until 16:30 UTC, then viewer (granted by <@UADMIN>, 2026-" in listed

    bot.sweep_at(utc(16, 24))
    assert direct_messages(slack_double, "UALICE") == []
    bot.sweep_at(utc(16, 25))  # 1 h 55 min after the grant
    bot.sweep_at(utc(16, 26))
    bot.sweep_at(utc(16, 29))
    assert direct_messages(slack_double, "UALICE") == [
        "⏳ Your operator role in the bot ends at 16:30 UTC, in 5 minutes, and then you have viewer again; "
        "an admin extends it with `/role grant <@UALICE> operator --for 1h`."
    ]
    assert bot.role_of("UALICE") is Role.operator and channel_news(slack_double) == []

    bot.sweep_at(utc(16, 30))
    bot.sweep_at(utc(16, 31))
    assert bot.role_of("UALICE") is Role.viewer
    assert channel_news(slack_double) == ["⌛ <@UALICE>'s operator role in the bot ended at 16:30 UTC; they have viewer again."]
    assert scheduler_rows(bot.rt) == [("role", "reverted", {"action": "grant", "user": "UALICE", "role": "viewer"}, OPS)]
    assert "<@UALICE> viewer (granted by <@UADMIN>, 2026-" in bot.type("UADMIN", "/role list")
    assert "until" not in bot.type("UADMIN", "/role list")
    assert len(direct_messages(slack_double, "UALICE")) == 1


def test_a_user_without_a_role_before_has_none_after(replica, database_url, slack_double):
    bot = replica(database_url)
    assert bot.type("UADMIN", "/role grant UBOB approver --for 30m") == "<@UBOB> has the approver role until 15:00 UTC, then no role in the bot."
    bot.sweep_at(utc(15, 0))
    assert bot.role_of("UBOB") is None
    assert channel_news(slack_double) == ["⌛ <@UBOB>'s approver role in the bot ended at 15:00 UTC; no role is granted to them in the bot now."]
    assert scheduler_rows(bot.rt) == [("role", "reverted", {"action": "revoke", "user": "UBOB"}, OPS)]


def test_a_new_grant_while_one_runs_replaces_its_end_and_keeps_the_role_to_come_back_to(replica, database_url, slack_double):
    bot = replica(database_url)
    bot.type("UADMIN", "/role grant UALICE viewer")
    bot.type("UADMIN", "/role grant UALICE operator --for 2h")
    bot.sweep_at(utc(16, 25))  # warned of 16:30
    bot.clock.at = utc(16, 27)
    said = bot.type("UADMIN", "/role grant UALICE approver --for 1h")
    assert said == "<@UALICE> has the approver role until 17:27 UTC (it was to end at 16:30 UTC), then viewer again."
    bot.sweep_at(utc(16, 30))
    assert bot.role_of("UALICE") is Role.approver and channel_news(slack_double) == []
    bot.sweep_at(utc(17, 22))  # warned again, of the new end
    bot.sweep_at(utc(17, 27))
    assert bot.role_of("UALICE") is Role.viewer
    assert [text.split(",")[0] for text in direct_messages(slack_double, "UALICE")] == [
        "⏳ Your operator role in the bot ends at 16:30 UTC", "⏳ Your approver role in the bot ends at 17:27 UTC",
    ]
    assert channel_news(slack_double) == ["⌛ <@UALICE>'s approver role in the bot ended at 17:27 UTC; they have viewer again."]
    assert [row[1:3] for row in grants(bot.rt)] == [("approver", "viewer")], "one grant, extended"


def test_extending_an_admin_grant_needs_a_second_admin_and_changes_nothing_until_approved(replica, database_url, slack_double):
    bot = replica(database_url)
    grant(bot.rt, "UAPP", Role.approver)
    asked = bot.type("UADMIN", "/role grant UCAROL admin --for 1h")
    assert asked.startswith("Request #1: `/role grant UCAROL admin --for 1h` needs a second person's approval")
    (request,) = [m for m in slack_double.messages(OPS) if m["text"].startswith("Request #1")]
    assert "For 1h from its approval, then the role before it comes back." in str(request["blocks"])
    assert bot.type("UAPP", "/approvals approve 1").startswith("You cannot approve request #1: granting admin needs a second admin")
    bot.clock.at = utc(14, 40)
    assert bot.type("UPEER", "/approvals approve 1").endswith("<@UCAROL> has the admin role until 15:40 UTC, then no role in the bot.")
    bot.clock.at = utc(15, 30)
    assert bot.type("UADMIN", "/role grant UCAROL admin --for 2h").startswith("Request #2: `/role grant UCAROL admin --for 2h` needs")
    bot.sweep_at(utc(15, 35))
    assert len(direct_messages(slack_double, "UCAROL")) == 1
    bot.clock.at = utc(15, 36)
    approved = bot.type("UPEER", "/approvals approve 2")
    assert approved.endswith("<@UCAROL> has the admin role until 17:36 UTC (it was to end at 15:40 UTC), then no role in the bot.")
    bot.sweep_at(utc(15, 40))
    assert bot.role_of("UCAROL") is Role.admin
    bot.sweep_at(utc(17, 31))
    bot.sweep_at(utc(17, 36))
    assert bot.role_of("UCAROL") is None
    assert len(direct_messages(slack_double, "UCAROL")) == 2


def test_revoked_early_or_changed_by_hand_nothing_is_reverted_later(replica, database_url, slack_double):
    bot = replica(database_url)
    bot.type("UADMIN", "/role grant UALICE viewer")
    bot.type("UADMIN", "/role grant UALICE operator --for 2h")
    said = bot.type("UADMIN", "/role revoke <@UALICE>")
    assert said == "<@UALICE>'s operator role (until 16:30 UTC) was taken back early; they have viewer again."
    assert bot.role_of("UALICE") is Role.viewer
    bot.type("UADMIN", "/role grant UBOB operator --for 2h")
    assert bot.type("UADMIN", "/role grant UBOB approver") == "<@UBOB> now has the approver role."  # by hand, for good
    bot.type("UADMIN", "/role grant UCAROL operator --for 1h")
    assert bot.type("UADMIN", "/role grant UCAROL operator") == (
        "<@UCAROL> keeps the operator role for good; it was to end at 15:30 UTC, then no role in the bot."
    )
    bot.sweep_at(utc(16, 25))
    bot.sweep_at(utc(16, 30))
    assert (bot.role_of("UALICE"), bot.role_of("UBOB"), bot.role_of("UCAROL")) == (Role.viewer, Role.approver, Role.operator)
    assert channel_news(slack_double) == [] and scheduler_rows(bot.rt) == []
    assert direct_messages(slack_double, "UALICE") == direct_messages(slack_double, "UBOB") == []
    assert [(row[0], row[4], row[5]) for row in grants(bot.rt)] == [
        ("UALICE", "revoked", "UADMIN"), ("UBOB", "replaced", "UADMIN"), ("UCAROL", "kept", "UADMIN"),
    ]
    assert bot.type("UADMIN", "/role revoke UALICE") == "<@UALICE> no longer has the viewer role."


@pytest.mark.parametrize(
    "line, said",
    [
        ("/role grant UALICE operator --for 0", "'0' is not a duration; use a number and s, m, h or d, such as 15m or 2h; usage: "),
        ("/role grant UALICE operator --for -2h", "'-2h' is not a duration; use a number and s, m, h or d, such as 15m or 2h; usage: "),
        ("/role grant UALICE operator --for 31d", "The duration can be at most 30d; usage: "),
        ("/role grant UALICE operator --for 99999999999999h", "The duration can be at most 30d; usage: "),
        ("/role revoke UALICE --for 2h", "--for goes with grant only, such as /role grant @alice operator --for 2h; usage: "),
        ("/role grant UALICE viewer --for 2h", "<@UALICE> already has the viewer role in the bot, so a grant for a while would change nothing; "),
    ],
)
def test_a_bad_length_is_refused_in_one_sentence_and_changes_nothing(replica, tmp_path, line, said):
    bot = replica(f"sqlite:///{tmp_path / 'bot.db'}")
    bot.type("UADMIN", "/role grant UALICE viewer")
    assert bot.type("UADMIN", line).startswith(said)
    assert bot.role_of("UALICE") is Role.viewer and grants(bot.rt) == []


def test_three_replicas_sweeping_at_the_same_moment_on_postgresql_warn_and_revert_once(replica, postgres_url, slack_double):
    clock = ManualClock(utc(14, 30))
    bots = [replica(postgres_url, clock=clock) for _ in range(3)]
    bots[0].type("UADMIN", "/role grant UALICE viewer")
    bots[1].type("UADMIN", "/role grant UALICE operator --for 2h")
    for moment in (utc(16, 25), utc(16, 26), utc(16, 30), utc(16, 31)):
        sweep_together(bots, moment)
    assert len(direct_messages(slack_double, "UALICE")) == 1
    assert channel_news(slack_double) == ["⌛ <@UALICE>'s operator role in the bot ended at 16:30 UTC; they have viewer again."]
    assert [row[:2] for row in scheduler_rows(bots[2].rt)] == [("role", "reverted")]
    assert {bot.role_of("UALICE") for bot in bots} == {Role.viewer}


# ---- the app's users table -------------------------------------------------------------------------------------

def app_role(dsn: str, email: str) -> str:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT role FROM users WHERE email = %s", (email,)).fetchone()[0]


def test_an_app_admin_for_two_hours_is_approved_warned_to_the_requester_and_the_old_role_written_back_once(
    replica, postgres_url, app_users, slack_double
):
    stack = StackConfig(database=DatabaseSection(dsn=app_users))
    clock = ManualClock(utc(14, 25))
    bots = [replica(postgres_url, stack, clock=clock) for _ in range(3)]
    bot = bots[0]
    grant(bot.rt, "UOP", Role.operator)
    grant(bot.rt, "UAPP", Role.approver)
    asked = bot.type("UOP", "/user-role alice@example.com admin --for 2h")
    assert asked.startswith("Request #1: `/user-role alice@example.com admin --for 2h` needs a second person's approval")
    (request,) = [m for m in slack_double.messages(OPS) if m["text"].startswith("Request #1")]
    assert "role *user* → *admin* for 2h from its approval, then back to *user*" in str(request["blocks"])
    assert app_role(app_users, "alice@example.com") == "user"
    clock.at = utc(14, 30)
    approved = bot.type("UAPP", "/approvals approve 1")
    assert approved.endswith("Changed the role of alice@example.com: user → admin until 16:30 UTC, then user again.")
    assert app_role(app_users, "alice@example.com") == "admin"
    assert "Role: admin until 16:30 UTC, then user" in bot.type("UOP", "/user alice@example.com")

    for moment in (utc(16, 25), utc(16, 30), utc(16, 31)):
        sweep_together(bots, moment)
    assert direct_messages(slack_double, "UOP") == [
        "⏳ The admin role you gave alice@example.com in the app ends at 16:30 UTC, in 5 minutes, and then it is user again; "
        "`/user-role alice@example.com admin --for 1h` extends it."
    ]
    assert app_role(app_users, "alice@example.com") == "user"
    assert channel_news(slack_double) == ["⌛ alice@example.com's admin role in the app ended at 16:30 UTC; it is user again."]
    assert scheduler_rows(bot.rt) == [("user-role", "reverted", {"email": "alice@example.com", "role": "user"}, OPS)]
    assert "Role: user\n" in bot.type("UOP", "/user alice@example.com")


def test_an_app_role_changed_back_by_hand_is_not_reverted_and_one_changed_elsewhere_is_left_and_said(
    replica, database_url, app_users, slack_double
):
    stack = StackConfig(database=DatabaseSection(dsn=app_users, user_roles=["user", "support", "admin"]))
    bot = replica(database_url, stack)
    grant(bot.rt, "UOP", Role.operator)
    assert bot.type("UOP", "/user-role bob@example.com support --for 2h").endswith("user → support until 16:30 UTC, then user again.")
    assert bot.type("UOP", "/user-role bob@example.com user") == (
        "Changed the role of bob@example.com: support → user. Its temporary support role (until 16:30 UTC) is over, "
        "so nothing changes it back."
    )
    assert bot.type("UOP", "/user-role admin@example.com support --for 1h").endswith("admin → support until 15:30 UTC, then admin again.")
    assert bot.type("UOP", "/user-role admin@example.com support") == (
        "admin@example.com keeps the support role for good; it was to go back to admin at 15:30 UTC."
    )
    assert bot.type("UOP", "/user-role alice@example.com support --for 1h").endswith("until 15:30 UTC, then user again.")
    bot.clock.at = utc(15, 0)
    assert bot.type("UOP", "/user-role alice@example.com support --for 2h") == (
        "alice@example.com has the support role until 17:00 UTC (it was to end at 15:30 UTC), then user again."
    )
    with psycopg.connect(app_users, autocommit=True) as conn:  # someone changes it in the app meanwhile
        conn.execute("UPDATE users SET role = 'admin' WHERE email = 'alice@example.com'")
    bot.sweep_at(utc(16, 30))
    bot.sweep_at(utc(17, 0))
    assert [app_role(app_users, f"{name}@example.com") for name in ("bob", "alice", "admin")] == ["user", "admin", "support"]
    assert channel_news(slack_double) == [
        "⚠️ alice@example.com's support role in the app ended at 17:00 UTC, but it had been changed to admin meanwhile, "
        "so it was left as it is; /user-role changes it if needed."
    ]
    assert [row[:2] for row in scheduler_rows(bot.rt)] == [("user-role", "failed")]
    refused = bot.type("UOP", "/user-role bob@example.com user --for 2h")
    assert refused == "bob@example.com already has the user role; nothing was changed."
    bad = bot.type("UOP", "/user-role bob@example.com support --for 40d")
    assert bad.startswith("The duration can be at most 30d; usage: `/user-role EMAIL ROLE [--for DURATION]`")
    assert app_role(app_users, "bob@example.com") == "user"


@pytest.mark.process
def test_in_the_console_a_role_granted_for_a_while_ends_on_time_too(tmp_path):
    from tests.bot.test_console import console

    clock = tmp_path / "clock"
    clock.write_text("2026-12-05T14:30:00+00:00")
    env = {"FLOWSTATE_CLOCK_FILE": str(clock)}
    granted = console(tmp_path, "/role grant U0ALICE viewer\n/role grant U0ALICE operator --for 2h\n", env=env)
    assert "@U0ALICE has the operator role until 16:30 UTC, then viewer again." in granted.stdout, granted.stderr
    assert "You are @U0ALICE with the operator role" in console(tmp_path, "/whoami\n", "--as", "U0ALICE", env=env).stdout
    clock.write_text("2026-12-05T16:30:00+00:00")
    assert "You are @U0ALICE with the viewer role" in console(tmp_path, "/whoami\n", "--as", "U0ALICE", env=env).stdout
    rows = sqlite3.connect(tmp_path / ".flowstate-bot" / "bot.db").execute(
        "SELECT command, outcome FROM audit_log WHERE user_id = 'scheduler'"
    ).fetchall()
    assert rows == [("role", "reverted")]


def swept_only(tmp_path, database_url: str, at: str) -> tuple:
    """(stack file, clock file, environment) of bot processes with no stack and no duty, their clock at AT."""
    stack_file = tmp_path / "flowstate.toml"
    stack_file.write_text("# no stack: only the bot's own rows\n")
    clock = tmp_path / "clock"
    clock.write_text(at)
    env = dict(
        FLOWSTATE_DATABASE_URL=database_url, FLOWSTATE_CLOCK_FILE=str(clock), FLOWSTATE_DAILY_REPORT_AT="off",
        FLOWSTATE_BACKUP_AT="off", FLOWSTATE_DRILL_AT="off", FLOWSTATE_WATCH_MINUTES="0",
    )
    return stack_file, clock, env


@pytest.mark.process
def test_three_bot_processes_on_postgresql_warn_and_revert_a_grant_once(tmp_path, make_runtime, slack_double, postgres_url):
    """As production runs: three `flowstate-bot run` processes, each with its runners sweeping every couple of seconds,
    their clocks moved together through the test-only clock file."""
    import time

    from tests.conftest import BotProcess

    stack_file, clock, env = swept_only(tmp_path, postgres_url, "2026-12-05T14:30:00+00:00")
    admin = make_runtime(database_url=postgres_url, clock_file=clock, admins=["U0ADMIN"])
    grant(admin, "U0ALICE", Role.viewer)
    said = admin.pipeline.dispatch(Invocation("U0ADMIN", "role", "grant U0ALICE operator --for 2h", OPS, "console")).text
    assert said == "<@U0ALICE> has the operator role until 16:30 UTC, then viewer again."
    bots = [BotProcess(tmp_path, slack_double, tmp_path / f"home{n}", str(stack_file), **env) for n in range(3)]
    try:
        for bot in bots:
            bot.start()
        clock.write_text("2026-12-05T16:25:00+00:00")
        dm = slack_double.dm_channel("U0ALICE")
        slack_double.wait_for("chat.postMessage", timeout=30, predicate=lambda call: call.params.get("channel") == dm)
        clock.write_text("2026-12-05T16:30:00+00:00")
        slack_double.wait_for("chat.postMessage", timeout=30, predicate=lambda call: call.params.get("channel") == OPS)
        time.sleep(5)  # two more sweeps of every runner: nobody warns or reverts again
        assert len(direct_messages(slack_double, "U0ALICE")) == 1
        assert channel_news(slack_double) == ["⌛ <@U0ALICE>'s operator role in the bot ended at 16:30 UTC; they have viewer again."]
        assert [row[:2] for row in scheduler_rows(admin)] == [("role", "reverted")]
        assert admin.authz.role_of("U0ALICE") is Role.viewer
    finally:
        for bot in bots:
            if bot.process is not None:
                bot.close()


def test_live_a_user_of_the_stacks_app_made_admin_for_two_hours_is_a_user_again_at_the_end(replica, live_stack, users, tmp_path, slack_double):
    email = users.new_email("temp.admin")
    users.query("INSERT INTO users (email, name, role) VALUES (%s, 'Temp Admin', 'user')", (email,))
    bot = replica(f"sqlite:///{tmp_path / 'bot.db'}", live_stack)
    grant(bot.rt, "UOP", Role.operator)
    grant(bot.rt, "UAPP", Role.approver)
    assert bot.type("UOP", f"/user-role {email} admin --for 2h").startswith("Request #1: ")
    approved = bot.type("UAPP", "/approvals approve 1")
    assert approved.endswith(f"Changed the role of {email}: user → admin until 16:30 UTC, then user again.")
    assert users.row(email)[2] == "admin"
    bot.sweep_at(utc(16, 25))
    bot.sweep_at(utc(16, 30))
    bot.sweep_at(utc(16, 31))
    assert users.row(email)[2] == "user"
    assert len(direct_messages(slack_double, "UOP")) == 1
    assert channel_news(slack_double) == [f"⌛ {email}'s admin role in the app ended at 16:30 UTC; it is user again."]
