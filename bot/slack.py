"""The Slack adapter: Bolt acknowledges at once, the dispatcher works on our own pool, replies go by response_url."""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from bot.config import ConfigError, Settings
from bot.registry import Command, Invocation, Reply
from bot.runtime import Runtime

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


class SlackAdapter:
    """Translates slash commands into invocations and replies into response_url posts."""

    def __init__(self, runtime: Runtime, client: WebClient, *, http_mode: bool):
        settings = runtime.settings
        if http_mode and settings.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET: not set; HTTP mode cannot verify Slack's requests without it")
        self.runtime = runtime
        self.client = client
        # Bolt's own listener pool is small (5 threads): it only acknowledges; the work runs here.
        self.jobs = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="job")
        try:
            self.app = App(
                client=client,
                signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None,
                request_verification_enabled=http_mode,
            )
        except BoltError as error:
            raise ConfigError(f"SLACK_BOT_TOKEN: Slack did not accept it ({error})") from None
        for cmd in runtime.commands.values():
            self.app.command(cmd.slash)(self._listener(cmd))

    def _listener(self, cmd: Command):
        def on_command(ack, command: dict) -> None:
            ack()
            invocation = Invocation(
                user_id=command["user_id"],
                command=cmd.name,
                text=command.get("text", "").strip(),
                channel_id=command.get("channel_id"),
                source="slack",
            )
            self.jobs.submit(self._run, invocation, command.get("response_url"))

        on_command.__name__ = f"on_{re.sub(r'[^a-z0-9]', '_', cmd.name)}"
        return on_command

    def _run(self, invocation: Invocation, response_url: str | None) -> None:
        try:
            reply = self.runtime.dispatcher.dispatch(
                invocation, progress=lambda text: self._send(invocation, response_url, Reply(text))
            )
            self._send(invocation, response_url, reply)
        except Exception:  # the dispatcher answers every expected failure; this is the last net
            log.exception("command %s from %s could not be answered", invocation.command, invocation.user_id)

    def _send(self, invocation: Invocation, response_url: str | None, reply: Reply) -> None:
        response_type = "in_channel" if reply.in_channel else "ephemeral"
        if response_url:
            response = WebhookClient(response_url).send(text=reply.text, blocks=reply.blocks or None, response_type=response_type)
            if response.status_code == 200:
                return
            log.warning("response_url answered HTTP %s for /%s; posting instead", response.status_code, invocation.command)
        # A used-up or expired response_url: reach the user through the Web API instead.
        try:
            if reply.in_channel:
                self.client.chat_postMessage(channel=invocation.channel_id, text=reply.text, blocks=reply.blocks or None)
            else:
                self.client.chat_postEphemeral(
                    channel=invocation.channel_id, user=invocation.user_id, text=reply.text, blocks=reply.blocks or None
                )
        except SlackApiError as error:
            log.error("could not deliver the reply to /%s: %s", invocation.command, error.response.get("error"))

    def http_server(self, host: str, port: int, threads: int = 8):
        """A waitress server for POST /slack/events; `.run()` serves, `.close()` stops."""
        import waitress.server

        return waitress.server.create_server(
            SlackRequestHandler(self.app), host=host, port=port, threads=threads, ident="flowstate-bot"
        )

    def shutdown(self) -> None:
        self.jobs.shutdown(wait=True, cancel_futures=False)
