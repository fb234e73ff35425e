"""The flowstate-bot entry point as an operator starts it: run (HTTP mode), check, migrate, manifest."""

import re
import signal
import subprocess
import sys
import time

import pytest
from pathlib import Path

from tests.conftest import SIGNING_SECRET, bot_env
from tests.slack_signing import SlackSender

pytestmark = pytest.mark.process  # every test here starts bot processes of its own

BOT = str(Path(sys.executable).with_name("flowstate-bot"))


def _serving_port(bot: subprocess.Popen) -> int:
    """Reads the bot's log up to the line that says where it listens."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = bot.stderr.readline()
        assert line, "the bot stopped before it served"
        if match := re.search(r"serving Slack requests on http://127\.0\.0\.1:(\d+)/slack/events", line):
            return int(match.group(1))
    raise AssertionError("the bot did not say where it listens")


def test_run_in_http_mode_answers_signed_commands_and_stops_cleanly_on_sigterm(tmp_path, slack_double):
    env = bot_env(
        SLACK_BOT_TOKEN="xoxb-cli-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        FLOWSTATE_SLACK_API_URL=slack_double.api_url,
        FLOWSTATE_ADMINS="U0ONCALL",
        FLOWSTATE_WORKERS="1",
    )
    bot = subprocess.Popen([BOT, "run", "--http", "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        sender = SlackSender(f"http://127.0.0.1:{_serving_port(bot)}", SIGNING_SECRET)
        assert sender.slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("me")).status == 200
        (reply,) = slack_double.wait_for_response("me", timeout=15)
        assert reply["text"].startswith("You are <@U0ONCALL> with the admin role")
        assert sender.slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("x"), sign_with="bad").status == 401
    finally:
        bot.send_signal(signal.SIGTERM)
        bot.wait(timeout=30)
    assert bot.returncode == 0
    assert "Traceback" not in bot.stderr.read()


def test_run_without_credentials_is_one_clear_line(tmp_path):
    result = subprocess.run([BOT, "run", "--http"], cwd=tmp_path, env=bot_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "flowstate-bot: SLACK_BOT_TOKEN: not set; the bot cannot talk to Slack without it"
    result = subprocess.run(
        [BOT, "run", "--http"], cwd=tmp_path, env=bot_env(SLACK_BOT_TOKEN="xoxb-1"), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "SLACK_SIGNING_SECRET: not set" in result.stderr and "Traceback" not in result.stderr


def test_check_reports_each_dependency_and_fails_when_one_is_down(tmp_path, redis_url):
    (tmp_path / "flowstate.toml").write_text(
        f'[[probes]]\nname = "redis"\nkind = "redis"\nurl = "{redis_url}"\n\n'
        '[[probes]]\nname = "gone"\nkind = "tcp"\nhost = "127.0.0.1"\nport = 1\n'
    )
    result = subprocess.run([BOT, "check"], cwd=tmp_path, env=bot_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "ok   database: sqlite:///.flowstate-bot/bot.db" in result.stdout
    assert re.search(r"^ok   probe redis: PONG", result.stdout, re.M)
    assert "FAIL probe gone: connection refused" in result.stdout


def test_check_never_prints_the_database_password(tmp_path):
    env = bot_env(FLOWSTATE_DATABASE_URL="postgresql://flowstate:s3cret-pw@127.0.0.1:1/app")
    result = subprocess.run([BOT, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL database: postgresql+psycopg://flowstate:***@127.0.0.1:1/app" in result.stdout
    assert "s3cret-pw" not in result.stdout + result.stderr


def test_migrate_brings_a_postgres_database_to_the_latest_schema(tmp_path, postgres_url):
    env = bot_env(FLOWSTATE_DATABASE_URL=postgres_url)
    result = subprocess.run([BOT, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The bot's database is at the latest schema."


def test_socket_mode_refused_by_slack_is_one_clear_line(tmp_path, slack_double):
    env = bot_env(SLACK_BOT_TOKEN="xoxb-1", SLACK_APP_TOKEN="xapp-1-A1-secret", FLOWSTATE_SLACK_API_URL=slack_double.api_url)
    env["FLOWSTATE_WORKERS"] = "1"
    slack_double.fail_next("apps.connections.open", error="invalid_auth")
    result = subprocess.run([BOT, "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "flowstate-bot: SLACK_APP_TOKEN: Slack refused the Socket Mode connection (invalid_auth)"
    )
    assert "Traceback" not in result.stderr and "xapp-1-A1-secret" not in result.stderr


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _is_worker(pid: int) -> bool:
    try:
        return "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_runner_processes_exit_when_the_bot_is_killed(tmp_path, slack_double):
    env = bot_env(SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s", FLOWSTATE_SLACK_API_URL=slack_double.api_url)
    env["FLOWSTATE_WORKER_PROCESSES"] = "2"
    bot = subprocess.Popen([BOT, "run", "--http", "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while "serving Slack requests" not in bot.stderr.readline():
        assert time.monotonic() < deadline and bot.poll() is None
    workers = [pid for pid in _children(bot.pid) if _is_worker(pid)]
    assert len(workers) == 2
    niceness = [int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16]) for pid in workers]
    assert niceness == [19, 19], "command work yields the cores to the process that acks Slack"
    bot.kill()
    bot.wait(timeout=10)
    deadline = time.monotonic() + 20
    while any(_is_worker(pid) for pid in workers):
        assert time.monotonic() < deadline, "runner processes outlived the killed bot"
        time.sleep(0.2)


def test_check_names_a_malformed_dsn_and_never_prints_a_password(tmp_path):
    (tmp_path / "flowstate.toml").write_text(
        '[[probes]]\nname = "app db"\nkind = "postgres"\ndsn = "postgresql://flowstate:hunter 2@127.0.0.1:5432/app"\n'
    )
    env = bot_env(FLOWSTATE_DATABASE_URL="postgresql://flowstate:s3cret-pw@127.0.0.1:1/app")
    result = subprocess.run([BOT, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL probe app db: the DSN of probe app db is malformed; write a space in it as %20\n" in result.stdout
    assert "FAIL database: postgresql+psycopg://flowstate:***@127.0.0.1:1/app: connection refused\n" in result.stdout
    assert "hunter" not in result.stdout + result.stderr and "s3cret-pw" not in result.stdout + result.stderr


def test_a_database_url_without_a_scheme_is_refused_without_echoing_it(tmp_path):
    env = bot_env(FLOWSTATE_DATABASE_URL="flowstate:s3cret-pw@127.0.0.1:5432/app")
    result = subprocess.run([BOT, "check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "flowstate-bot: FLOWSTATE_DATABASE_URL: not a database URL;"
        " use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
    )


def test_debug_logs_do_not_carry_response_urls(tmp_path, slack_double):
    """A response_url lets anyone post as the bot for 30 minutes: it must not sit in a log file."""
    env = bot_env(
        SLACK_BOT_TOKEN="xoxb-cli-test",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        FLOWSTATE_SLACK_API_URL=slack_double.api_url,
        FLOWSTATE_ADMINS="U0ONCALL",
        FLOWSTATE_LOG_LEVEL="DEBUG",
    )
    bot = subprocess.Popen([BOT, "run", "--http", "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        sender = SlackSender(f"http://127.0.0.1:{_serving_port(bot)}", SIGNING_SECRET)
        sender.slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("capability-1234"))
        slack_double.wait_for_response("capability-1234", timeout=20)
        time.sleep(0.5)
    finally:
        bot.send_signal(signal.SIGTERM)
        _out, log = bot.communicate(timeout=30)
    assert " DEBUG " in log, "DEBUG is on"
    assert "capability-1234" not in log


def _startup_error(tmp_path, *argv: str, **env: str) -> str:
    """What starting the bot says when something it was given is wrong: one line on stderr and exit code 2."""
    result = subprocess.run([BOT, *argv], cwd=tmp_path, env=bot_env(**env), capture_output=True, text=True, timeout=60)
    assert (result.returncode, "Traceback" in result.stderr) == (2, False), result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    return line


def test_a_stack_file_that_sets_an_internal_key_is_one_clear_line(tmp_path):
    (tmp_path / "flowstate.toml").write_text('source = "evil"\n')
    assert _startup_error(tmp_path, "check") == "flowstate-bot: stack file flowstate.toml: source: Extra inputs are not permitted"


def test_a_listen_host_that_is_not_an_address_is_one_clear_line_before_any_lookup(tmp_path):
    # Refused before the name is looked up: resolving it would ask the machine's DNS server, off loopback.
    said = _startup_error(tmp_path, "run", "--http", "--host", "no.such.host.invalid", SLACK_BOT_TOKEN="xoxb-1", SLACK_SIGNING_SECRET="s")
    assert said == "flowstate-bot: --host: 'no.such.host.invalid' is not an IP address; give one of this machine's, such as 127.0.0.1"


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("FLOWSTATE_DATABASE_URL", "postgresql:///", "FLOWSTATE_DATABASE_URL: it names no database; use postgresql://USER@HOST:PORT/DATABASE"),
        ("FLOWSTATE_DATABASE_URL", "postgresql://flowstate:pw@127.0.0.1:5432", "FLOWSTATE_DATABASE_URL: it names no database; use postgresql://USER@HOST:PORT/DATABASE"),
        ("FLOWSTATE_DATABASE_URL", "sqlite://", "FLOWSTATE_DATABASE_URL: it names no database; use sqlite:///PATH"),
        ("FLOWSTATE_ROLE_GROUP_CACHE_SECONDS", "-5", "FLOWSTATE_ROLE_GROUP_CACHE_SECONDS: Input should be greater than or equal to 0"),
        ("FLOWSTATE_ROLE_GROUP_CACHE_SECONDS", "nan", "FLOWSTATE_ROLE_GROUP_CACHE_SECONDS: Input should be a finite number"),
    ],
)
def test_a_setting_that_would_be_taken_silently_is_one_clear_line(tmp_path, key, value, said):
    assert _startup_error(tmp_path, "migrate", **{key: value}) == f"flowstate-bot: {said}"
    assert not (tmp_path / ".flowstate-bot").exists(), "nothing was created"
