"""Talking to Slack's Web API and response_urls; shared by the adapter and the worker processes."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.config import ConfigError, Settings
from bot.registry import Invocation, Reply

log = logging.getLogger(__name__)


def web_client(settings: Settings) -> WebClient:
    if settings.slack_bot_token is None:
        raise ConfigError("SLACK_BOT_TOKEN: not set; the bot cannot talk to Slack without it")
    return WebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )


def group_members(client: WebClient):
    def members(group_id: str) -> set[str]:
        return set(client.usergroups_users_list(usergroup=group_id)["users"])

    return members


def deliver(client: WebClient, invocation: Invocation, response_url: str | None, reply: Reply) -> None:
    """By the command's response_url; when that is used up or expired, through the Web API instead."""
    response_type = "in_channel" if reply.in_channel else "ephemeral"
    if response_url:
        response = WebhookClient(response_url).send(text=reply.text, blocks=reply.blocks or None, response_type=response_type)
        if response.status_code == 200:
            return
        log.warning("response_url answered HTTP %s for /%s; posting instead", response.status_code, invocation.command)
    try:
        if reply.in_channel:
            client.chat_postMessage(channel=invocation.channel_id, text=reply.text, blocks=reply.blocks or None)
        else:
            client.chat_postEphemeral(
                channel=invocation.channel_id, user=invocation.user_id, text=reply.text, blocks=reply.blocks or None
            )
    except SlackApiError as error:
        log.error("could not deliver the reply to /%s: %s", invocation.command, error.response.get("error"))
