"""The Slack adapter: Bolt acknowledges at once; worker processes do the work and reply by response_url."""

from __future__ import annotations

import logging
import re

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.config import ConfigError
from bot.jobs import JobRunner
from bot.registry import Command, Invocation, Reply
from bot.runtime import Runtime
from bot.slack_client import deliver

log = logging.getLogger(__name__)


class SlackAdapter:
    """Translates slash commands into invocations and replies into response_url posts."""

    def __init__(self, runtime: Runtime, client: WebClient, *, http_mode: bool):
        settings = runtime.settings
        if http_mode and settings.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET: not set; HTTP mode cannot verify Slack's requests without it")
        self.runtime = runtime
        self.client = client
        try:
            self.app = App(
                client=client,
                signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None,
                request_verification_enabled=http_mode,
            )
        except BoltError as error:
            raise ConfigError(f"SLACK_BOT_TOKEN: Slack did not accept it ({error})") from None
        # Bolt's listeners only acknowledge; the work runs in worker processes (see bot/jobs.py).
        self.jobs = JobRunner(settings, runtime.stack, on_lost=self._lost)
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
            self.jobs.submit(invocation, command.get("response_url"))

        on_command.__name__ = f"on_{re.sub(r'[^a-z0-9]', '_', cmd.name)}"
        return on_command

    def _lost(self, invocation: Invocation, response_url: str | None, _error: BaseException) -> None:
        text = f"/{invocation.command} stopped before it could answer (a worker process ended); /audit shows whether it ran."
        deliver(self.client, invocation, response_url, Reply(text))

    def http_server(self, host: str, port: int, threads: int = 8):
        """A waitress server for POST /slack/events; `.run()` serves, `.close()` stops."""
        import waitress.server

        return waitress.server.create_server(
            SlackRequestHandler(self.app), host=host, port=port, threads=threads, ident="flowstate-bot"
        )

    def shutdown(self) -> None:
        self.jobs.shutdown()
