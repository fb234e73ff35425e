"""Talking to Slack's Web API and response_urls; shared by the adapter and the runner processes."""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import ssl
import time
import urllib.request
from typing import Callable, Mapping
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient
from slack_sdk.web.internal_utils import get_user_agent

from bot.frame.config import ConfigError, Settings
from bot.adapters.metrics import SLACK_API_ERRORS
from bot.frame.registry import Invocation, Reply

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 3.0  # seconds: a rate-limited call waits at most this long, not what Slack asks
PATIENT_RETRY_AFTER = 60.0  # ...unless nobody waits on it: reading history for a post-mortem honours Retry-After


class CappedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Slack's Retry-After can be long; a user waiting for a reply (or a role check) should not wait for it."""

    def __init__(self, max_retry_count: int = 1, cap: float = MAX_RETRY_AFTER):
        super().__init__(max_retry_count=max_retry_count)
        self.cap = cap

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:
        if response is None:
            raise error
        state.next_attempt_requested = True
        time.sleep(min(_retry_after(response.headers), self.cap))
        state.increment_current_attempt()


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one verifying TLS context of every call to Slack (the Web API, response_urls, Bolt's respond()).

    Without it slack_sdk hands urllib no context, and each HTTPS request builds the default one, loading the
    system's certificate authorities again: 26 ms of CPU per reply here (bench/reply_tls.py), more than the rest of
    a reply's work together. Built on first use (the console never needs it); read-only once built, so its
    threads share it. SSL_CERT_FILE and SSL_CERT_DIR are honoured as by the default."""
    return ssl.create_default_context()


def tls_for(url: str | None) -> ssl.SSLContext | None:
    """The shared context for an https URL; None for plain http (a test's loopback Slack), where it is never used and
    would cost: given a context, urllib builds a new opener for every request (0.3 ms of CPU)."""
    return tls_context() if url and url.lower().startswith("https:") else None


class CountingWebClient(WebClient):
    """A WebClient whose failed calls (after its retries) count in flowstate_bot_slack_api_errors."""

    def api_call(self, api_method: str, *args, **kwargs):
        try:
            return super().api_call(api_method, *args, **kwargs)
        except SlackApiError as error:
            SLACK_API_ERRORS.labels(api_method, str(error.response.get("error") or f"http_{error.response.status_code}")[:64]).inc()
            raise
        except Exception as error:
            SLACK_API_ERRORS.labels(api_method, type(error).__name__).inc()
            raise


def _retry_handlers() -> list[RetryHandler]:
    return [
        CappedRateLimitRetryHandler(max_retry_count=2),
        ServerErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=1),
    ]


def patient_client(client: WebClient) -> WebClient:
    """The same app for background reading (a channel's history): waits as long as Slack asks, up to a minute."""
    return CountingWebClient(
        token=client.token,
        base_url=client.base_url,
        timeout=client.timeout,
        ssl=client.ssl,
        retry_handlers=[
            CappedRateLimitRetryHandler(max_retry_count=5, cap=PATIENT_RETRY_AFTER),
            ServerErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=1),
        ],
    )


def web_client(settings: Settings) -> WebClient:
    if settings.slack_bot_token is None:
        raise ConfigError("SLACK_BOT_TOKEN: not set; the bot cannot talk to Slack without it")
    return CountingWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        ssl=tls_for(settings.slack_api_url),
        retry_handlers=_retry_handlers(),
    )


def group_members(client: WebClient):
    def members(group_id: str) -> set[str]:
        return set(client.usergroups_users_list(usergroup=group_id)["users"])

    return members


class SlackNotifier:
    """Real channel messages (not response_url, not ephemeral), so they can be updated in place later."""

    def __init__(self, client: WebClient):
        self._client = client

    def post(self, channel: str, reply: Reply) -> str | None:
        return self._client.chat_postMessage(channel=channel, text=reply.text, blocks=reply.blocks or None).get("ts")

    def update(self, channel: str, ts: str, reply: Reply) -> None:
        self._client.chat_update(channel=channel, ts=ts, text=reply.text, blocks=reply.blocks or [])



class ResponseUrl:
    """The publisher of a job that came from Slack: its reply through the command's response_url (see deliver);
    progress lines are not sent (a change shows its own on its message). A reply that cannot be delivered is an
    audit row (`undelivered`, the job and the reason, never the response_url), so /audit shows what nobody received."""

    def __init__(self, client: WebClient | None, audit, job):
        self._client, self._audit, self._job = client, audit, job

    def progress(self, text: str) -> None:
        pass

    def publish(self, reply: Reply) -> None:
        job = self._job
        if job.source != "slack":
            return
        why = deliver(self._client, job.invocation(), job.response_url, reply)
        if why is not None:
            try:
                self._audit.record(job.invocation(), "undelivered", error=f"reply undelivered: {why}", job_id=job.id)
            except Exception:
                log.exception("could not record the undelivered reply of request #%s", job.id)


DELIVERY_SECONDS = 60.0  # how long a reply keeps trying (Slack's Retry-After honoured, its 5xx backed off)
FIRST_BACKOFF, LAST_BACKOFF = 0.5, 8.0  # seconds between tries after a 5xx or a lost connection


class _Failed(Exception):
    """Why a reply did not go one way: `code` for the metric (Slack's error, http_NNN, an exception's name),
    `reason` for the audit; `after` is the wait Slack asked for."""

    def __init__(self, code: str, after: float | None = None):
        super().__init__(code)
        self.code, self.after = code[:64], after

    @property
    def reason(self) -> str:
        return self.code if self.after is None else f"Slack asked to wait {self.after:.0f} s ({self.code})"


class _TryAgain(_Failed):
    """Slack asked to wait, or failed on its side: the same way may work later."""


def _retry_after(headers) -> float:
    value = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    try:
        return max(float(value[0] if isinstance(value, list) else value), 0.0)
    except (TypeError, ValueError, IndexError):
        return 1.0


def _patiently(attempt: Callable[[], None], deadline: float) -> _Failed | None:
    """Runs `attempt` until it succeeds (None), fails for good, or waiting longer would pass the deadline."""
    backoff = FIRST_BACKOFF
    while True:
        try:
            attempt()
            return None
        except _TryAgain as again:
            wait = backoff if again.after is None else again.after
            if again.after is None:
                backoff = min(backoff * 2, LAST_BACKOFF)
            if time.monotonic() + wait > deadline:
                return again
            time.sleep(wait)
        except _Failed as failed:
            return failed
        except Exception as error:  # unreachable, reset, timed out
            return _Failed(type(error).__name__)


REPLY_TIMEOUT = 10.0  # seconds to connect, and then for each read of Slack's answer
_USER_AGENT = get_user_agent()
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")  # slack_sdk's, for either scheme


def _post_reply(url: str, body: dict) -> tuple[int, Mapping[str, str]]:
    """POST a reply's JSON to its response_url: (status, headers). http.client on the shared TLS context, one
    connection per reply, as slack_sdk's WebhookClient sends it, without the urllib opener that client builds for
    every request (0.3 ms of CPU). Through a proxy the environment names (the variables slack_sdk reads, for either
    scheme; NO_PROXY honoured) WebhookClient goes instead, as before."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failed("invalid_url")
    if any(os.environ.get(name, "").strip() for name in _PROXY_VARIABLES) and not urllib.request.proxy_bypass(parts.hostname):
        sent = WebhookClient(url, timeout=REPLY_TIMEOUT, ssl=tls_for(url), retry_handlers=[]).send_dict(body)
        return sent.status_code, sent.headers
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=REPLY_TIMEOUT, context=tls_context())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REPLY_TIMEOUT)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Content-Type": "application/json;charset=utf-8", "User-Agent": _USER_AGENT}
        connection.request("POST", path, json.dumps(body).encode(), headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.headers
    finally:
        connection.close()


def _by_response_url(response_url: str, reply: Reply) -> Callable[[], None]:
    body = {"text": reply.text, "response_type": "in_channel" if reply.in_channel else "ephemeral", "replace_original": False}
    if reply.blocks:
        body["blocks"] = reply.blocks

    def attempt() -> None:
        status, headers = _post_reply(response_url, body)
        if status == 429:
            raise _TryAgain("ratelimited", _retry_after(headers))
        if status != 200:  # used up (5 uses), expired (30 min), or Slack failing: the Web API may work
            raise _Failed(f"http_{status}")

    return attempt


def _by_web_api(client: WebClient, invocation: Invocation, reply: Reply) -> Callable[[], None]:
    # Without slack_sdk's retry handlers: their capped waits would retry before Slack's Retry-After.
    bare = WebClient(token=client.token, base_url=client.base_url, timeout=client.timeout, ssl=client.ssl, retry_handlers=[])

    def attempt() -> None:
        try:
            if reply.in_channel:
                bare.chat_postMessage(channel=invocation.channel_id, text=reply.text, blocks=reply.blocks or None)
            else:
                bare.chat_postEphemeral(channel=invocation.channel_id, user=invocation.user_id, text=reply.text, blocks=reply.blocks or None)
        except SlackApiError as error:
            status = error.response.status_code
            if status == 429:
                raise _TryAgain(str(error.response.get("error") or "ratelimited"), _retry_after(error.response.headers)) from None
            if status >= 500:
                raise _TryAgain(f"http_{status}") from None
            raise _Failed(str(error.response.get("error") or f"http_{status}")) from None
        except (OSError, TimeoutError) as error:  # refused, reset, timed out: Slack's side or the network
            raise _TryAgain(type(error).__name__) from None

    return attempt


def deliver(client: WebClient, invocation: Invocation, response_url: str | None, reply: Reply) -> str | None:
    """By the command's response_url; when that is used up, expired or unreachable, through the Web API instead.
    Both wait as Slack asks, for DELIVERY_SECONDS in all. None once delivered, else why not (never the URL)."""
    deadline = time.monotonic() + DELIVERY_SECONDS
    if response_url:
        failed = _patiently(_by_response_url(response_url, reply), deadline)
        if failed is None:
            return None
        SLACK_API_ERRORS.labels("response_url", failed.code).inc()
        log.warning("response_url failed for /%s (%s); posting instead", invocation.command, failed.reason)
    failed = _patiently(_by_web_api(client, invocation, reply), deadline)
    if failed is None:
        return None
    SLACK_API_ERRORS.labels("chat.postMessage" if reply.in_channel else "chat.postEphemeral", failed.code).inc()
    log.error("could not deliver the reply to /%s: %s", invocation.command, failed.reason)
    return failed.reason
