"""A stand-in for Slack's Socket Mode WebSocket endpoint, served on 127.0.0.1.

``SocketModeDouble(slack_double)`` teaches the Web API double ``apps.connections.open``: each call
issues a fresh ticket and answers ``{"ok": true, "url": "ws://127.0.0.1:<port>/link/?ticket=...&app_id=..."}``,
shaped like Slack's ``wss://wss-primary.slack.com/link/?ticket=...&app_id=...``. A client that
connects with an issued ticket gets Slack's ``hello``; the test then pushes envelopes with
``send_slash`` and reads the client's acknowledgements with ``wait_for_ack``.

Plain ``ws://`` on purpose: slack_sdk's built-in client (the one Bolt's SocketModeHandler uses)
opens TLS only when the URL's port is 443 and talks plain TCP on any other port, whatever the
scheme, so a loopback server on an ephemeral port needs no certificate.

Choices where Slack is vague or where a stand-in must pick one behaviour:
- A ticket that ``apps.connections.open`` never issued is refused with HTTP 404 at the handshake.
  A ticket may be used more than once (Slack documents it as short-lived, not as single-use).
- An app holds up to ten connections at once (``MAX_CONNECTIONS``, as Slack allows); an eleventh handshake
  is refused with HTTP 429. Several bot replicas each hold their own.
- Each envelope goes to exactly ONE open connection, picked at random (seeded, so a run is repeatable),
  as Slack spreads an app's events over its connections. An envelope sent with ``redeliver_after`` that
  is not acked within that many seconds is sent again to another open connection (``retry_attempt`` and
  ``retry_reason`` set, as on Slack's retries), up to ``max_retries`` times.
- Slash-command payload values are strings, ``is_enterprise_install`` included, as Slack sends them.
- The server pings every 20 s (websockets' default keepalive), as Slack's servers ping too.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from tests.loopback import LoopbackServer
from tests.slack_signing import slash_fields


MAX_CONNECTIONS = 10  # Slack's limit of simultaneous Socket Mode connections per app


@dataclass(frozen=True)
class Received:
    """One text frame the client sent, parsed when it was JSON (else ``data`` is the raw text)."""

    data: Any
    time: float  # time.monotonic() at arrival
    connection: int = 0  # the serial number (1, 2, ...) of the connection it came on


class SocketModeDouble(LoopbackServer):
    def __init__(self, slack_double, *, host_label: str = "applink-double-1", seed: int = 10):
        self.slack = slack_double
        self.host_label = host_label
        self._cond = threading.Condition()
        self._tickets: set[str] = set()
        self._open: list[ServerConnection] = []
        self._serial: dict[ServerConnection, int] = {}
        self._random = random.Random(seed)
        self._deliveries: dict[str, list[int]] = {}  # envelope_id -> serials of the connections it went to
        self._accepted = 0
        self._close_codes: list[int | None] = []
        self._received: list[Received] = []
        self._sent_at: dict[str, float] = {}  # envelope_id -> time.monotonic() when sent
        self._acks: dict[str, tuple[dict[str, Any], float]] = {}  # envelope_id -> (ack, monotonic time)

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> SocketModeDouble:
        super().start()
        self.slack.answer("apps.connections.open", self._connections_open)
        return self

    def _make_server(self) -> Server:
        return serve(
            self._serve_connection,
            "127.0.0.1",
            0,
            process_request=self._check_ticket,
            compression=None,  # Slack's client asks for no extensions; keep frames plain either way
        )

    # ---------------------------------------------------------------- what the bot sees

    def _connections_open(self, _params: dict[str, Any]) -> dict[str, Any]:
        # Runs inside the Web API double with its lock held: touch only this double's state.
        ticket = secrets.token_hex(16)
        with self._cond:
            self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.slack.app_id}"}

    def _check_ticket(self, connection: ServerConnection, request) -> Any:
        url = urlsplit(request.path)
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        with self._cond:
            known = ticket in self._tickets
        if url.path != "/link/" or not known:
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown ticket\n")
        with self._cond:
            full = len(self._open) >= MAX_CONNECTIONS
        if full:
            return connection.respond(HTTPStatus.TOO_MANY_REQUESTS, "too many connections for this app\n")
        return None

    def _serve_connection(self, connection: ServerConnection) -> None:
        with self._cond:
            self._open.append(connection)
            self._accepted += 1
            self._serial[connection] = self._accepted
            count = len(self._open)
            self._cond.notify_all()
        try:
            connection.send(
                json.dumps(
                    {
                        "type": "hello",
                        "num_connections": count,
                        "debug_info": {
                            "host": self.host_label,
                            "build_number": 1,
                            "approximate_connection_time": 18060,
                        },
                        "connection_info": {"app_id": self.slack.app_id},
                    }
                )
            )
            for message in connection:
                self._on_client_message(message, self._serial[connection])
        except ConnectionClosed:
            pass  # the client went away (a bot stopped with SIGTERM does not say goodbye)
        finally:
            with self._cond:
                self._open.remove(connection)
                self._close_codes.append(connection.close_code)
                self._cond.notify_all()

    def _on_client_message(self, message: str | bytes, serial: int) -> None:
        now = time.monotonic()
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        with self._cond:
            self._received.append(Received(data, now, serial))
            if isinstance(data, dict) and isinstance(data.get("envelope_id"), str):
                self._acks.setdefault(data["envelope_id"], (data, now))
            self._cond.notify_all()

    # ---------------------------------------------------------------- driving it

    def send_slash(
        self,
        command: str,
        text: str,
        user_id: str,
        channel_id: str = "C0INCIDENT",
        *,
        response_url: str,
        user_name: str | None = None,
        channel_name: str | None = None,
        trigger_id: str | None = None,
        to: int | None = None,
        **extra: str,
    ) -> str:
        """Push a ``slash_commands`` envelope to one open connection (``to``: its serial; default a random
        one); returns its envelope_id. ``extra`` adds or overrides payload fields.
        """
        envelope_id = str(uuid.uuid4())
        payload = slash_fields(
            command,
            text,
            user_id,
            channel_id,
            response_url=response_url,
            token="legacy-verification-token",
            team_id=self.slack.team_id,
            team_domain=self.slack.team_domain,
            api_app_id=self.slack.app_id,
            user_name=user_name,
            channel_name=channel_name,
            trigger_id=trigger_id,
            **extra,
        )
        envelope = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": "slash_commands",
            "accepts_response_payload": True,
        }
        self.send_envelope(envelope, to=to)
        return envelope_id

    def send_envelope(
        self, envelope: dict[str, Any], *, to: int | None = None, redeliver_after: float | None = None, max_retries: int = 3
    ) -> int:
        """Push any message (an envelope with an ``envelope_id``, or e.g. ``{"type": "disconnect", ...}``) to ONE
        open connection: the one with serial ``to``, else a random one. Returns the serial it went to.

        With ``redeliver_after``, an envelope not acked within that many seconds goes again to another open
        connection (Slack's retry), at most ``max_retries`` times."""
        with self._cond:
            connection = self._pick(to)
            serial = self._serial[connection]
            envelope_id = envelope.get("envelope_id")
            if envelope_id is not None:
                self._sent_at.setdefault(envelope_id, time.monotonic())
                self._deliveries.setdefault(envelope_id, []).append(serial)
        connection.send(json.dumps(envelope))
        if envelope_id is not None and redeliver_after is not None and max_retries > 0:
            threading.Thread(
                target=self._redeliver, args=(envelope, redeliver_after, max_retries), name="SocketModeRetry", daemon=True
            ).start()
        return serial

    def _pick(self, to: int | None) -> ServerConnection:
        if not self._open:
            raise AssertionError(f"SocketModeDouble: no open connection to send to ({self._accepted} ever accepted)")
        if to is None:
            return self._random.choice(self._open)
        for connection in self._open:
            if self._serial[connection] == to:
                return connection
        raise AssertionError(f"SocketModeDouble: connection {to} is not open")

    def _redeliver(self, envelope: dict[str, Any], after: float, retries: int) -> None:
        envelope_id = envelope["envelope_id"]
        for attempt in range(1, retries + 1):
            with self._cond:
                if self._cond.wait_for(lambda: envelope_id in self._acks, after):
                    return
                tried = set(self._deliveries[envelope_id])
                others = [c for c in self._open if self._serial[c] not in tried] or list(self._open)
                if not others:
                    return
                connection = self._random.choice(others)
                self._deliveries[envelope_id].append(self._serial[connection])
            retry = {**envelope, "retry_attempt": attempt, "retry_reason": "timeout"}
            try:
                connection.send(json.dumps(retry))
            except ConnectionClosed:
                pass

    # ---------------------------------------------------------------- inspection

    @property
    def connections(self) -> int:
        """Connections open now (handshake done, not yet closed)."""
        with self._cond:
            return len(self._open)

    @property
    def accepted(self) -> int:
        """Connections ever accepted, closed ones included."""
        with self._cond:
            return self._accepted

    @property
    def close_codes(self) -> list[int | None]:
        """The close code of each connection that ended, in order: 1000 for a client's clean close,
        1001 for ``stop()``, 1006 when the TCP connection just dropped (no close frame)."""
        with self._cond:
            return list(self._close_codes)

    def deliveries(self, envelope_id: str) -> list[int]:
        """The serials of the connections an envelope was sent to, in order (more than one: it was redelivered)."""
        with self._cond:
            return list(self._deliveries.get(envelope_id, []))

    def acked_on(self, envelope_id: str) -> list[int]:
        """The serials of the connections that acked this envelope, in order."""
        with self._cond:
            return [r.connection for r in self._received if isinstance(r.data, dict) and r.data.get("envelope_id") == envelope_id]

    @property
    def received(self) -> list[Received]:
        """Every text frame the client sent, in arrival order."""
        with self._cond:
            return list(self._received)

    def wait_for_connection(self, count: int = 1, timeout: float = 20.0) -> None:
        """Block until ``count`` connections were accepted in all."""
        with self._cond:
            if self._cond.wait_for(lambda: self._accepted >= count, timeout):
                return
            accepted = self._accepted
        # Outside this double's lock: the Web API double takes its own lock, then ours.
        opened = len(self.slack.calls_to("apps.connections.open"))
        raise AssertionError(
            f"SocketModeDouble: waited {timeout}s for {count} connection(s), got {accepted}; "
            f"apps.connections.open was called {opened} time(s)"
        )

    def wait_for_ack(self, envelope_id: str, timeout: float = 20.0) -> tuple[dict[str, Any], float]:
        """Block until the client acknowledged ``envelope_id``; returns (ack, seconds from send to ack)."""
        with self._cond:
            if not self._cond.wait_for(lambda: envelope_id in self._acks, timeout):
                raise AssertionError(
                    f"SocketModeDouble: waited {timeout}s for the ack of envelope {envelope_id}; "
                    f"open connections: {len(self._open)}; the client sent: {[r.data for r in self._received]}"
                )
            ack, at = self._acks[envelope_id]
            return ack, at - self._sent_at.get(envelope_id, at)
