"""Requests shaped and signed as Slack sends them, for driving the bot's HTTP endpoint in tests.

``SlackSender`` talks to loopback only (it refuses any other host) through ``http.client``, so no
proxy setting can route a test request off the machine.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlencode, urlsplit


def sign(secret: str, body: str | bytes, timestamp: int | str) -> dict[str, str]:
    """The two headers Slack adds: ``v0=`` + hex HMAC-SHA256(secret, ``v0:{timestamp}:{body}``)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    digest = hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={digest}"}


@dataclass(frozen=True)
class Reply:
    """The bot's HTTP answer. Unpacks as ``status, body = reply``."""

    status: int
    body: str
    elapsed: float  # seconds from sending the request to reading the whole answer
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def __iter__(self):
        return iter((self.status, self.body))

    def json(self) -> Any:
        return json.loads(self.body)


class SlackSender:
    """Sends slash commands, button clicks and events to ``{base_url}{path}`` as Slack would.

    Every sending method takes ``timestamp`` (default: now; pass an old one for a stale request),
    ``sign_with`` (a secret other than the app's gives a bad signature), ``unsigned=True`` (no
    signature headers at all) and ``headers`` (extra headers, e.g. ``X-Slack-Retry-Num``).
    """

    def __init__(
        self,
        base_url: str,
        signing_secret: str,
        *,
        path: str = "/slack/events",
        team_id: str = "T0001",
        team_domain: str = "example",
        api_app_id: str = "A0APP",
        bot_user_id: str = "U0BOT",
        verification_token: str = "legacy-verification-token",
        timeout: float = 10.0,
    ):
        url = urlsplit(base_url)
        host = url.hostname or ""
        if url.scheme != "http" or not _is_loopback(host):
            raise ValueError(f"SlackSender only sends to a loopback address such as 127.0.0.1, not {base_url}")
        self.host, self.port = host, url.port or 80
        self.path = url.path.rstrip("/") + path
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        # Slack still sends its deprecated verification token; apps must not rely on it.
        self.verification_token = verification_token
        self.timeout = timeout

    def slash(
        self,
        command: str,
        text: str,
        user_id: str,
        channel_id: str = "C0INCIDENT",
        *,
        response_url: str,
        team_id: str | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
        trigger_id: str | None = None,
        timestamp: int | str | None = None,
        sign_with: str | None = None,
        unsigned: bool = False,
        headers: Mapping[str, str] | None = None,
        **extra: str,
    ) -> Reply:
        """A slash command: form fields in the order Slack sends them; ``extra`` adds or overrides fields."""
        fields = slash_fields(
            command,
            text,
            user_id,
            channel_id,
            response_url=response_url,
            token=self.verification_token,
            team_id=team_id or self.team_id,
            team_domain=self.team_domain,
            api_app_id=self.api_app_id,
            user_name=user_name,
            channel_name=channel_name,
            trigger_id=trigger_id,
            **extra,
        )
        return self._post(
            urlencode(fields), "application/x-www-form-urlencoded", timestamp, sign_with, unsigned, headers
        )

    def click(
        self,
        action_id: str,
        value: str,
        user_id: str,
        channel_id: str,
        message_ts: str,
        response_url: str,
        *,
        block_id: str = "actions",
        message: Mapping[str, Any] | None = None,
        user_name: str | None = None,
        channel_name: str | None = None,
        button_text: str = "Button",
        is_ephemeral: bool = False,
        trigger_id: str | None = None,
        timestamp: int | str | None = None,
        sign_with: str | None = None,
        unsigned: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A ``block_actions`` click on a button; pass ``message`` (e.g. ``double.message(...)``) to
        carry the clicked message as Slack does, otherwise a minimal one is sent."""
        name = user_name or user_id.lower()
        payload = {
            "type": "block_actions",
            "user": {"id": user_id, "username": name, "name": name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": is_ephemeral,
            },
            "trigger_id": trigger_id or _trigger_id(),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": channel_name or channel_id.lower()},
            "message": dict(message) if message is not None else {"type": "message", "ts": message_ts, "text": ""},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": button_text, "emoji": True},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self._post(body, "application/x-www-form-urlencoded", timestamp, sign_with, unsigned, headers)

    def message_shortcut(
        self,
        callback_id: str,
        user_id: str,
        channel_id: str,
        message: Mapping[str, Any],
        response_url: str,
        *,
        trigger_id: str | None = None,
        timestamp: int | str | None = None,
        sign_with: str | None = None,
        unsigned: bool = False,
    ) -> Reply:
        """A message shortcut (``message_action``) on ``message`` (at least its ``ts``), as a form field ``payload``."""
        name = user_id.lower()
        payload = {
            "type": "message_action",
            "token": self.verification_token,
            "action_ts": f"{time.time():.6f}",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user_id, "username": name, "name": name, "team_id": self.team_id},
            "channel": {"id": channel_id, "name": channel_id.lower()},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": trigger_id or _trigger_id(),
            "response_url": response_url,
            "message_ts": message["ts"],
            "message": {"type": "message", "text": "", **dict(message)},
        }
        body = urlencode({"payload": json.dumps(payload)})
        return self._post(body, "application/x-www-form-urlencoded", timestamp, sign_with, unsigned, None)

    def event(
        self,
        event: Mapping[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | str | None = None,
        sign_with: str | None = None,
        unsigned: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An Events API ``event_callback`` (JSON). Re-send with the same ``event_id`` and a
        ``retry_num`` to imitate Slack's redelivery."""
        envelope = {
            "token": self.verification_token,
            "team_id": self.team_id,
            "api_app_id": self.api_app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        extra = dict(headers or {})
        if retry_num is not None:
            extra.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason})
        return self._post(json.dumps(envelope), "application/json", timestamp, sign_with, unsigned, extra)

    def raw(self, body: str | bytes, headers: Mapping[str, str]) -> Reply:
        """Send ``body`` with exactly ``headers``: nothing is signed or added for you."""
        return self._send(body.encode("utf-8") if isinstance(body, str) else body, dict(headers))

    def _post(
        self,
        body: str,
        content_type: str,
        timestamp: int | str | None,
        sign_with: str | None,
        unsigned: bool,
        headers: Mapping[str, str] | None,
    ) -> Reply:
        all_headers = {"Content-Type": content_type}
        if not unsigned:
            ts = int(time.time()) if timestamp is None else timestamp
            all_headers.update(sign(sign_with if sign_with is not None else self.signing_secret, body, ts))
        all_headers.update(headers or {})
        return self._send(body.encode("utf-8"), all_headers)

    def _send(self, body: bytes, headers: dict[str, str]) -> Reply:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            started = time.perf_counter()
            connection.request("POST", self.path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", errors="replace")
            elapsed = time.perf_counter() - started
            return Reply(response.status, text, elapsed, {k.lower(): v for k, v in response.getheaders()})
        finally:
            connection.close()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def slash_fields(
    command: str,
    text: str,
    user_id: str,
    channel_id: str,
    *,
    response_url: str,
    token: str,
    team_id: str,
    team_domain: str,
    api_app_id: str,
    user_name: str | None = None,
    channel_name: str | None = None,
    trigger_id: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """A slash command's fields, in the order Slack sends them (HTTP form body or Socket Mode payload)."""
    return {
        "token": token,
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name or channel_id.lower(),
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or _trigger_id(),
        **extra,
    }


def _trigger_id() -> str:
    return f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"
