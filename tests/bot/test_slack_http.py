"""The HTTP door, attacked on the wire: huge bodies, forged and malformed requests, replays."""

import json
import logging
import socket
import time
from urllib.parse import urlencode

from bot.frame.roles import Role
from tests.conftest import SIGNING_SECRET
from tests.slack_signing import sign, slash_fields


def _raw_post(port: int, head: bytes, body: bytes = b"") -> bytes:
    """An HTTP request written by hand: a client may declare any Content-Length and send anything."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head + body)
        answer = b""
        while chunk := conn.recv(65536):  # until the server closes the connection, as it does after a refusal
            answer += chunk
        return answer


def _port(sender) -> int:
    return sender.port


def _signed_slash(text: str, user: str, response_url: str, timestamp: int | None = None) -> tuple[bytes, dict]:
    fields = slash_fields(
        "/role", text, user, "C0OPS", response_url=response_url, token="t", team_id="T0001", team_domain="example", api_app_id="A0APP"
    )
    body = urlencode(fields)
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SIGNING_SECRET, body, timestamp or int(time.time()))}
    return body.encode(), headers


def test_a_huge_declared_body_is_refused_before_a_byte_of_it_is_read(slack_bot, caplog):
    sender, runtime = slack_bot()
    head = (
        b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 268435456\r\n\r\n"
    )
    with caplog.at_level(logging.WARNING):
        answer = _raw_post(_port(sender), head, b"a=b")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
    refusals = [r.getMessage() for r in caplog.records if "refused a request" in r.getMessage()]
    assert len(refusals) == 1 and "Request Entity Too Large" in refusals[0], "logged once, one line"


def test_bodies_over_the_cap_are_refused_signed_or_not(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    for signature in (b"", b"X-Slack-Request-Timestamp: 1\r\nX-Slack-Signature: v0=00\r\n"):
        head = b"POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + signature + b"Content-Length: 2097152\r\n\r\n"
        assert _raw_post(_port(sender), head, b"x" * 1024).startswith(b"HTTP/1.1 413")
    just_over = "x" * 65536
    assert sender.slash("/whoami", just_over, "U0ONCALL", response_url=slack_double.response_url("big")).status == 413
    time.sleep(0.3)
    assert slack_double.responses("big") == []


def test_an_unsigned_body_never_reaches_the_log_and_cannot_forge_a_log_line(slack_bot, caplog):
    sender, runtime = slack_bot()
    forged = "x\n2026-11-29 03:00:00,000 INFO bot.adapters.slack.listeners: /role grant U0EVIL admin succeeded\nSECRET-BODY-TEXT"
    with caplog.at_level(logging.DEBUG):
        assert sender.raw(forged, {"Content-Type": "application/x-www-form-urlencoded"}).status == 401
        assert sender.raw(forged, {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=00"}).status == 401
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "SECRET-BODY-TEXT" not in logged and "U0EVIL" not in logged
    assert logged.count("missing, wrong or stale Slack signature") == 2


def test_malformed_requests_get_401_unsigned_and_400_signed_and_never_a_traceback(slack_bot, caplog):
    sender, runtime = slack_bot()
    nested = "[" * 60_000  # deep enough to break a recursive parser, under the 64 KB cap
    bodies = [
        (b"\xff\xfe\xfa not utf-8", "application/x-www-form-urlencoded"),
        (b"payload=%7Bnot json", "application/x-www-form-urlencoded"),
        (b"payload=" + nested.encode(), "application/x-www-form-urlencoded"),
        (nested.encode(), "application/json"),
        (b"{\"type\": ", "application/json"),
    ]
    with caplog.at_level(logging.DEBUG):
        for body, content_type in bodies:
            assert sender.raw(body, {"Content-Type": content_type}).status == 401
            signed = {"Content-Type": content_type, **sign(SIGNING_SECRET, body, int(time.time()))}
            assert sender.raw(body, signed).status == 400, body[:30]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no traceback in the log"


def test_a_captured_grant_replayed_after_the_revoke_is_refused(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ADMIN"])
    body, headers = _signed_slash("grant <@U0EVE|eve> approver", "U0ADMIN", slack_double.response_url("grant"))
    assert sender.raw(body, headers).status == 200
    slack_double.wait_for_response("grant", timeout=20)
    assert runtime.authz.role_of("U0EVE") is Role.approver
    sender.slash("/role", "revoke U0EVE", "U0ADMIN", "C0OPS", response_url=slack_double.response_url("revoke"))
    slack_double.wait_for_response("revoke", timeout=20)
    assert runtime.authz.role_of("U0EVE") is None
    assert sender.raw(body, headers).status == 401  # the same bytes, within Slack's 5 minutes
    time.sleep(1.0)
    assert runtime.authz.role_of("U0EVE") is None
    assert len(slack_double.responses("grant")) == 1


def test_a_replayed_click_is_refused(slack_bot, slack_double):
    sender, runtime = slack_bot(admins=["U0ADMIN"])
    payload = {
        "type": "block_actions", "user": {"id": "U0ADMIN"}, "trigger_id": "1.2.abc",
        "container": {"type": "message", "message_ts": "1.0", "channel_id": "C0OPS"}, "channel": {"id": "C0OPS"},
        "response_url": slack_double.response_url("click"),
        "actions": [{"action_id": "approval_deny", "block_id": "b", "value": "7", "type": "button", "action_ts": "1.1"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SIGNING_SECRET, body, int(time.time()))}
    assert sender.raw(body, headers).status == 200
    assert sender.raw(body, headers).status == 401
    assert slack_double.wait_for_response("click", timeout=20)[0]["text"] == "There is no request #7; /approvals lists the pending ones."
    time.sleep(0.5)
    assert len(slack_double.responses("click")) == 1


def test_a_request_replayed_to_another_replica_is_refused(slack_bot, slack_double, postgres_url):
    first, _ = slack_bot(admins=["U0ADMIN"], database_url=postgres_url)
    second, runtime = slack_bot(admins=["U0ADMIN"], database_url=postgres_url)
    body, headers = _signed_slash("grant <@U0EVE|eve> viewer", "U0ADMIN", slack_double.response_url("grant"))
    assert first.raw(body, headers).status == 200
    assert second.raw(body, headers).status == 401
    slack_double.wait_for_response("grant", timeout=20)
    time.sleep(0.5)
    assert len(slack_double.responses("grant")) == 1


def test_a_command_slack_delivers_twice_is_acked_twice_and_run_once(slack_bot, slack_double):
    """Slack retries a command it got no ack for: a new timestamp and signature, the same trigger_id. Both
    deliveries are first sightings (200), and the second finds the first one's job: one run, one answer."""
    sender, runtime = slack_bot(admins=["U0ADMIN"])
    fields = slash_fields(
        "/role", "grant <@U0EVE|eve> viewer", "U0ADMIN", "C0OPS", response_url=slack_double.response_url("twice"),
        token="t", team_id="T0001", team_domain="example", api_app_id="A0APP", trigger_id="13345224609.738474920.8088930838d88f008e0",
    )
    body = urlencode(fields)
    now = int(time.time())
    for timestamp in (now - 1, now):
        headers = {"Content-Type": "application/x-www-form-urlencoded", **sign(SIGNING_SECRET, body, timestamp)}
        assert sender.raw(body, headers).status == 200
    slack_double.wait_for_response("twice", timeout=20)
    time.sleep(0.5)
    assert len(slack_double.responses("twice")) == 1
    assert runtime.authz.role_of("U0EVE") is Role.viewer
    with runtime.store.engine.connect() as connection:
        jobs = connection.exec_driver_sql("SELECT count(*) FROM bot_jobs WHERE command = 'role'").scalar_one()
        seen = connection.exec_driver_sql("SELECT count(*) FROM seen_requests").scalar_one()
    assert (jobs, seen) == (1, 2)


def test_a_command_whose_text_says_payload_is_answered(slack_bot, slack_double):
    """Bolt takes any form body containing "payload" for a click; the guard keeps such a command a command."""
    sender, runtime = slack_bot(admins=["U0ONCALL"])
    assert sender.slash("/help", "payload", "U0ONCALL", response_url=slack_double.response_url("payload")).status == 200
    (reply,) = slack_double.wait_for_response("payload", timeout=20)
    assert reply["text"] == "There is no /payload command; /help lists what you can run."
