"""The hostile review of the frame, attack by attack: each test reproduces what broke and checks it holds now."""

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from bot.frame.blocks import to_text
from bot.adapters.console import run_console
from bot.frame.registry import Invocation, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry
from tests.conftest import POSTGRES_ADMIN, bot_env, grant, run

BOT = str(Path(sys.executable).with_name("flowstate-bot"))


def _rows(runtime):
    with runtime.store.session() as session:
        return [(row.id, row.user_id, row.outcome) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


# ---- 8. the append-only audit ------------------------------------------------------------------


def test_replace_into_cannot_overwrite_an_audit_row_on_sqlite(make_runtime, tmp_path):
    runtime = make_runtime(database_url=f"sqlite:///{tmp_path / 'bot.db'}")
    runtime.audit.record(Invocation("U1", "role", "grant U2 admin", "C1"), "denied")
    (row_id, _user, _outcome), = _rows(runtime)
    with pytest.raises(DBAPIError, match="append-only"):
        with runtime.store.engine.begin() as connection:
            connection.execute(
                text(
                    "REPLACE INTO audit_log (id, at, user_id, source, command, outcome, duration_ms)"
                    " VALUES (:id, '2026-01-01 00:00:00', 'UFORGED', 'slack', 'role', 'succeeded', 0)"
                ),
                {"id": row_id},
            )
    assert _rows(runtime) == [(row_id, "U1", "denied")]


def test_truncate_cannot_empty_the_audit_on_postgresql(make_runtime, postgres_url):
    runtime = make_runtime(database_url=postgres_url)
    runtime.audit.record(Invocation("U1", "role", "grant U2 admin", "C1"), "denied")
    with pytest.raises(DBAPIError, match="append-only"):
        with runtime.store.engine.begin() as connection:
            connection.execute(text("TRUNCATE audit_log"))
    assert [outcome for _id, _user, outcome in _rows(runtime)] == ["denied"]


def test_a_bot_role_that_does_not_own_the_audit_cannot_rewrite_it_or_drop_its_guards(make_runtime, postgres_url):
    """The README's production setup: the migration role owns the tables, the bot runs with these grants."""
    import secrets

    runtime = make_runtime(database_url=postgres_url)
    runtime.audit.record(Invocation("U1", "whoami", "", "C1"), "succeeded")
    role = f"flowstate_bot_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(postgres_url, autocommit=True) as owner:
            for statement in _readme_grants(role):
                owner.execute(statement)
        as_bot = postgres_url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)
        with psycopg.connect(as_bot, autocommit=True) as bot:
            bot.execute("INSERT INTO audit_log (at, user_id, source, command, outcome, duration_ms) VALUES (now(), 'U2', 'slack', 'help', 'succeeded', 0)")
            for attack in ("UPDATE audit_log SET outcome = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log",
                           "DROP TRIGGER audit_log_no_change ON audit_log", "ALTER TABLE audit_log DISABLE TRIGGER ALL"):
                with pytest.raises(psycopg.Error):
                    bot.execute(attack)
        assert len(_rows(runtime)) == 2
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as owner:
            owner.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {role}")


