"""The Slack adapter: Bolt verifies and acknowledges; each command or click becomes a job row first.

The listener inserts the job (Slack's trigger_id is its dedupe key, so a redelivered request is one
job) and acks; runner processes (bot/jobs/runner.py) claim and run it. Nothing is lost if the bot
dies after the ack: the job is in the database.

A pin reaction (Events API) and the "Add to incident timeline" message shortcut are
`/incident add-message TS` from the person who reacted or clicked: the same role check, audit and
runner. The listener only inserts the job (keyed by the envelope's event_id: Slack's retries are one
job); reading the message from Slack happens in the runner, never on the path that answers Slack.

Every listener runs on the thread that received the request and answers when it returns
(`process_before_response`): it stores a row and acks, which takes well under a millisecond. Bolt's
default would run it on an executor while the request's thread polls for the ack every 10 ms: under
500 concurrent clicks that cost the bot process 1.4 ms of CPU per click instead of 0.9 ms, and the acks'
p99 1.4x a bare Bolt app's instead of 0.9x (bench/approvals.py). An event whose job cannot be stored
is answered 500, so Slack delivers it again.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading

from slack_bolt import App, BoltRequest, BoltResponse
from slack_bolt.adapter.wsgi import SlackRequestHandler
from slack_bolt.error import BoltError
from slack_sdk import WebClient

from bot.approvals.service import APPROVE, CANCEL, DENY
from bot.changes.service import ROLLBACK_LAST
from bot.frame.config import ConfigError
from bot.stack.health import NEXT_LOGS, NEXT_RESTART
from bot.jobs.queue import ReplayedRequest
from bot.jobs.runner import RunnerProcesses
from bot.adapters.slack.manifest import TIMELINE_SHORTCUT
from bot.frame.registry import Invocation
from bot.runtime import Runtime
from bot.adapters.slack.client import SlackNotifier
from bot.adapters.slack.http import GuardedChannel, Sightings, SlackRequestGuard

log = logging.getLogger(__name__)

_VERBS = {APPROVE: "approve", DENY: "deny", CANCEL: "cancel"}
# A failing /health line's buttons (bot/stack/health.py): the command the button's label shows, for the service in its value.
_NEXT_STEPS = {NEXT_LOGS: ("logs", "{} --since 15m"), NEXT_RESTART: ("restart", "{}")}
_SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class SlackAdapter:
    """Translates slash commands and button clicks into job rows; runner processes do the rest."""

    def __init__(self, runtime: Runtime, client: WebClient, *, http_mode: bool):
        settings = runtime.settings
        if http_mode and settings.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET: not set; HTTP mode cannot verify Slack's requests without it")
        self.runtime = runtime
        self.client = client
        self.sightings = Sightings()
        try:
            # In HTTP mode the guard in front of Bolt (bot/adapters/slack/http.py) verifies every request before it is
            # parsed; Bolt's own check would log a failed request's whole body. Socket Mode needs none.
            self.app = App(
                client=client,
                signing_secret=settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None,
                request_verification_enabled=False,
                process_before_response=True,  # the listener on the request's thread (above)
            )
        except BoltError as error:
            raise ConfigError(f"SLACK_BOT_TOKEN: Slack did not accept it ({error})") from None
        except Exception as error:  # Bolt checks the token with auth.test: Slack unreachable
            raise ConfigError(
                f"FLOWSTATE_SLACK_API_URL: Slack cannot be reached at {settings.slack_api_url} to check the token "
                f"({type(error).__name__})"
            ) from None
        runtime.notifier = SlackNotifier(client)  # the supervisor tells channels about interrupted jobs
        runtime.slack = client
        self.runners = RunnerProcesses(settings, runtime.stack.config, runtime)
        runtime.wake = self.runners.notify
        # One listener for every command, matched first: Bolt tries its listeners one by one for each request.
        self._by_slash = {cmd.slash: cmd for cmd in runtime.commands.values()}
        self.app.command(re.compile(r"^/[a-z0-9_-]+$"))(self._on_command)
        for action_id in _VERBS:
            self.app.action(action_id)(self._on_click)
        for action_id in _NEXT_STEPS:
            self.app.action(action_id)(self._on_next_step)
        self.app.action(ROLLBACK_LAST)(self._on_rollback)
        self.app.event("reaction_added")(self._on_reaction)
        self.app.shortcut(TIMELINE_SHORTCUT)(self._on_timeline_shortcut)

    def _queue(self, ack, invocation: Invocation, response_url: str | None, dedupe_key: str | None, request: BoltRequest,
               *, redelivered: bool = False) -> BoltResponse | None:
        """The job row first, then the ack: an acknowledged command is never lost. The request's signature
        (HTTP mode) is remembered in the same commit, for the replay guard (bot/adapters/slack/http.py). When the row
        cannot be stored, a command's ack says so in one sentence; an event (`redelivered`: Slack delivers it again
        until it is answered 200, and shows nobody an ack) is answered 500."""
        signature = (request.headers.get("x-slack-signature") or [None])[0]  # Socket Mode's carry none
        if not self.sightings.take(signature):
            signature = None
        try:
            self.runtime.jobs.submit(invocation, response_url=response_url, dedupe_key=dedupe_key, signature=signature)
        except ReplayedRequest:
            self.sightings.replayed(signature)  # the guard answers 401
            ack()
            return None
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("could not queue /%s [error id %s]", invocation.command, error_id)
            if redelivered:
                return BoltResponse(status=500, body="")
            ack(text=f"/{invocation.command} was not run: the bot's database is not answering (error id {error_id}).")
            return None
        ack()
        self.runtime.wake()
        return None

    def _on_command(self, ack, command: dict, request: BoltRequest) -> None:
        slash = str(command.get("command", ""))
        cmd = self._by_slash.get(slash)
        invocation = Invocation(
            user_id=str(command.get("user_id", "")),
            command=cmd.name if cmd else slash.lstrip("/")[:64],  # an unknown one: the dispatcher says so
            text=str(command.get("text", "")).strip(),
            channel_id=command.get("channel_id"),
            source="slack",
        )
        trigger = command.get("trigger_id")
        self._queue(ack, invocation, command.get("response_url"), f"cmd:{trigger}" if trigger else None, request)

    def _on_click(self, ack, body: dict, action: dict, request: BoltRequest) -> None:
        """A button is `/approvals VERB ID` typed by the clicker: the same checks, the same audit."""
        value = str(action.get("value", ""))
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        invocation = Invocation(
            user_id=str((body.get("user") or {}).get("id", "")),
            command="approvals",
            text=f"{_VERBS[action['action_id']]} {value}",
            channel_id=channel,
            source="slack",
        )
        if not re.fullmatch(r"[1-9][0-9]{0,9}", value):  # our buttons carry a request number and nothing else
            ack()
            self._tampered(invocation, body.get("response_url"))
            return
        trigger = body.get("trigger_id") or f"{action.get('action_ts')}:{invocation.user_id}"
        self._queue(ack, invocation, body.get("response_url"), f"click:{trigger}", request)

    def _on_next_step(self, ack, body: dict, action: dict, request: BoltRequest) -> None:
        """A next-step button is its command typed by the clicker: /restart goes through the role check and approvals."""
        value = str(action.get("value", ""))
        command, text = _NEXT_STEPS[action["action_id"]]
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        user = str((body.get("user") or {}).get("id", ""))
        invocation = Invocation(user_id=user, command=command, text=text.format(value), channel_id=channel, source="slack")
        if not _SERVICE_NAME.fullmatch(value):  # our buttons carry a service name and nothing else
            ack()
            self._tampered(invocation, body.get("response_url"), "a service name", "a /health report")
            return
        trigger = body.get("trigger_id") or f"{action.get('action_ts')}:{user}"
        self._queue(ack, invocation, body.get("response_url"), f"click:{trigger}", request)

    def _on_rollback(self, ack, body: dict, action: dict, request: BoltRequest) -> None:
        """The change card's button is /rollback typed by the clicker: the role check, the approval and the audit as typed."""
        channel = (body.get("container") or {}).get("channel_id") or (body.get("channel") or {}).get("id")
        user = str((body.get("user") or {}).get("id", ""))
        invocation = Invocation(user_id=user, command="rollback", text="", channel_id=channel, source="slack")
        if action.get("value") != "last":  # our button carries this word and nothing else
            ack()
            self._tampered(invocation, body.get("response_url"), "the last release", "a change card")
            return
        trigger = body.get("trigger_id") or f"{action.get('action_ts')}:{user}"
        self._queue(ack, invocation, body.get("response_url"), f"click:{trigger}", request)

    def _on_reaction(self, ack, body: dict, event: dict, request: BoltRequest) -> BoltResponse | None:
        """The incident emoji on a message in a channel with an open incident: that message joins its timeline."""
        item = event.get("item") or {}
        reaction = str(event.get("reaction", "")).split("::")[0]  # without a skin tone
        channel, ts = item.get("channel"), str(item.get("ts", ""))
        if reaction != self.runtime.settings.incident_emoji or item.get("type") != "message" or not channel:
            return
        if not re.fullmatch(r"\d{1,12}\.\d{1,6}", ts):
            return None
        try:
            open_incident = self.runtime.incidents.timeline.open_id(channel)
        except Exception:
            log.exception("could not read the open incident of %s for a pin; Slack will deliver it again", channel)
            return BoltResponse(status=500, body="")
        if open_incident is None:
            return None  # a pin anywhere else is just a reaction
        invocation = Invocation(str(event.get("user", "")), "incident", f"add-message {ts} reaction", channel, "slack")
        return self._queue(ack, invocation, None, f"event:{body.get('event_id')}", request, redelivered=True)

    def _on_timeline_shortcut(self, ack, body: dict, request: BoltRequest) -> None:
        message = body.get("message") or {}
        invocation = Invocation(
            user_id=str((body.get("user") or {}).get("id", "")),
            command="incident",
            text=f"add-message {message.get('ts', '')} shortcut",
            channel_id=(body.get("channel") or {}).get("id"),
            source="slack",
        )
        trigger = body.get("trigger_id") or f"{message.get('ts')}:{invocation.user_id}"
        self._queue(ack, invocation, body.get("response_url"), f"shortcut:{trigger}", request)

    def _tampered(self, invocation: Invocation, response_url: str | None, expected: str = "a request number", owner: str = "a request") -> None:
        from bot.frame.registry import Reply
        from bot.adapters.slack.client import deliver

        log.warning("a click from %s carried a button value that is not %s", invocation.user_id[:64], expected)
        try:
            self.runtime.audit.record(invocation, "rejected", error=f"the button's value is not {expected}")
        except Exception:
            log.exception("audit write failed for a tampered click")
        # Not on the request's thread: the answer to Slack goes when the listener returns, and a delivery may wait for
        # Slack (up to a minute) while Slack waits 3 s for its answer.
        reply = Reply(f"That button does not belong to {owner} of this bot; nothing changed.")
        threading.Thread(target=deliver, args=(self.client, invocation, response_url, reply), name="tampered-reply", daemon=True).start()

    def http_server(self, host: str, port: int, threads: int = 8):
        """A waitress server for POST /slack/events only (its threads ack Slack; /metrics has a port of its own);
        `.run()` serves, `.close()` stops."""
        import waitress.server

        settings = self.runtime.settings
        guarded = SlackRequestGuard(
            SlackRequestHandler(self.app),
            settings.slack_signing_secret.get_secret_value(),
            self.runtime.store,
            settings.max_body_bytes,
            self.sightings,
        )
        # Waitress refuses a Content-Length at or over its limit before reading a byte of the body.
        server = waitress.server.create_server(
            guarded, host=host, port=port, threads=threads, ident="flowstate-bot", max_request_body_size=settings.max_body_bytes + 1
        )
        server.channel_class = GuardedChannel
        return server

    def shutdown(self) -> None:
        self.runners.shutdown()
