"""`flowstate-bot run` in Socket Mode, end to end: slack_sdk's built-in client against a loopback
Socket Mode double, envelopes acked on the socket, replies posted to the command's response_url."""

from __future__ import annotations

import subprocess

import pytest

from tests.bot.test_cli import BOT
from tests.conftest import bot_env
from tests.replica import RunningBot
from tests.socket_mode_double import SocketModeDouble

pytestmark = pytest.mark.process  # every test here starts bot processes of its own

APP_TOKEN = "xapp-1-A0APP-1-socket-mode-test"
WAIT = 20  # seconds; generous, never a timing assertion


@pytest.fixture
def socket_mode(slack_double):
    with SocketModeDouble(slack_double) as double:
        yield double


@pytest.fixture
def socket_bot(tmp_path, slack_double, socket_mode):
    """The bot in Socket Mode, connected to the double (waits for the WebSocket connection)."""
    env = bot_env(
        SLACK_BOT_TOKEN="xoxb-socket-mode-test",
        SLACK_APP_TOKEN=APP_TOKEN,
        FLOWSTATE_SLACK_API_URL=slack_double.api_url,
        FLOWSTATE_ADMINS="U0ONCALL",
        FLOWSTATE_WORKERS="1",
    )
    bot = RunningBot(subprocess.Popen([BOT, "run"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True))
    try:
        try:
            socket_mode.wait_for_connection(timeout=WAIT)
        except AssertionError as error:
            code = bot.stop()
            pytest.fail(f"{error}\nthe bot (exit code {code}) said:\n{bot.stderr}", pytrace=False)
        yield bot
    finally:
        if bot.process.poll() is None:  # a test that failed before stopping it
            bot.process.kill()
            bot.process.wait(timeout=10)


def _assert_stops_cleanly(bot: RunningBot) -> None:
    code = bot.stop()
    assert code == 0, f"exit code {code}; stderr:\n{bot.stderr}"
    assert "Traceback" not in bot.stderr, bot.stderr


def test_socket_mode_acks_the_envelope_and_answers_whoami_by_response_url(socket_bot, socket_mode, slack_double):
    (opened,) = slack_double.calls_to("apps.connections.open")
    assert opened.headers["authorization"] == f"Bearer {APP_TOKEN}", "the socket URL is asked for with the app-level token"

    envelope_id = socket_mode.send_slash("/whoami", "", "U0ONCALL", response_url=slack_double.response_url("me"))
    ack, _elapsed = socket_mode.wait_for_ack(envelope_id, timeout=WAIT)
    assert ack == {"envelope_id": envelope_id}, "acked on the socket with no payload; the answer goes by response_url"

    (reply,) = slack_double.wait_for_response("me", timeout=WAIT)
    assert reply["text"].startswith("You are <@U0ONCALL> with the admin role")
    assert reply["response_type"] == "ephemeral"
    assert socket_mode.connections == 1

    _assert_stops_cleanly(socket_bot)


def test_socket_mode_denies_audit_to_a_user_without_a_role(socket_bot, socket_mode, slack_double):
    envelope_id = socket_mode.send_slash("/audit", "", "U0STRANGER", response_url=slack_double.response_url("denied"))
    ack, _elapsed = socket_mode.wait_for_ack(envelope_id, timeout=WAIT)
    assert ack == {"envelope_id": envelope_id}

    (reply,) = slack_double.wait_for_response("denied", timeout=WAIT)
    assert reply["response_type"] == "ephemeral"
    assert reply["text"] == "/audit needs the admin role and you have no role yet; ask an admin for one."

    _assert_stops_cleanly(socket_bot)
