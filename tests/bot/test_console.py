"""The console, driven through stdin as `printf '/help\n' | flowstate-bot console` drives it."""

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import bot_env

pytestmark = pytest.mark.process  # every test here starts bot processes of its own

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


def _deploy_checkout(tmp_path) -> Path:
    """A Git checkout whose deploy script prints a few lines over a second, and a stack file with only [deploy]."""
    repo = tmp_path / "app"
    (repo / "scripts").mkdir(parents=True)
    script = repo / "scripts" / "deploy-production.sh"
    script.write_text("#!/bin/sh\necho \"deploying $(git rev-parse --short HEAD)\"\nfor i in 1 2 3; do echo \"step $i\"; sleep 0.3; done\n")
    script.chmod(0o755)
    git = ["git", "-C", str(repo), "-c", "user.name=Dana", "-c", "user.email=dana@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "First release"], check=True)
    stack = tmp_path / "flowstate.toml"
    stack.write_text(f'[stack]\napp_services = []\n\n[deploy]\nworkdir = "{repo}"\n')
    return stack


def test_the_console_prints_what_a_person_reads_once(tmp_path):
    stack = _deploy_checkout(tmp_path)
    result = console(tmp_path, '/releases\n/restart --break-glass "site down, approvers asleep"\n/incidents\n', "--stack", str(stack))
    out = result.stdout
    assert result.returncode == 0, result.stderr
    # Break-glass is said here too, as loudly as in Slack's channel.
    assert out.count("🚨 *Break-glass*: @console runs `/restart` without a second person's approval. "
                     "Reason: site down, approvers asleep") == 1, out
    # The script's lines and the result lines are printed as they come, and not again in the reply.
    for line in ("deploying ", "step 1", "step 2", "step 3", "exited with code 0 after"):
        assert out.count(line) == 1, (line, out)
    assert "```" not in out
    # The bot's log goes to a file, not between a command's lines.
    assert " INFO " not in out and " INFO " not in result.stderr
    assert "recorded the checked-out commit" in (tmp_path / ".flowstate-bot" / "console.log").read_text()
    assert oct((tmp_path / ".flowstate-bot" / "console.log").stat().st_mode & 0o777) == "0o600"


def test_a_break_glass_reason_is_printed_redacted_in_the_console(tmp_path):
    stack = _deploy_checkout(tmp_path)
    token = "xoxb-1234567890-abcdefghijklmnop"
    out = console(tmp_path, f'/restart --break-glass "token {token} leaked, rotating"\n', "--stack", str(stack)).stdout
    assert "🚨 *Break-glass*" in out, out
    assert token not in out


def test_slack_markup_reads_as_plain_text_in_the_console(tmp_path):
    out = console(tmp_path, "/incident start Checkout is down\n/incidents\n").stdout
    assert "by @console" in out and "· #console ·" in out, out
    assert "<#" not in out and "<@" not in out and "<!" not in out


def test_slack_markup_with_labels_reads_as_slack_shows_it():
    from bot.frame.blocks import to_text
    from bot.frame.registry import Reply

    text = to_text(Reply("<!here> <@U0OP> in <#C0OPS|ops-war-room> asked <!subteam^S0ONCALL|@oncall>: <https://runbooks.example.com/db|the runbook>"))
    assert text == "@here @U0OP in #ops-war-room asked @oncall: the runbook (https://runbooks.example.com/db)"


def test_a_restores_steps_are_printed_as_they_come_and_not_again_in_its_reply():
    import io

    from bot.adapters.console import Screen
    from bot.frame.registry import Reply

    steps = ["1️⃣ Verified backup #3 (0.4 s).", "2️⃣ Safety backup #4 taken (1.2 s).", "3️⃣ Stopped backend, python-worker (2.0 s)."]
    out = io.StringIO()
    screen = Screen(out)
    screen.progress("1️⃣ Verifying backup #3…")
    for step in steps:
        screen.progress(step)
    screen.reply(Reply("\n".join(["✅ Restored backup #3 into flowstate_ai", *steps, "The safety backup is #4."])))
    printed = out.getvalue()
    assert all(printed.count(step) == 1 for step in steps), printed
    assert printed.endswith("✅ Restored backup #3 into flowstate_ai\nThe safety backup is #4.\n"), printed
    # The next command starts afresh: the same line in its reply is printed.
    screen.reply(Reply(steps[0]))
    assert out.getvalue().count(steps[0]) == 2


def test_code_blocks_are_indented_lines_in_the_console_without_their_fences():
    import io

    from bot.adapters.console import Screen
    from bot.frame.registry import Reply

    out = io.StringIO()
    Screen(out).reply(Reply("Slowest statements:\n• 1204.5 ms × 1 call: ```SELECT pg_sleep($1)\nFROM t```\nMasked: cards."))
    assert out.getvalue() == "Slowest statements:\n• 1204.5 ms × 1 call:\n    SELECT pg_sleep($1)\n    FROM t\nMasked: cards.\n"


def test_help_for_one_command_prints_its_options_and_an_example(tmp_path):
    result = console(tmp_path, "/help logs\n")
    assert result.returncode == 0, result.stderr
    assert "--tail N: the last lines to show; a number of lines from 1 to 2000 (default 200)" in result.stdout.replace("`", "")
    assert "Example: /logs backend --since 1h --grep timeout" in result.stdout.replace("`", "")