def _readme_grants(role: str) -> list[str]:
    """The GRANT statements exactly as the README gives them (BOT_ROLE replaced)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("<!-- bot-role-grants -->", 2)[1]
    return [line.strip().replace("BOT_ROLE", role) for line in block.splitlines() if line.strip().startswith(("GRANT", "REVOKE"))]


# ---- 9. forged audit lines and terminal escapes -------------------------------------------------


def test_a_forged_line_in_someones_text_shows_escaped_on_one_line(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    forged = "x\n2026-11-29 03:00:00 UTC <@U0BOSS> /role grant U0EVIL admin → succeeded (1 ms)"
    run(runtime, "U0STRANGER", f"/whoami {forged}")
    reply = run(runtime, "UADMIN", "/audit 5")
    entry = next(line for line in reply.text.splitlines() if "U0STRANGER" in line)
    assert "\\n2026-11-29 03:00:00 UTC &lt;@U0BOSS&gt; /role grant U0EVIL" in entry
    assert not any(line.startswith("2026-11-29 03:00:00 UTC") for line in reply.text.splitlines())
    assert "<@U0BOSS>" not in reply.text, "no mention can be forged in Slack"


def test_escape_sequences_never_reach_the_terminal(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    clipboard = "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07"
    run(runtime, "U0STRANGER", f"/whoami {clipboard}\x1b[2J\x9b31m")
    out = io.StringIO()
    run_console(runtime, "UADMIN", "C1", stdin=io.StringIO("/audit 5\n"), stdout=out)
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue() and "\x9b" not in out.getvalue()
    assert "\\x1b]52;c;" in out.getvalue()
    assert "\x1b" not in to_text(Reply("a\x1b[31mred"))


# ---- 10. /role says what it did, and what is in effect -------------------------------------------


def test_revoke_and_grant_say_the_role_still_in_effect_through_a_user_group(tmp_path):
    from bot.frame.config import StackConfig
    from bot.runtime import Runtime
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, admins=["UADMIN"], role_groups="S0ONCALL=admin")
    runtime = Runtime.build(settings, StackConfig(), group_members=lambda group: {"U0MEMBER"})
    try:
        grant(runtime, "U0MEMBER", Role.admin)
        assert run(runtime, "UADMIN", "/role revoke U0MEMBER").text == (
            "The admin role granted in the bot was taken from <@U0MEMBER>; "
            "in effect they have the admin role (admin through Slack user group S0ONCALL)."
        )
        assert run(runtime, "UADMIN", "/role grant U0MEMBER viewer").text == (
            "<@U0MEMBER> was granted the viewer role in the bot; in effect they have the admin role "
            "(admin through Slack user group S0ONCALL; viewer granted in the bot)."
        )
        listed = run(runtime, "UADMIN", "/role list").text
        assert "<@U0MEMBER> viewer (granted by <@UADMIN>" in listed and "; in effect the admin role" in listed
    finally:
        runtime.close()


def test_a_failed_group_lookup_is_said_as_such_cached_briefly_and_grants_nothing(tmp_path):
    from bot.frame.config import StackConfig
    from bot.runtime import Runtime
    from tests.conftest import make_settings

    calls = []

    def broken(group):
        calls.append(group)
        raise TimeoutError("slack is down")

    runtime = Runtime.build(make_settings(tmp_path, role_groups="S0ONCALL=operator"), StackConfig(), group_members=broken)
    try:
        reply = run(runtime, "U0MEMBER", "/whoami")
        assert reply.text == (
            "/whoami was not run: your role could not be checked because Slack's user-group lookup failed; try again in a minute."
        )
        run(runtime, "U0MEMBER", "/whoami")
        assert calls == ["S0ONCALL"], "the failure is cached for a few seconds, not retried on every command"
    finally:
        runtime.close()


# ---- 11. /audit within Slack's limits --------------------------------------------------------------


def test_a_flood_of_long_denied_rows_cannot_make_audit_unusable(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    for _ in range(199):
        run(runtime, "U0FLOOD", "/audit " + "A" * 3500)
    reply = run(runtime, "UADMIN", "/audit 200")
    assert len(reply.blocks) <= 50 and sum(len(str(block)) for block in reply.blocks) < 40_000
    assert all(len(line) < 400 for line in reply.text.splitlines())
    head = reply.blocks[0]["text"]["text"]
    assert "older ones: `/audit 200 " in head
    before = int(head.rsplit("`/audit 200 ", 1)[1].rstrip("`"))
    older = run(runtime, "UADMIN", f"/audit 200 {before}")
    assert "U0FLOOD" in older.text and f"#{before} " not in older.text


def test_audit_shows_the_source_channel_and_the_consoles_os_user(make_runtime):
    runtime = make_runtime(admins=["UADMIN", "U0ONCALL"])
    run_console(runtime, "U0ONCALL", "console", stdin=io.StringIO("/whoami\n"), stdout=io.StringIO())
    line = next(line for line in run(runtime, "UADMIN", "/audit 5").text.splitlines() if "U0ONCALL" in line)
    import getpass

    assert f"(console as {getpass.getuser()} in console)" in line


# ---- low: edges ------------------------------------------------------------------------------------


def test_nul_bytes_and_overlong_ids_keep_their_audit_rows_on_postgresql(make_runtime, postgres_url):
    runtime = make_runtime(database_url=postgres_url, admins=["UADMIN"])
    run(runtime, "UADMIN", "/whoami a\x00b")  # rejected, with its text
    run(runtime, "UADMIN", "/help a\x00b")  # allowed, then failed with an error naming the text
    run(runtime, "U" + "X" * 200, "/whoami")
    outcomes = [(user[:5], outcome) for _id, user, outcome in _rows(runtime)]
    assert outcomes == [("UADMI", "rejected"), ("UADMI", "allowed"), ("UADMI", "failed"), ("UXXXX", "denied")]


def test_the_embedded_database_is_private(make_runtime, tmp_path):
    runtime = make_runtime()
    home = tmp_path / ".flowstate-bot"
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(home / "bot.db").st_mode) == 0o600
    runtime.audit.record(Invocation("U1", "help", "", "C1"), "succeeded")
    for extra in home.glob("bot.db-*"):
        assert stat.S_IMODE(os.stat(extra).st_mode) == 0o600, extra


@pytest.mark.process
@pytest.mark.parametrize(
    "argv,env,expected",
    [
        (["console", "--as", ""], {}, "is not a Slack user id"),
        (["run", "--http", "--port", "99999"], {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}, "is not a port"),
        (["console"], {"FLOWSTATE_ADMINS": "U0OK,robert'); DROP"}, "FLOWSTATE_ADMINS: \"robert'); DROP\" is not a Slack user id"),
        (["console"], {"FLOWSTATE_DATABASE_URL": "postgresql://u:hunter2@h:abc/db"}, "FLOWSTATE_DATABASE_URL: its port is not a number"),
        (["console"], {"FLOWSTATE_HOME": "/proc/flowstate"}, "FLOWSTATE_HOME: cannot create the bot's database"),
        (["run", "--http"], {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "FLOWSTATE_SLACK_API_URL": "http://127.0.0.1:9/api/"},
         "FLOWSTATE_SLACK_API_URL: Slack cannot be reached at http://127.0.0.1:9/api/"),
    ],
)
def test_startup_mistakes_are_one_line_and_exit_2(tmp_path, argv, env, expected):
    result = subprocess.run([BOT, *argv], cwd=tmp_path, env=bot_env(**env), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr and "hunter2" not in result.stderr


@pytest.mark.process
def test_a_port_in_use_or_a_bad_host_is_one_line(tmp_path, slack_double):
    import socket

    env = bot_env(SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", FLOWSTATE_SLACK_API_URL=slack_double.api_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for host, port_arg in (("127.0.0.1", str(port)), ("192.0.2.1", "0")):  # a documentation address: never this machine's
            result = subprocess.run([BOT, "run", "--http", "--host", host, "--port", port_arg], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 2 and "--host/--port: cannot listen on" in result.stderr, result.stderr
            assert "Traceback" not in result.stderr


def test_an_unwritable_console_history_is_a_note_not_a_traceback(tmp_path, capsys):
    from bot.adapters.console import save_history

    history = tmp_path / "console_history"
    history.mkdir()  # a directory where the history file should be: it cannot be written
    save_history(history)
    assert "the command history could not be saved to" in capsys.readouterr().err
