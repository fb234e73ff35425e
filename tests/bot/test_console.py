"""The console, driven through stdin as `printf '/help\n' | flowstate-bot console` drives it."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bot_env

BOT = str(Path(sys.executable).with_name("flowstate-bot"))


def console(cwd, stdin, *args, env=None):
    return subprocess.run(
        [BOT, "console", *args], input=stdin, cwd=cwd, capture_output=True, text=True, timeout=60, env=bot_env(**(env or {}))
    )


def test_a_new_user_runs_help_and_whoami_on_the_embedded_default(tmp_path):
    result = console(tmp_path, "/help\n/whoami\n")
    assert result.returncode == 0, result.stderr
    assert "Commands you may run" in result.stdout
    assert "`/health` — Check every service" in result.stdout
    assert "You are @console with the admin role" in result.stdout
    assert (tmp_path / ".flowstate-bot" / "bot.db").exists()
    rows = sqlite3.connect(tmp_path / ".flowstate-bot" / "bot.db").execute(
        "SELECT command, outcome FROM audit_log ORDER BY id"
    ).fetchall()
    assert rows == [("help", "allowed"), ("help", "succeeded"), ("whoami", "allowed"), ("whoami", "succeeded")]


def test_acting_as_a_slack_user_applies_their_role(tmp_path):
    console(tmp_path, "/role grant U0VIEWER viewer\n")
    result = console(tmp_path, "/whoami\n/role list\n", "--as", "U0VIEWER")
    assert "You are @U0VIEWER with the viewer role" in result.stdout
    assert "/role needs the admin role and you have viewer." in result.stdout
    stranger = console(tmp_path, "/help\n", "--as", "U0STRANGER")
    assert "/help needs the viewer role and you have no role yet; ask an admin for one." in stranger.stdout


def test_mistyped_lines_get_one_sentence_and_the_console_goes_on(tmp_path):
    result = console(tmp_path, "help\n/helth\n\n# a comment\n/whoami\n")
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines[0] == "Commands start with a slash, as in Slack; try /help."
    assert lines[1] == "There is no /helth command; did you mean /health?"
    assert lines[2].startswith("You are @console")
    assert "Traceback" not in result.stdout + result.stderr


def test_health_against_real_services_from_a_stack_file(tmp_path, postgres_admin, redis_url):
    (tmp_path / "flowstate.toml").write_text(
        f"""
[[probes]]
name = "postgres"
kind = "postgres"
dsn = "{postgres_admin}"

[[probes]]
name = "redis"
kind = "redis"
url = "{redis_url}"

[[probes]]
name = "nothing-here"
kind = "tcp"
host = "127.0.0.1"
port = 1
timeout = 1
"""
    )
    result = console(tmp_path, "/health\n")
    assert "🔴 *nothing-here*: connection refused" in result.stdout
    assert "🟢 Checks: postgres " in result.stdout and " · redis " in result.stdout
    assert "1 of 3 checks failing" in result.stdout


@pytest.mark.parametrize(
    "env, args, message",
    [
        ({"FLOWSTATE_DEFAULT_ROLE": "boss"}, [], "FLOWSTATE_DEFAULT_ROLE: unknown role 'boss'; roles are viewer, operator, approver, admin"),
        ({"FLOWSTATE_TIMEZONE": "Mars/Olympus"}, [], "FLOWSTATE_TIMEZONE: unknown time zone 'Mars/Olympus'"),
        ({"FLOWSTATE_WORKERS": "0"}, [], "FLOWSTATE_WORKERS: Input should be greater than or equal to 1"),
        ({"FLOWSTATE_ROLE_GROUPS": "S1"}, [], "FLOWSTATE_ROLE_GROUPS: expected GROUP_ID=ROLE pairs"),
        ({"FLOWSTATE_DATABASE_URL": "mysql://x@127.0.0.1/db"}, [], "FLOWSTATE_DATABASE_URL: driver 'mysql' is not supported"),
        ({"FLOWSTATE_DATABASE_URL": "not a url"}, [], "FLOWSTATE_DATABASE_URL: not a database URL; use sqlite:///PATH"),
        ({}, ["--stack", "missing.toml"], "stack file missing.toml does not exist"),
        ({"FLOWSTATE_STACK_FILE": "missing.toml"}, [], "stack file missing.toml does not exist"),
    ],
)
def test_a_bad_setting_is_one_clear_line_and_exit_code_2(tmp_path, env, args, message):
    result = console(tmp_path, "/help\n", *args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(f"flowstate-bot: {message}"), result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    "content, message",
    [
        ("[stack\n", "is not valid TOML"),
        ('[[probes]]\nname = "x"\nkind = "ftp"\n', "probes.0: Input tag 'ftp' found using 'kind' does not match"),
        ('[[probes]]\nname = "x"\nkind = "tcp"\nhost = "127.0.0.1"\nport = 99999\n', "probes.0.tcp.port: Input should be less than or equal to 65535"),
        ('[thresholds]\ncpu_pct = 3\n', "thresholds.cpu_pct: Extra inputs are not permitted"),
    ],
)
def test_a_bad_stack_file_names_the_key(tmp_path, content, message):
    (tmp_path / "flowstate.toml").write_text(content)
    result = console(tmp_path, "/help\n")
    assert result.returncode == 2
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_help_for_one_command_prints_its_options_and_an_example(tmp_path):
    result = console(tmp_path, "/help logs\n")
    assert result.returncode == 0, result.stderr
    assert "--tail N: the last lines to show; a number of lines from 1 to 2000 (default 200)" in result.stdout.replace("`", "")
    assert "Example: /logs backend --since 1h --grep timeout" in result.stdout.replace("`", "")
