"""A stand-in for Slack's Web API and response_url endpoints, served on 127.0.0.1.

Point slack_sdk at it with ``WebClient(token="xoxb-...", base_url=double.api_url)`` and put
``double.response_url(name)`` into slash-command and interactive payloads. It records every
call, keeps a small world (channels with messages and threads, users, user groups, uploaded
files) so that what the bot posts shows up in history, and answers with Slack's documented
response shapes, errors, rate limits and pagination.

Choices where Slack is vague or where a stand-in must pick one behaviour:
- Every channel id exists: history of an unknown channel is empty, not ``channel_not_found``
  (inject that with ``fail_next``).
- A response_url accepts 5 posts. Slack does not document the answer to the 6th; the double
  answers HTTP 404 with the text body ``used_url`` (``expired_url`` after
  ``expire_response_url``), which is what slack_sdk's WebhookClient reports as a non-200.
- A reply posted with a ``thread_ts`` whose parent is unknown is still stored as a reply.
- Message ``ts`` values are real time in microseconds, strictly increasing across everything
  the double stores, so ordering by ts is ordering by arrival.
- ``reset()`` empties the world as well as the records, so one double can serve many tests.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from tests.loopback import LoopbackServer

RESPONSE_URL_MAX_USES = 5
HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT = 100, 999
REPLIES_DEFAULT_LIMIT, REPLIES_MAX_LIMIT = 1000, 1000


@dataclass(frozen=True)
class Call:
    """One Web API request as it arrived (recorded before any injected delay)."""

    method: str
    params: dict[str, Any]  # query string, form, multipart or JSON body, merged
    headers: dict[str, str]  # names lower-cased
    time: float  # time.time() at arrival


@dataclass
class Upload:
    """A file announced with files.getUploadURLExternal; content arrives at its upload URL."""

    file_id: str
    filename: str
    length: int
    content: bytes | None = None
    title: str | None = None
    channels: list[str] = field(default_factory=list)
    completed: bool = False


class _SlackError(Exception):
    def __init__(self, error: str):
        super().__init__(error)
        self.error = error


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Slack's edge takes a burst's connections; socketserver's backlog of 5 dropped some of a burst's replies' SYNs,
    # and each waited TCP's one-second retransmission.
    request_queue_size = 128

    def __init__(self, double: SlackDouble):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.double = double

    def serve_forever(self, poll_interval: float = 0.05) -> None:  # a quick stop between tests
        super().serve_forever(poll_interval)


class _Handler(BaseHTTPRequestHandler):
    server_version = "SlackDouble/1.0"

    def do_POST(self) -> None:
        self.server.double._handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST  # Slack accepts GET with a query string; slack_sdk always POSTs

    def log_message(self, format: str, *args: Any) -> None:
        pass


class SlackDouble(LoopbackServer):
    def __init__(
        self,
        *,
        tokens: Iterable[str] | None = None,
        team_id: str = "T0001",
        team_domain: str = "example",
        team_name: str = "Example Workspace",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        bot_name: str = "opsbot",
        app_id: str = "A0APP",
    ):
        """``tokens``: if given, only these tokens are accepted (others get ``invalid_auth``)."""
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.team_id = team_id
        self.team_domain = team_domain
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.app_id = app_id

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }
        self._last_ts_us = 0
        self._init_state()

    def _init_state(self) -> None:
        self._calls: list[Call] = []
        self._faults: dict[str, deque[tuple[str, Any]]] = {}
        self._delays: dict[str, deque[float]] = {}
        self._responses: dict[str, list[Any]] = {}
        self._rejected_responses: dict[str, list[Any]] = {}
        self._expired_response_urls: set[str] = set()
        self._messages: dict[str, dict[str, dict[str, Any]]] = {}  # channel -> ts -> message
        self._users: dict[str, dict[str, Any]] = {}
        self._usergroups: dict[str, list[str]] = {}
        self._uploads: dict[str, Upload] = {}
        self._users[self.bot_user_id] = self._user_object(
            self.bot_user_id, self.bot_name, self.bot_name, self.bot_name, "UTC", "", is_bot=True
        )

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> SlackDouble:
        self._stopping.clear()
        return super().start()

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        super().stop()

    def _make_server(self) -> _Server:
        return _Server(self)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``slack_sdk.WebClient(base_url=...)`` takes."""
        return f"{self.base_url}/api/"

    def response_url(self, name: str) -> str:
        return f"{self.base_url}/response/{name}"

    # ---------------------------------------------------------------- world setup

    def add_user(
        self,
        id: str,
        name: str,
        real_name: str | None = None,
        tz: str = "UTC",
        email: str | None = None,
        display_name: str | None = None,
    ) -> None:
        with self._lock:
            self._users[id] = self._user_object(
                id, name, real_name or name, display_name or name, tz, email or f"{name}@{self.team_domain}.test"
            )

    def set_usergroup(self, id: str, users: Iterable[str]) -> None:
        with self._lock:
            self._usergroups[id] = list(users)

    def seed_message(
        self,
        channel: str,
        text: str,
        user: str,
        ts: str | None = None,
        thread_ts: str | None = None,
        reactions: Mapping[str, Iterable[str]] | None = None,
        **fields: Any,
    ) -> str:
        """Preload a message (a reply if ``thread_ts``); ``reactions`` maps name -> user ids.

        Extra ``fields`` go into the message as is (``subtype``, ``bot_id``, ``files``...).
        Returns the message ts.
        """
        with self._lock:
            if ts is None:
                ts = self._next_ts()
            else:
                ts = _normalize_ts(ts)
                self._last_ts_us = max(self._last_ts_us, _ts_us(ts))
            message: dict[str, Any] = {"type": "message", "user": user, "text": text, "ts": ts}
            if thread_ts is not None and _normalize_ts(thread_ts) != ts:
                self._make_reply(channel, message, _normalize_ts(thread_ts))
            if reactions:
                users_by_name = {name: list(users) for name, users in reactions.items()}
                message["reactions"] = [{"name": n, "users": u, "count": len(u)} for n, u in users_by_name.items()]
            message.update(fields)
            self._channel(channel)[ts] = message
            return ts

    # ---------------------------------------------------------------- fault injection

    def fail_next(self, method: str, error: str = "channel_not_found", times: int = 1) -> None:
        """The next ``times`` calls to ``method`` answer HTTP 200 ``{"ok": false, "error": error}``."""
        with self._lock:
            self._faults.setdefault(method, deque()).extend([("error", error)] * times)

    def ratelimit_next(self, method: str, retry_after: int = 1, times: int = 1) -> None:
        """The next ``times`` calls answer HTTP 429, ``Retry-After: retry_after``, error ``ratelimited``."""
        with self._lock:
            self._faults.setdefault(method, deque()).extend([("ratelimited", int(retry_after))] * times)

    def server_error_next(self, method: str, status: int = 503, times: int = 1) -> None:
        """The next ``times`` calls answer HTTP ``status`` (Slack's own outage), no JSON body."""
        with self._lock:
            self._faults.setdefault(method, deque()).extend([("status", int(status))] * times)

    def delay_next(self, method: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` calls are answered only after ``seconds`` (``stop()`` cuts it short)."""
        with self._lock:
            self._delays.setdefault(method, deque()).extend([seconds] * times)

    def expire_response_url(self, name: str) -> None:
        """Make a response_url behave as after Slack's 30 minutes."""
        with self._lock:
            self._expired_response_urls.add(name)

    # ---------------------------------------------------------------- extension

    def answer(self, method: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Serve ``method`` with ``handler(params)``; what it returns is merged into ``{"ok": true}``.

        For methods the double does not know (``apps.connections.open`` for a Socket Mode double)
        or to replace a built-in one. Calls are still recorded, token checks and ``fail_next`` /
        ``ratelimit_next`` / ``delay_next`` still apply first. The handler runs with the double's
        lock held, so it must not call back into the double. It stays across ``reset()``.
        """
        with self._lock:
            self._methods[method] = handler

    # ---------------------------------------------------------------- inspection

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def wait_for(
        self,
        method: str,
        count: int = 1,
        timeout: float = 5.0,
        predicate: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        """Block until ``count`` calls to ``method`` (matching ``predicate``) arrived; return the first ``count``."""

        def matching() -> list[Call]:
            return [c for c in self._calls if c.method == method and (predicate is None or predicate(c))]

        with self._cond:
            if self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()[:count]
            what = f"{count} call(s) to {method}" + (" matching the predicate" if predicate else "")
            raise AssertionError(
                f"SlackDouble: waited {timeout}s for {what}, got {len(matching())}. "
                f"Calls that arrived ({len(self._calls)}):{_describe_calls(self._calls)}"
            )

    def responses(self, name: str) -> list[Any]:
        """Bodies (parsed JSON) accepted by ``response_url(name)``, in arrival order."""
        with self._lock:
            return list(self._responses.get(name, []))

    def rejected_responses(self, name: str) -> list[Any]:
        """Bodies posted to ``response_url(name)`` after it was used up or expired."""
        with self._lock:
            return list(self._rejected_responses.get(name, []))

    def wait_for_response(self, name: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        with self._cond:
            if self._cond.wait_for(lambda: len(self._responses.get(name, [])) >= count, timeout):
                return self._responses[name][:count]
            raise AssertionError(
                f"SlackDouble: waited {timeout}s for {count} post(s) to response_url {name!r}, "
                f"got {len(self._responses.get(name, []))}. Posts by response_url: "
                f"{ {n: len(b) for n, b in self._responses.items()} }. "
                f"Web API calls that arrived ({len(self._calls)}):{_describe_calls(self._calls)}"
            )

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """Every stored message of a channel, replies included, oldest first (copies)."""
        with self._lock:
            stored = self._messages.get(channel, {})
            return [json.loads(json.dumps(m)) for m in sorted(stored.values(), key=_message_key)]

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._messages.get(channel, {}).get(_normalize_ts(ts))
            return json.loads(json.dumps(found)) if found is not None else None

    def uploads(self) -> list[Upload]:
        with self._lock:
            return [
                Upload(u.file_id, u.filename, u.length, u.content, u.title, list(u.channels), u.completed)
                for u in self._uploads.values()
            ]

    def reset(self) -> None:
        """Forget calls, responses, faults and the whole world (messages, users, groups, files)."""
        with self._cond:
            self._init_state()
            self._cond.notify_all()

    # ---------------------------------------------------------------- HTTP plumbing

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        try:
            self._route(req)
        except Exception:
            # A bug in the double must show up in the test's error, not as a dropped connection.
            _send(req, 500, traceback.format_exc().encode(), "text/plain")

    def _route(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        _, _, rest = url.path.partition("/")
        kind, _, name = rest.partition("/")
        if kind == "api" and name:
            self._api(req, name, url.query, body)
        elif kind == "response" and name and req.command == "POST":
            self._response_url_post(req, name, body)
        elif kind == "upload" and name and req.command == "POST":
            self._upload(req, name, body)
        else:
            _send(req, 404, b"not found", "text/plain")

    def _api(self, req: BaseHTTPRequestHandler, method: str, query: str, body: bytes) -> None:
        headers = {k.lower(): v for k, v in req.headers.items()}
        params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
        try:
            params.update(_parse_body(headers.get("content-type", ""), body))
            parse_error = None
        except ValueError:
            parse_error = "invalid_json"
        with self._cond:
            self._calls.append(Call(method, params, headers, time.time()))
            self._cond.notify_all()
            delay = _pop(self._delays, method)
        if delay:
            self._stopping.wait(delay)
        status, payload, extra_headers = self._answer(method, params, headers, parse_error)
        _send(req, status, json.dumps(payload).encode(), "application/json; charset=utf-8", extra_headers)

    def _answer(
        self, method: str, params: dict[str, Any], headers: dict[str, str], parse_error: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if parse_error:
            return 200, {"ok": False, "error": parse_error}, {}
        auth = headers.get("authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else params.get("token")
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if self.tokens is not None and token not in self.tokens:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        with self._lock:
            fault = _pop(self._faults, method)
            if fault is not None:
                kind, value = fault
                if kind == "ratelimited":
                    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(value)}
                if kind == "status":
                    return value, {"ok": False, "error": "fatal_error"}, {}
                return 200, {"ok": False, "error": value}, {}
            handler = self._methods.get(method)
            if handler is None:
                return 200, {"ok": False, "error": "unknown_method"}, {}
            try:
                return 200, {"ok": True, **handler(params)}, {}
            except _SlackError as e:
                return 200, {"ok": False, "error": e.error}, {}

    def _response_url_post(self, req: BaseHTTPRequestHandler, name: str, body: bytes) -> None:
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            _send(req, 400, b"invalid_payload", "text/plain")
            return
        with self._cond:
            if name in self._expired_response_urls:
                refusal = b"expired_url"
            elif len(self._responses.get(name, [])) >= RESPONSE_URL_MAX_USES:
                refusal = b"used_url"
            else:
                refusal = None
                self._responses.setdefault(name, []).append(payload)
            if refusal:
                self._rejected_responses.setdefault(name, []).append(payload)
            self._cond.notify_all()
        if refusal:
            _send(req, 404, refusal, "text/plain")
        else:
            _send(req, 200, b"ok", "text/plain")

    def _upload(self, req: BaseHTTPRequestHandler, file_id: str, body: bytes) -> None:
        with self._lock:
            upload = self._uploads.get(file_id)
            if upload is not None:
                upload.content = body
        if upload is None:
            _send(req, 404, b"file_not_found", "text/plain")
        else:
            _send(req, 200, f"OK - {len(body)}".encode(), "text/plain")

    # ---------------------------------------------------------------- helpers (call with the lock held)

    def _next_ts(self) -> str:
        self._last_ts_us = max(time.time_ns() // 1000, self._last_ts_us + 1)
        return _format_ts(self._last_ts_us)

    def _channel(self, channel: str) -> dict[str, dict[str, Any]]:
        return self._messages.setdefault(channel, {})

    def _find(self, channel: str | None, ts: str | None) -> dict[str, Any]:
        if not channel:
            raise _SlackError("channel_not_found")
        message = self._messages.get(channel, {}).get(_normalize_ts(ts)) if _is_ts(ts) else None
        if message is None:
            raise _SlackError("message_not_found")
        return message

    def _make_reply(self, channel: str, message: dict[str, Any], thread_ts: str) -> None:
        message["thread_ts"] = thread_ts
        parent = self._messages.get(channel, {}).get(thread_ts)
        if parent is not None and parent.get("user"):
            message["parent_user_id"] = parent["user"]

    def _bot_message(self, params: dict[str, Any], ts: str, text: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "text": text,
            "ts": ts,
            "team": self.team_id,
        }
        for key in ("blocks", "attachments", "metadata"):
            if params.get(key) not in (None, ""):
                message[key] = _json_value(params[key])
        return message

    def _replies(self, channel: str, parent_ts: str) -> list[dict[str, Any]]:
        return sorted(
            (m for m in self._messages.get(channel, {}).values() if _is_reply(m) and m["thread_ts"] == parent_ts),
            key=_message_key,
        )

    def _threads(self, channel: str) -> dict[str, list[dict[str, Any]]]:
        """Every thread's replies by parent ts, in one pass (a page of history then costs no scan per message)."""
        threads: dict[str, list[dict[str, Any]]] = {}
        for message in sorted(self._messages.get(channel, {}).values(), key=_message_key):
            if _is_reply(message):
                threads.setdefault(message["thread_ts"], []).append(message)
        return threads

    def _with_thread_summary(
        self, channel: str, message: dict[str, Any], threads: dict[str, list[dict[str, Any]]] | None = None
    ) -> dict[str, Any]:
        rendered = dict(message)
        replies = threads.get(message["ts"], []) if threads is not None else self._replies(channel, message["ts"])
        if replies:
            users = list(dict.fromkeys(r.get("user") for r in replies if r.get("user")))
            rendered.update(
                thread_ts=message["ts"],
                reply_count=len(replies),
                reply_users_count=len(users),
                reply_users=users,
                latest_reply=replies[-1]["ts"],
                is_locked=False,
                subscribed=False,
            )
        return rendered

    def _user_object(
        self, id: str, name: str, real_name: str, display_name: str, tz: str, email: str, is_bot: bool = False
    ) -> dict[str, Any]:
        now = datetime.now(ZoneInfo(tz))
        offset = now.utcoffset()
        profile = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": display_name,
            "display_name_normalized": display_name,
            "team": self.team_id,
        }
        if email:
            profile["email"] = email
        if is_bot:
            profile["bot_id"] = self.bot_id
        return {
            "id": id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real_name,
            "tz": tz,
            "tz_label": now.tzname(),
            "tz_offset": int(offset.total_seconds()) if offset else 0,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": int(time.time()),
        }

    def _permalink(self, channel: str, message: dict[str, Any]) -> str:
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{message['ts'].replace('.', '')}"
        if _is_reply(message):
            link += f"?thread_ts={message['thread_ts']}&cid={channel}"
        return link

    # ---------------------------------------------------------------- Web API methods

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            raise _SlackError("channel_not_found")
        if not any(params.get(k) for k in ("text", "markdown_text", "blocks", "attachments")):
            raise _SlackError("no_text")
        ts = self._next_ts()
        message = self._bot_message(params, ts, params.get("text") or params.get("markdown_text") or "")
        if params.get("thread_ts"):
            self._make_reply(channel, message, _normalize_ts(params["thread_ts"]))
            if _truthy(params.get("reply_broadcast")):
                message["subtype"] = "thread_broadcast"
        self._channel(channel)[ts] = message
        return {"channel": channel, "ts": ts, "message": dict(message)}

    def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        message = self._find(channel, params.get("ts"))
        if message.get("user") != self.bot_user_id:
            raise _SlackError("cant_update_message")
        if "text" in params:
            message["text"] = params["text"] or ""
        # Slack keeps blocks/attachments that an update leaves out; an empty list removes them.
        for key in ("blocks", "attachments", "metadata"):
            if key in params:
                value = _json_value(params[key])
                if value:
                    message[key] = value
                else:
                    message.pop(key, None)
        return {"channel": channel, "ts": message["ts"], "text": message["text"], "message": dict(message)}

    def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            raise _SlackError("channel_not_found")
        if not params.get("user"):
            raise _SlackError("user_not_in_channel")
        if not any(params.get(k) for k in ("text", "blocks", "attachments")):
            raise _SlackError("no_text")
        return {"message_ts": self._next_ts()}

    def _chat_get_permalink(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        message = self._find(channel, params.get("message_ts"))
        return {"channel": channel, "permalink": self._permalink(channel, message)}  # type: ignore[arg-type]

    def _conversations_history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            raise _SlackError("channel_not_found")
        top_level = [m for m in self._messages.get(channel, {}).values() if _in_history(m)]
        newest_first = sorted(top_level, key=_message_key, reverse=True)
        selected = _between(newest_first, params)
        limit = _limit(params, HISTORY_DEFAULT_LIMIT, HISTORY_MAX_LIMIT)
        if params.get("cursor"):
            start = _decode_cursor(params["cursor"])
            selected = [m for m in selected if _ts_us(m["ts"]) <= start]
        page, has_more = selected[:limit], len(selected) > limit
        threads = self._threads(channel)
        return {
            "messages": [self._with_thread_summary(channel, m, threads) for m in page],
            "has_more": has_more,
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": _encode_cursor(selected[limit]["ts"]) if has_more else ""},
        }

    def _conversations_replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = params.get("channel")
        if not channel:
            raise _SlackError("channel_not_found")
        if not _is_ts(params.get("ts")):
            raise _SlackError("thread_not_found")
        stored = self._messages.get(channel, {})
        asked = stored.get(_normalize_ts(params["ts"]))
        parent_ts = asked["thread_ts"] if asked is not None and _is_reply(asked) else _normalize_ts(params["ts"])
        parent = stored.get(parent_ts)
        thread = ([self._with_thread_summary(channel, parent)] if parent else []) + self._replies(channel, parent_ts)
        if not thread:
            raise _SlackError("thread_not_found")
        selected = _between(thread, params)
        limit = _limit(params, REPLIES_DEFAULT_LIMIT, REPLIES_MAX_LIMIT)
        if params.get("cursor"):
            start = _decode_cursor(params["cursor"])
            selected = [m for m in selected if _ts_us(m["ts"]) >= start]
        page, has_more = selected[:limit], len(selected) > limit
        return {
            "messages": [dict(m) for m in page],
            "has_more": has_more,
            "response_metadata": {"next_cursor": _encode_cursor(selected[limit]["ts"]) if has_more else ""},
        }

    def dm_channel(self, user: str) -> str:
        """The id of the bot's direct message channel with ``user`` (what conversations.open answers)."""
        return f"D{user}"

    def _conversations_open(self, params: dict[str, Any]) -> dict[str, Any]:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if len(users) != 1:
            raise _SlackError("not_enough_users" if not users else "too_many_users")
        if users[0] not in self._users and not users[0].startswith(("U", "W")):
            raise _SlackError("user_not_found")
        return {"channel": {"id": self.dm_channel(users[0]), "is_im": True}}

    def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(params.get("user") or "")
        if user is None:
            raise _SlackError("user_not_found")
        return {"user": json.loads(json.dumps(user))}

    def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        users = self._usergroups.get(params.get("usergroup") or "")
        if users is None:
            raise _SlackError("no_such_subteam")
        return {"users": list(users)}

    def _files_get_upload_url_external(self, params: dict[str, Any]) -> dict[str, Any]:
        filename, length = params.get("filename"), params.get("length")
        if not filename or length in (None, "") or not str(length).isdigit():
            raise _SlackError("invalid_arguments")
        file_id = f"F{len(self._uploads) + 1:08d}"
        self._uploads[file_id] = Upload(file_id, filename, int(length))
        return {"upload_url": f"{self.base_url}/upload/{file_id}", "file_id": file_id}

    def _files_complete_upload_external(self, params: dict[str, Any]) -> dict[str, Any]:
        requested = _json_value(params.get("files") or "[]")
        if not requested:
            raise _SlackError("invalid_arguments")
        uploads = []
        for item in requested:
            upload = self._uploads.get(item.get("id", ""))
            if upload is None or upload.content is None:
                raise _SlackError("file_not_found")
            upload.title = item.get("title") or upload.filename
            upload.completed = True
            uploads.append(upload)
        channels = [c for c in (params.get("channels") or "").split(",") if c]
        if params.get("channel_id"):
            channels.insert(0, params["channel_id"])
        for upload in uploads:
            upload.channels.extend(channels)
        files = [self._file_object(u) for u in uploads]
        for channel in channels:
            ts = self._next_ts()
            message = self._bot_message({}, ts, params.get("initial_comment") or "")
            message.update(files=files, upload=True, display_as_bot=False)
            if params.get("thread_ts"):
                self._make_reply(channel, message, _normalize_ts(params["thread_ts"]))
            self._channel(channel)[ts] = message
        return {"files": files}

    def _file_object(self, upload: Upload) -> dict[str, Any]:
        mimetype = mimetypes.guess_type(upload.filename)[0] or "application/octet-stream"
        extension = upload.filename.rsplit(".", 1)[-1].lower() if "." in upload.filename else "binary"
        url = f"https://files.slack.com/files-pri/{self.team_id}-{upload.file_id}"
        now = int(time.time())
        return {
            "id": upload.file_id,
            "created": now,
            "timestamp": now,
            "name": upload.filename,
            "title": upload.title,
            "mimetype": mimetype,
            "filetype": extension,
            "user": self.bot_user_id,
            "user_team": self.team_id,
            "size": len(upload.content or b""),
            "mode": "hosted",
            "is_external": False,
            "is_public": bool(upload.channels),
            "url_private": f"{url}/{upload.filename}",
            "url_private_download": f"{url}/download/{upload.filename}",
            "permalink": (
                f"https://{self.team_domain}.slack.com/files/{self.bot_user_id}/{upload.file_id}/{upload.filename}"
            ),
            "channels": list(upload.channels),
        }


# -------------------------------------------------------------------- module helpers


def _send(
    req: BaseHTTPRequestHandler, status: int, body: bytes, content_type: str, headers: Mapping[str, str] | None = None
) -> None:
    try:
        req.send_response(status)
        req.send_header("Content-Type", content_type)
        req.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up (its timeout ran out during an injected delay)


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        parsed = json.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("JSON body is not an object")
        return parsed
    if media_type == "multipart/form-data":
        message = BytesParser(policy=policy.default).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():  # type: ignore[attr-defined]
            name = part.get_param("name", header="content-disposition")
            data = part.get_payload(decode=True) or b""
            fields[name] = data if part.get_filename() else data.decode("utf-8")
        return fields
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def _json_value(value: Any) -> Any:
    """Form-encoded calls carry blocks, views and file lists as JSON strings; JSON calls as values."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _SlackError("invalid_arguments") from None
    return value


def _pop(queues: dict[str, deque[Any]], method: str) -> Any:
    queue = queues.get(method)
    return queue.popleft() if queue else None


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true")


def _normalize_ts(ts: str | float) -> str:
    return _format_ts(_ts_us(ts))


def _ts_us(ts: str | float) -> int:
    seconds, _, fraction = (f"{ts:.6f}" if isinstance(ts, float) else str(ts)).partition(".")
    return int(seconds) * 1_000_000 + int((fraction + "000000")[:6])


def _is_ts(value: Any) -> bool:
    seconds, _, fraction = str(value or "").partition(".")
    return seconds.isdigit() and (fraction == "" or fraction.isdigit())


def _format_ts(us: int) -> str:
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _message_key(message: dict[str, Any]) -> int:
    return _ts_us(message["ts"])


def _is_reply(message: dict[str, Any]) -> bool:
    return "thread_ts" in message and message["thread_ts"] != message["ts"]


def _in_history(message: dict[str, Any]) -> bool:
    return not _is_reply(message) or message.get("subtype") == "thread_broadcast"


def _encode_cursor(ts: str) -> str:
    # Slack's own cursors have this form: base64 of "next_ts:<ts without the dot>".
    return base64.b64encode(f"next_ts:{ts.replace('.', '')}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    try:
        decoded = base64.b64decode(cursor, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _SlackError("invalid_cursor") from None
    prefix, _, digits = decoded.partition(":")
    if prefix != "next_ts" or not digits.isdigit():
        raise _SlackError("invalid_cursor")
    return int(digits)


def _limit(params: dict[str, Any], default: int, maximum: int) -> int:
    try:
        limit = int(params.get("limit") or 0)
    except (TypeError, ValueError):
        raise _SlackError("invalid_limit") from None
    return min(limit, maximum) if limit > 0 else default


def _between(messages: list[dict[str, Any]], params: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply ``oldest``/``latest`` (exclusive unless ``inclusive``), as Slack does."""
    inclusive = _truthy(params.get("inclusive"))
    for bound in ("oldest", "latest"):
        if params.get(bound) and not _is_ts(params[bound]):
            raise _SlackError(f"invalid_ts_{bound}")
    oldest = _ts_us(params["oldest"]) if params.get("oldest") else None
    latest = _ts_us(params["latest"]) if params.get("latest") else None

    def inside(message: dict[str, Any]) -> bool:
        ts = _ts_us(message["ts"])
        if oldest is not None and (ts < oldest or (ts == oldest and not inclusive)):
            return False
        if latest is not None and (ts > latest or (ts == latest and not inclusive)):
            return False
        return True

    return [m for m in messages if inside(m)]


def _describe_calls(calls: list[Call], last: int = 30) -> str:
    if not calls:
        return " none"
    shown = calls[-last:]
    lines = [f"\n  ... {len(calls) - len(shown)} earlier"] if len(calls) > len(shown) else []
    for call in shown:
        params = {k: v for k, v in call.params.items() if k != "token"}
        text = json.dumps(params, default=repr)
        lines.append(f"\n  - {call.method} {text[:200]}{'...' if len(text) > 200 else ''}")
    return "".join(lines)
