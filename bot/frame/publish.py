"""The output edge: every reply and every channel message is redacted here, once, on its way out.

A `Publisher` is where one request's progress and reply go: the command's response_url (Slack), the
request's message updated in place (an approved change), the terminal (the console), or the caller
(a duty, a test: `Returned`). The pipeline's publish step redacts before it hands anything to one.
Channel messages that are not a reply (a request's message, a duty's post, a break-glass warning) go
through `RedactedNotifier`, the same redaction in front of the Slack notifier.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Protocol

from bot.frame import blocks

from bot.frame.redact import redact, redact_value
from bot.frame.registry import Notifier, Reply  # Notifier: the port, declared with the reply it carries

log = logging.getLogger(__name__)


def redacted(reply: Reply) -> Reply:
    return dataclasses.replace(reply, text=redact(reply.text), blocks=redact_value(reply.blocks))


class Publisher(Protocol):
    def progress(self, text: str) -> None:
        """A progress line of the running command (already redacted)."""

    def publish(self, reply: Reply) -> None:
        """The request's one reply (already redacted)."""


class Returned:
    """The reply is the caller's (run() returns it): nothing is sent anywhere; progress lines go to `progress`."""

    def __init__(self, progress: Callable[[str], None] | None = None):
        self._progress = progress

    def progress(self, text: str) -> None:
        if self._progress is not None:
            self._progress(text)

    def publish(self, reply: Reply) -> None:
        pass


class RedactedNotifier:
    """A notifier whose every message is redacted first: no domain redacts what it posts."""

    def __init__(self, notifier: Notifier):
        self.notifier = notifier

    def post(self, channel: str, reply: Reply) -> str | None:
        return self.notifier.post(channel, redacted(reply))

    def update(self, channel: str, ts: str, reply: Reply) -> None:
        self.notifier.update(channel, ts, redacted(reply))


def direct_message(slack, messages: Notifier | None, user_id: str, text: str) -> bool:
    """A direct message to a person (conversations.open, then a post there, redacted by MESSAGES); none in the console
    (no Slack) and none to a non-person. False when it could not be sent (logged)."""
    if slack is None or messages is None or not user_id.startswith(("U", "W")):
        return False
    try:
        channel = slack.conversations_open(users=user_id)["channel"]["id"]
        messages.post(channel, Reply(text, [blocks.section(text)]))
    except Exception:
        log.exception("could not send a direct message to %s", user_id)
        return False
    return True


def direct_file(slack, user_id: str, filename: str, title: str, content: str, comment: str) -> str | None:
    """A text file only `user_id` sees, in the bot's direct message with them (conversations.open, im:write; then
    files_upload_v2, slack_sdk's three-step upload): the port a command uses for what is too long for its reply, so
    that commands do not import the Slack adapter. `slack` is the Web API client the context carries. The content
    is the caller's to redact (/logs redacts each line as it reads it); Slack's errors are raised as they come."""
    channel = slack.conversations_open(users=user_id)["channel"]["id"]
    return upload_text(slack, channel, filename, title, content, comment)


def upload_text(slack, channel: str, filename: str, title: str, content: str | bytes, comment: str) -> str | None:
    """A file (text, or a chart's PNG) posted to a channel: files.getUploadURLExternal, the bytes, files.completeUploadExternal (slack_sdk's v2 flow)."""
    answer = slack.files_upload_v2(channel=channel, filename=filename, title=title, content=content, initial_comment=comment)
    return (answer.get("file") or {}).get("id")
