"""Talking to Slack's Web API and response_urls; shared by the adapter and the runner processes."""

from __future__ import annotations

import logging
import time

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from bot.config import ConfigError, Settings
from bot.metrics import SLACK_API_ERRORS
from bot.registry import Invocation, Reply

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
        value = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), None)
        try:
            seconds = float(value[0] if isinstance(value, list) else value)
        except (TypeError, ValueError, IndexError):
            seconds = 1.0
        time.sleep(min(max(seconds, 0.0), self.cap))
        state.increment_current_attempt()


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


def upload_text(client: WebClient, channel: str, filename: str, title: str, content: str, comment: str) -> str | None:
    """A text file posted to a channel: files.getUploadURLExternal, the bytes, files.completeUploadExternal (slack_sdk's v2 flow)."""
    answer = client.files_upload_v2(channel=channel, filename=filename, title=title, content=content, initial_comment=comment)
    return (answer.get("file") or {}).get("id")


def upload_to_user(client: WebClient, user_id: str, filename: str, title: str, content: str, comment: str) -> str | None:
    """A text file only `user_id` sees: posted to the bot's direct message with them (conversations.open, im:write)."""
    channel = client.conversations_open(users=user_id)["channel"]["id"]
    return upload_text(client, channel, filename, title, content, comment)


def deliver(client: WebClient, invocation: Invocation, response_url: str | None, reply: Reply) -> bool:
    """By the command's response_url; when that is used up, expired or unreachable, through the Web API instead."""
    response_type = "in_channel" if reply.in_channel else "ephemeral"
    if response_url:
        try:
            response = WebhookClient(response_url, timeout=10, retry_handlers=_retry_handlers()).send(
                text=reply.text, blocks=reply.blocks or None, response_type=response_type, replace_original=False
            )
            if response.status_code == 200:
                return True
            SLACK_API_ERRORS.labels("response_url", f"http_{response.status_code}").inc()
            log.warning("response_url answered HTTP %s for /%s; posting instead", response.status_code, invocation.command)
        except Exception as error:  # unreachable, reset, timed out: the Web API may still work
            SLACK_API_ERRORS.labels("response_url", type(error).__name__).inc()
            log.warning("response_url failed for /%s (%s); posting instead", invocation.command, type(error).__name__)
    try:
        if reply.in_channel:
            client.chat_postMessage(channel=invocation.channel_id, text=reply.text, blocks=reply.blocks or None)
        else:
            client.chat_postEphemeral(
                channel=invocation.channel_id, user=invocation.user_id, text=reply.text, blocks=reply.blocks or None
            )
        return True
    except SlackApiError as error:
        log.error("could not deliver the reply to /%s: %s", invocation.command, error.response.get("error"))
    except Exception as error:
        log.error("could not deliver the reply to /%s: %s", invocation.command, type(error).__name__)
    return False
