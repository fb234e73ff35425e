"""The Slack double answers as Slack does, as far as slack_sdk and Bolt can tell, and the signed
requests from SlackSender are the ones Slack's own verifier and a real Bolt app accept."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from tests.slack_double import SlackDouble
from tests.slack_signing import SlackSender, sign

SECRET = "test-signing-secret"


@pytest.fixture
def double(slack_double):
    return slack_double


@pytest.fixture
def client(double):
    return WebClient(token="xoxb-test", base_url=double.api_url, timeout=5)


# ------------------------------------------------------------------ messages


def test_posted_messages_get_increasing_string_ts_and_can_be_updated(double, client):
    first = client.chat_postMessage(channel="C1", text="restore requested")
    second = client.chat_postMessage(channel="C1", text="second")

    assert first["channel"] == "C1"
    assert isinstance(first["ts"], str) and len(first["ts"].split(".")[1]) == 6
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["text"] == "restore requested"
    assert first["message"]["user"] == double.bot_user_id

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "approved"}}]
    updated = client.chat_update(channel="C1", ts=first["ts"], text="approved by <@U2>", blocks=blocks)

    assert (updated["channel"], updated["ts"], updated["text"]) == ("C1", first["ts"], "approved by <@U2>")
    assert double.message("C1", first["ts"])["blocks"] == blocks
    assert double.wait_for("chat.update")[0].params["ts"] == first["ts"]


def test_updating_an_unknown_or_foreign_message_fails_as_slack_does(double, client):
    with pytest.raises(SlackApiError) as unknown:
        client.chat_update(channel="C1", ts="1700000000.000100", text="x")
    assert unknown.value.response["error"] == "message_not_found"

    human = double.seed_message("C1", "written by a person", "U1")
    with pytest.raises(SlackApiError) as foreign:
        client.chat_update(channel="C1", ts=human, text="x")
    assert foreign.value.response["error"] == "cant_update_message"


def test_history_pages_newest_first_with_a_cursor(double, client):
    seeded = [double.seed_message("C1", f"message {i}", "U1") for i in range(7)]

    pages, cursor = [], None
    while True:
        page = client.conversations_history(channel="C1", limit=3, cursor=cursor)
        pages.append(page)
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break

    assert [len(p["messages"]) for p in pages] == [3, 3, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [m["ts"] for p in pages for m in p["messages"]] == list(reversed(seeded))
    # slack_sdk's own iteration follows the same cursors
    assert sum(len(p["messages"]) for p in client.conversations_history(channel="C1", limit=3)) == 7
    assert [c.params.get("cursor") for c in double.calls_to("conversations.history")][:3] == [
        None,
        pages[0]["response_metadata"]["next_cursor"],
        pages[1]["response_metadata"]["next_cursor"],
    ]


def test_history_honours_oldest_and_latest(double, client):
    ts = [double.seed_message("C1", f"m{i}", "U1", ts=f"1700000000.00000{i}") for i in range(5)]

    window = client.conversations_history(channel="C1", oldest=ts[1], latest=ts[3])
    inclusive = client.conversations_history(channel="C1", oldest=ts[1], latest=ts[3], inclusive=True)

    assert [m["ts"] for m in window["messages"]] == [ts[2]]
    assert [m["ts"] for m in inclusive["messages"]] == [ts[3], ts[2], ts[1]]


def test_thread_replies_stay_out_of_history_and_come_back_from_replies(double, client):
    parent = client.chat_postMessage(channel="C1", text="incident opened")["ts"]
    double.seed_message("C1", "looking", "U1", thread_ts=parent)
    client.chat_postMessage(channel="C1", text="step 1 done", thread_ts=parent)
    client.chat_postMessage(channel="C1", text="step 2 done", thread_ts=parent)

    history = client.conversations_history(channel="C1")["messages"]
    assert [m["text"] for m in history] == ["incident opened"]
    assert history[0]["reply_count"] == 3
    assert set(history[0]["reply_users"]) == {"U1", double.bot_user_id}

    thread = client.conversations_replies(channel="C1", ts=parent)
    assert [m["text"] for m in thread["messages"]] == ["incident opened", "looking", "step 1 done", "step 2 done"]
    assert all(m["thread_ts"] == parent for m in thread["messages"])

    first = client.conversations_replies(channel="C1", ts=parent, limit=2)
    rest = client.conversations_replies(channel="C1", ts=parent, cursor=first["response_metadata"]["next_cursor"])
    assert first["has_more"] and not rest["has_more"]
    assert [m["text"] for m in first["messages"] + rest["messages"]] == [m["text"] for m in thread["messages"]]
    assert rest["response_metadata"]["next_cursor"] == ""


def test_seeded_reactions_permalinks_and_ephemerals(double, client):
    ts = double.seed_message("C1", "db is down", "U1", reactions={"eyes": ["U2"]})

    link = client.chat_getPermalink(channel="C1", message_ts=ts)["permalink"]
    ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="only you")

    assert client.conversations_history(channel="C1")["messages"][0]["reactions"] == [{"name": "eyes", "users": ["U2"], "count": 1}]
    assert link == f"https://example.slack.com/archives/C1/p{ts.replace('.', '')}"
    assert isinstance(ephemeral["message_ts"], str)
    assert double.messages("C1")[-1]["ts"] == ts  # ephemerals are not stored in the channel


# ------------------------------------------------------------------ people


def test_users_and_groups(double, client):
    double.add_user("U1", "alice", real_name="Alice Liddell", tz="Europe/Berlin", email="alice@example.test")
    double.set_usergroup("S1", ["U1", "U2"])

    user = client.users_info(user="U1")["user"]
    assert (user["name"], user["real_name"], user["tz"]) == ("alice", "Alice Liddell", "Europe/Berlin")
    assert user["profile"]["display_name"] == "alice" and user["profile"]["email"] == "alice@example.test"
    assert client.usergroups_users_list(usergroup="S1")["users"] == ["U1", "U2"]
    assert client.auth_test()["user_id"] == double.bot_user_id

    for call, error in [
        (lambda: client.users_info(user="U404"), "user_not_found"),
        (lambda: client.usergroups_users_list(usergroup="S404"), "no_such_subteam"),
    ]:
        with pytest.raises(SlackApiError) as failed:
            call()
        assert failed.value.response["error"] == error


# ------------------------------------------------------------------ errors and rate limits


def test_injected_errors_raise_slack_api_error_once(double, client):
    double.fail_next("chat.postMessage", "channel_not_found")

    with pytest.raises(SlackApiError) as failed:
        client.chat_postMessage(channel="C404", text="hello")
    assert failed.value.response.status_code == 200
    assert failed.value.response["error"] == "channel_not_found"
    assert client.chat_postMessage(channel="C1", text="hello")["ok"]


def test_authentication_and_unknown_methods(double):
    with pytest.raises(SlackApiError) as no_token:
        WebClient(base_url=double.api_url).chat_postMessage(channel="C1", text="x")
    assert no_token.value.response["error"] == "not_authed"

    with pytest.raises(SlackApiError) as unknown:
        WebClient(token="xoxb-test", base_url=double.api_url).api_call("chat.teleport")
    assert unknown.value.response["error"] == "unknown_method"

    with SlackDouble(tokens={"xoxb-known"}) as strict:
        assert WebClient(token="xoxb-known", base_url=strict.api_url).auth_test()["ok"]
        with pytest.raises(SlackApiError) as wrong:
            WebClient(token="xoxb-other", base_url=strict.api_url).auth_test()
        assert wrong.value.response["error"] == "invalid_auth"


def test_a_429_is_raised_with_its_retry_after_header(double, client):
    double.ratelimit_next("chat.postMessage", retry_after=7)

    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C1", text="hello")

    response = limited.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response["error"] == "ratelimited"


def test_the_rate_limit_retry_handler_waits_and_succeeds(double):
    double.ratelimit_next("chat.postMessage", retry_after=0)
    client = WebClient(
        token="xoxb-test",
        base_url=double.api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )

    assert client.chat_postMessage(channel="C1", text="hello")["ok"]
    assert len(double.calls_to("chat.postMessage")) == 2

    double.ratelimit_next("chat.postMessage", retry_after=0, times=2)
    with pytest.raises(SlackApiError) as exhausted:
        client.chat_postMessage(channel="C1", text="again")
    assert exhausted.value.response.status_code == 429


def test_a_delayed_call_is_recorded_on_arrival_and_answered_later(double, client):
    double.delay_next("chat.postMessage", 0.3)
    answers = []
    caller = threading.Thread(target=lambda: answers.append(client.chat_postMessage(channel="C1", text="slow")))
    caller.start()

    [call] = double.wait_for("chat.postMessage")
    assert call.params["text"] == "slow"
    caller.join(timeout=5)
    assert answers and answers[0]["ok"]


def test_wait_for_matches_a_predicate_and_explains_a_timeout(double, client):
    client.chat_postMessage(channel="C1", text="first")
    later = threading.Timer(0.2, lambda: client.chat_postMessage(channel="C2", text="second"))
    later.start()

    [call] = double.wait_for("chat.postMessage", predicate=lambda c: c.params["channel"] == "C2")
    assert call.params["text"] == "second"
    with pytest.raises(AssertionError, match=r"(?s)2 call\(s\) to chat.update.*got 0.*chat.postMessage"):
        double.wait_for("chat.update", count=2, timeout=0.2)


def test_reset_forgets_calls_world_and_faults(double, client):
    client.chat_postMessage(channel="C1", text="x")
    double.fail_next("chat.postMessage")
    double.add_user("U1", "alice")

    double.reset()

    assert double.calls == [] and double.messages("C1") == []
    assert client.chat_postMessage(channel="C1", text="y")["ok"]
    with pytest.raises(SlackApiError):
        client.users_info(user="U1")


# ------------------------------------------------------------------ files


def test_files_upload_v2_goes_through_all_three_steps(double, client):
    result = client.files_upload_v2(
        channel="C1", content="## Post-mortem\n", filename="postmortem.md", title="Post-mortem", initial_comment="Done"
    )

    [upload] = double.uploads()
    assert result["file"]["id"] == upload.file_id
    assert (upload.content, upload.title, upload.channels) == (b"## Post-mortem\n", "Post-mortem", ["C1"])
    assert [c.method for c in double.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    [shared] = client.conversations_history(channel="C1")["messages"]
    assert shared["text"] == "Done" and shared["files"][0]["id"] == upload.file_id


# ------------------------------------------------------------------ response_url


def test_a_response_url_takes_five_posts_then_refuses(double):
    webhook = WebhookClient(double.response_url("cmd-1"), timeout=5)

    statuses = [webhook.send(text=f"update {i}").status_code for i in range(6)]

    assert statuses == [200] * 5 + [404]
    assert [r["text"] for r in double.wait_for_response("cmd-1", count=5)] == [f"update {i}" for i in range(5)]
    assert double.rejected_responses("cmd-1") == [{"text": "update 5"}]
    with pytest.raises(AssertionError, match="response_url 'other'"):
        double.wait_for_response("other", timeout=0.1)


def test_an_expired_response_url_refuses(double):
    double.expire_response_url("old")
    response = WebhookClient(double.response_url("old")).send(text="late")
    assert (response.status_code, response.body) == (404, "expired_url")


# ------------------------------------------------------------------ signing


def test_sign_matches_slack_sdks_verifier():
    verifier = SignatureVerifier(SECRET)
    body = "token=x&team_id=T0001&command=%2Fstatus&text="
    now = int(time.time())

    assert verifier.is_valid_request(body, sign(SECRET, body, now))
    assert verifier.is_valid_request(body.encode(), sign(SECRET, body.encode(), str(now)))
    assert not verifier.is_valid_request(body + "&text=rm", sign(SECRET, body, now))
    assert not verifier.is_valid_request(body, sign("another-secret", body, now))
    assert not verifier.is_valid_request(body, sign(SECRET, body, now - 301))


def test_the_sender_refuses_anything_but_loopback():
    with pytest.raises(ValueError):
        SlackSender("http://10.0.0.1:3000", SECRET)
    SlackSender("http://localhost:3000", SECRET)


class _BoltOnLoopback:
    """A real Bolt app behind a minimal HTTP server on 127.0.0.1 (Bolt's dev server binds 0.0.0.0)."""

    def __init__(self, app: App):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                response = app.dispatch(BoltRequest(body=body, headers=dict(self.headers.items())))
                payload = (response.body or "").encode()
                self.send_response(response.status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bolt(double):
    app = App(signing_secret=SECRET, client=WebClient(token="xoxb-test", base_url=double.api_url))
    server = _BoltOnLoopback(app)
    yield app, SlackSender(server.url, SECRET)
    server.close()


def test_bolt_accepts_a_signed_slash_command_and_answers_through_the_double(double, bolt):
    app, sender = bolt
    seen = {}

    @app.command("/status")
    def status(ack, command, respond, say):
        ack()
        seen.update(command)
        respond("all green")
        say("status checked")

    status_code, _ = sender.slash("/status", "api", "U1", response_url=double.response_url("status"))

    assert status_code == 200
    assert double.wait_for_response("status")[0]["text"] == "all green"
    assert double.wait_for("chat.postMessage")[0].params["channel"] == "C0INCIDENT"
    assert {k: seen[k] for k in ("command", "text", "user_id", "channel_id", "team_id")} == {
        "command": "/status",
        "text": "api",
        "user_id": "U1",
        "channel_id": "C0INCIDENT",
        "team_id": "T0001",
    }
    other_fields = {"team_domain", "channel_name", "user_name", "api_app_id", "is_enterprise_install", "trigger_id"}
    assert other_fields <= set(seen)


def test_bolt_rejects_unsigned_forged_and_stale_requests(double, bolt):
    app, sender = bolt
    app.command("/status")(lambda ack: ack())
    url = double.response_url("r")

    assert sender.slash("/status", "", "U1", response_url=url).status == 200
    assert sender.slash("/status", "", "U1", response_url=url, unsigned=True).status == 401
    assert sender.slash("/status", "", "U1", response_url=url, sign_with="not-the-secret").status == 401
    assert sender.slash("/status", "", "U1", response_url=url, timestamp=int(time.time()) - 600).status == 401
    assert sender.raw("command=%2Fstatus", {"Content-Type": "application/x-www-form-urlencoded"}).status == 401


def test_bolt_routes_a_button_click_and_an_event(double, bolt, client):
    app, sender = bolt
    clicks, events = [], []
    posted = client.chat_postMessage(channel="C1", text="approve restore?")

    @app.action("approve")
    def approve(ack, body, action, respond):
        ack()
        clicks.append((action["value"], body["user"]["id"], body["container"]["message_ts"], body["message"]["text"]))
        respond(replace_original=True, text="approved")

    @app.event("reaction_added")
    def reaction(event):
        events.append(event["reaction"])

    reply = sender.click(
        "approve",
        "req-7",
        "U2",
        "C1",
        posted["ts"],
        double.response_url("click"),
        message=double.message("C1", posted["ts"]),
    )
    item = {"type": "message", "channel": "C1", "ts": posted["ts"]}
    event_reply = sender.event({"type": "reaction_added", "user": "U2", "reaction": "pushpin", "item": item})

    assert (reply.status, event_reply.status) == (200, 200)
    assert double.wait_for_response("click")[0] == {"replace_original": True, "text": "approved"}
    assert clicks == [("req-7", "U2", posted["ts"], "approve restore?")]
    deadline = time.monotonic() + 5
    while not events and time.monotonic() < deadline:
        time.sleep(0.02)
    assert events == ["pushpin"]
