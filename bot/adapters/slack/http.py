"""The HTTP door in front of Bolt: a capped body, the signature checked before anything is parsed, no replays.

Waitress refuses a body over the cap before reading it (its own limit, set to the cap); what gets
through is read whole (it is at most the cap), its Slack signature verified on the raw bytes, and the
signature remembered in the bot's database for Slack's 5-minute window, so a captured request sent again
is refused on every replica. Only then does Bolt see it. No body, and no header value, is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qs

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from bot.store.engine import SEEN_REQUEST, SeenRequest, Store, utcnow

log = logging.getLogger(__name__)

WINDOW_SECONDS = 300  # Slack's: a request signed longer ago than this is stale anyway


def _answer(start_response, status: str, text: str) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class Sightings:
    """Signatures of requests that their listener writes with the job it makes, in one commit.

    The guard expects a signature before Bolt sees the request, a listener takes it (and says if it was a
    replay), and the guard finishes it once Bolt has answered: a signature nobody took, the guard writes
    itself. Taking and finishing are one step each under a lock, so exactly one of them writes it."""

    EXPECTED, TAKEN, REPLAYED = "expected", "taken", "replayed"

    def __init__(self):
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}

    def expect(self, signature: str) -> None:
        with self._lock:
            self._states[signature] = self.EXPECTED

    def take(self, signature: str | None) -> bool:
        """True when the caller is to write this signature with its job (the guard expects it)."""
        with self._lock:
            if signature is None or self._states.get(signature) != self.EXPECTED:
                return False
            self._states[signature] = self.TAKEN
            return True

    def replayed(self, signature: str) -> None:
        with self._lock:
            if signature in self._states:
                self._states[signature] = self.REPLAYED

    def finish(self, signature: str) -> str:
        with self._lock:
            return self._states.pop(signature, self.EXPECTED)


class SlackRequestGuard:
    """WSGI middleware: only a signed, fresh, first-seen, well-formed request reaches the app behind it."""

    def __init__(self, app, signing_secret: str, store: Store, max_body: int, sightings: Sightings):
        self._app = app
        self._secret = signing_secret.encode()
        self._store = store
        self._max_body = max_body
        self._sightings = sightings

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "?")
        if environ.get("REQUEST_METHOD") != "POST":
            return _answer(start_response, "405 Method Not Allowed", "Slack posts its requests.")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= self._max_body:  # waitress already refused longer ones; this is a second lock
            log.warning("refused a request from %s: its body is not between 0 and %d bytes", peer, self._max_body)
            return _answer(start_response, "413 Payload Too Large", "Too large.")
        body = environ["wsgi.input"].read(length)
        timestamp = environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP")
        signature = environ.get("HTTP_X_SLACK_SIGNATURE")
        if not self._signed(body, timestamp, signature):
            log.warning("refused a request from %s: missing, wrong or stale Slack signature", peer)
            return _answer(start_response, "401 Unauthorized", "Invalid signature.")
        content_type = environ.get("CONTENT_TYPE", "")
        if not _well_formed(body, content_type):
            log.warning("refused a signed request from %s: its body is not what Slack sends", peer)
            return _answer(start_response, "400 Bad Request", "Malformed.")
        body = _bolt_safe(body, content_type)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return self._with_its_job(environ, start_response, signature, peer)

    def _with_its_job(self, environ, start_response, signature: str, peer: str):
        """The listener writes the request's signature with the job it makes, in one commit (the ack path's
        one write), and what it found, first sighting or replay, decides the answer. A signature no listener
        took (no job, a listener Bolt runs after its ack, or Bolt stopped waiting) is remembered here, unless the
        answer is a server error: nothing was stored, and Slack's redelivery (signed anew) is the way it lands."""
        answer: dict = {}

        def capture(status, headers, exc_info=None):
            answer.update(status=status, headers=headers)
            return lambda _data: None

        self._sightings.expect(signature)
        try:
            body = b"".join(self._app(environ, capture))
        finally:
            state = self._sightings.finish(signature)
        if state == Sightings.REPLAYED:
            return self._replay(peer, start_response)
        if state == Sightings.EXPECTED and not str(answer.get("status", "")).startswith("5"):
            refused = self._remember(signature, peer, start_response)
            if refused is not None:
                return refused
        start_response(answer["status"], answer["headers"])
        return [body]

    def _remember(self, signature: str, peer: str, start_response) -> list[bytes] | None:
        """None for a first sighting (now remembered); else the answer that refuses the request."""
        try:
            self._store.ack_writer.write((SEEN_REQUEST, {"signature": signature, "seen_at": utcnow()}))
            return None
        except IntegrityError:  # a signature is unique to its body and timestamp: a second sighting is a replay
            return self._replay(peer, start_response)
        except Exception:
            # Fail closed, but say so: Slack shows a slash command's plain-text answer to the caller.
            error_id = secrets.token_hex(4)
            log.exception("cannot check a request from %s for replay: the bot's database failed [error id %s]", peer, error_id)
            return _answer(start_response, "200 OK", f"Nothing was run: the bot's database is not answering (error id {error_id}).")

    @staticmethod
    def _replay(peer: str, start_response) -> list[bytes]:
        log.warning("refused a request from %s: a replay of a request already received", peer)
        return _answer(start_response, "401 Unauthorized", "Already received.")

    def _signed(self, body: bytes, timestamp: str | None, signature: str | None) -> bool:
        """Slack's scheme on the raw bytes (slack_sdk's verifier decodes them first and fails on non-UTF-8)."""
        if not timestamp or not signature or not timestamp.isdigit() or len(timestamp) > 12 or len(signature) > 100:
            return False
        if abs(time.time() - int(timestamp)) > WINDOW_SECONDS:
            return False
        expected = "v0=" + hmac.new(self._secret, b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, signature)


def forget_old_requests(store: Store) -> None:
    """Signatures older than twice Slack's window can go: such a request is refused as stale by its timestamp.
    (The runners call this with their sweep, so no ack ever waits for the DELETE.)"""
    with store.session.begin() as session:
        session.execute(delete(SeenRequest).where(SeenRequest.seen_at < utcnow() - timedelta(seconds=2 * WINDOW_SECONDS)))


def _bolt_safe(body: bytes, content_type: str) -> bytes:
    """Bolt reads any form body that contains the word "payload" as an interactive payload, so a slash
    command such as `/incident note payload service down` would vanish unanswered. The same form with that
    word percent-encoded (%70 is "p") means exactly the same, and Bolt reads it right. (The signature was
    checked on the bytes Slack sent; Bolt's own check is off.)"""
    if content_type.startswith("application/json") or b"payload" not in body:
        return body
    if "payload" in parse_qs(body.decode("utf-8"), keep_blank_values=True):
        return body  # a real interactive payload
    return body.replace(b"payload", b"%70ayload")


def _well_formed(body: bytes, content_type: str) -> bool:
    """UTF-8, and JSON where Slack sends JSON; a signed request that is not is refused here, not with a traceback."""
    try:
        text = body.decode("utf-8")
        if content_type.startswith("application/json"):
            json.loads(text)
        else:
            payload = parse_qs(text).get("payload")
            if payload:
                json.loads(payload[0])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


class _LoggedErrorTask(ErrorTask):
    """Waitress's own refusals (a body over the cap, a malformed request line) get one log line each."""

    def execute(self):
        error = self.request.error
        log.warning("refused a request from %s: %s (%s)", self.channel.addr[0] if self.channel.addr else "?", error.reason, error.body)
        super().execute()


class GuardedChannel(HTTPChannel):
    error_task_class = _LoggedErrorTask
