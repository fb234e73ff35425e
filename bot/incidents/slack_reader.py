"""What the incidents read from and write to Slack: a channel's history with its threads, one message,
people's names, permalinks, and the post-mortem file (Slack's external upload flow).

Reading runs in a runner process, never on the path that acknowledges Slack; a 429 is waited out for as
long as Retry-After says (up to a minute), since nobody is waiting on a button.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Iterable, Iterator

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.incidents.when import ts_of
from bot.adapters.slack.client import patient_client
from bot.frame.publish import upload_text

log = logging.getLogger(__name__)

PAGE = 999  # Slack's largest page of history or replies


def _ts_key(message: dict) -> tuple[int, int]:
    seconds, _, fraction = message["ts"].partition(".")
    return int(seconds), int((fraction + "000000")[:6])


class SlackReader:
    def __init__(self, client: WebClient):
        self._client = patient_client(client)
        self._names: dict[str, str] = {}
        self._me: dict | None = None

    # ---- who we are ------------------------------------------------------------------------------

    def me(self) -> dict:
        """The bot's own user and bot ids and the workspace URL (once)."""
        if self._me is None:
            answer = self._client.auth_test()
            self._me = {"user_id": answer.get("user_id"), "bot_id": answer.get("bot_id"), "url": answer.get("url") or ""}
        return self._me

    def is_ours(self, message: dict) -> bool:
        me = self.me()
        return bool(message.get("bot_id") and message.get("bot_id") == me["bot_id"]) or message.get("user") == me["user_id"]

    def permalink_of(self, channel: str, message: dict) -> str | None:
        """Built from the workspace URL as Slack builds it: one call per import, not one per message."""
        url = self.me()["url"]
        if not url:
            return None
        link = f"{url.rstrip('/')}/archives/{channel}/p{message['ts'].replace('.', '')}"
        if message.get("thread_ts") and message["thread_ts"] != message["ts"]:
            link += f"?thread_ts={message['thread_ts']}&cid={channel}"
        return link

    # ---- reading ---------------------------------------------------------------------------------

    def _pages(self, method: str, **params) -> Iterator[list[dict]]:
        cursor = None
        while True:
            answer = getattr(self._client, method)(**params, limit=PAGE, **({"cursor": cursor} if cursor else {}))
            yield answer.get("messages") or []
            cursor = (answer.get("response_metadata") or {}).get("next_cursor")
            if not cursor or not answer.get("has_more", True):
                return

    def history(self, channel: str, oldest: datetime, latest: datetime) -> list[dict]:
        """Every message of the window, thread replies included, oldest first; each message once."""
        bounds = {"oldest": ts_of(oldest), "latest": ts_of(latest), "inclusive": True}
        found: dict[str, dict] = {}
        for page in self._pages("conversations_history", channel=channel, **bounds):
            for message in page:
                found[message["ts"]] = message
                if message.get("reply_count") and message.get("thread_ts") == message["ts"]:
                    for reply in self.thread(channel, message["ts"], **bounds):
                        found.setdefault(reply["ts"], reply)
        return sorted(found.values(), key=_ts_key)

    def thread(self, channel: str, ts: str, **bounds) -> list[dict]:
        """The replies of a thread (not its parent)."""
        return [m for page in self._pages("conversations_replies", channel=channel, ts=ts, **bounds) for m in page if m["ts"] != ts]

    def message(self, channel: str, ts: str) -> tuple[dict, list[dict]] | None:
        """One message (a thread reply too) and, if it starts a thread, its replies; None when it is gone."""
        try:
            thread = [m for page in self._pages("conversations_replies", channel=channel, ts=ts) for m in page]
        except SlackApiError as error:
            if error.response.get("error") in ("thread_not_found", "message_not_found"):
                return None
            raise
        found = next((m for m in thread if m["ts"] == ts), None)
        if found is None:
            return None
        replies = [m for m in thread if m["ts"] != ts] if found.get("thread_ts") == ts else []
        return found, replies

    def permalink(self, channel: str, ts: str) -> str | None:
        try:
            return self._client.chat_getPermalink(channel=channel, message_ts=ts).get("permalink")
        except SlackApiError as error:
            log.warning("no permalink for %s/%s: %s", channel, ts, error.response.get("error"))
            return None

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        """Display names, each looked up once for the life of this reader; an unknown user keeps their id."""
        for user_id in user_ids:
            if user_id in self._names:
                continue
            try:
                user = self._client.users_info(user=user_id)["user"]
                profile = user.get("profile") or {}
                self._names[user_id] = profile.get("display_name") or user.get("real_name") or user.get("name") or user_id
            except SlackApiError as error:
                log.warning("no name for %s: %s", user_id, error.response.get("error"))
                self._names[user_id] = user_id
        return dict(self._names)

    # ---- writing ---------------------------------------------------------------------------------

    def upload(self, channel: str, filename: str, title: str, content: str | bytes, comment: str) -> str | None:
        return upload_text(self._client, channel, filename, title, content, comment)

    def upload_files(self, channel: str, files: list[tuple[str, str, str]], comment: str) -> list[str]:
        """Text files (filename, title, content) posted to a channel in one message (slack_sdk's v2 flow, one
        files.getUploadURLExternal each, one files.completeUploadExternal)."""
        uploads = [{"filename": filename, "title": title, "content": content} for filename, title, content in files]
        answer = self._client.files_upload_v2(channel=channel, file_uploads=uploads, initial_comment=comment)
        return [f.get("id") for f in answer.get("files") or []]
