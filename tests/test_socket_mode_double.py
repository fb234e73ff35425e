"""The Socket Mode double delivers as Slack does to an app with several connections: each envelope to
exactly one of them, spread over all, and again to another one when nobody acks it in time."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
from slack_sdk import WebClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.socket_mode_double import MAX_CONNECTIONS, SocketModeDouble

APP_TOKEN = "xapp-1-A0APP-1-double-test"


@pytest.fixture
def socket_mode(slack_double):
    with SocketModeDouble(slack_double) as double:
        yield double


class Client:
    """A Socket Mode client on one connection: reads its envelopes and acks them unless told not to."""

    def __init__(self, socket_mode, slack_double, *, ack: bool = True):
        url = WebClient(token=APP_TOKEN, base_url=slack_double.api_url).apps_connections_open(app_token=APP_TOKEN)["url"]
        self._exit = contextlib.ExitStack()
        self.connection: ClientConnection = self._exit.enter_context(connect(url))
        assert json.loads(self.connection.recv(timeout=5))["type"] == "hello"
        self.envelopes: list[dict] = []
        self._ack = ack
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.connection:
                envelope = json.loads(message)
                self.envelopes.append(envelope)
                if self._ack and "envelope_id" in envelope:
                    self.connection.send(json.dumps({"envelope_id": envelope["envelope_id"]}))
        except Exception:
            pass

    def close(self) -> None:
        self._exit.close()
        self._thread.join(timeout=5)


def _slash(socket_mode, slack_double, n: int, **kwargs) -> str:
    return socket_mode.send_slash("/whoami", "", "U0ONE", response_url=slack_double.response_url(f"r{n}"), **kwargs)


def test_each_envelope_goes_to_exactly_one_of_three_connections_and_all_three_get_some(socket_mode, slack_double):
    clients = [Client(socket_mode, slack_double) for _ in range(3)]
    try:
        sent = [_slash(socket_mode, slack_double, n) for n in range(30)]
        for envelope_id in sent:
            socket_mode.wait_for_ack(envelope_id, timeout=10)
        seen = [envelope["envelope_id"] for client in clients for envelope in client.envelopes]
        assert sorted(seen) == sorted(sent), "every envelope reached one connection, none reached two"
        assert all(client.envelopes for client in clients), "spread over every connection, as Slack does"
        assert all(len(socket_mode.deliveries(envelope_id)) == 1 for envelope_id in sent)
    finally:
        for client in clients:
            client.close()


def test_an_envelope_nobody_acks_is_redelivered_to_another_connection_once(socket_mode, slack_double):
    silent = Client(socket_mode, slack_double, ack=False)
    answering = Client(socket_mode, slack_double)
    try:
        envelope_id = "env-retry-1"
        envelope = {"envelope_id": envelope_id, "type": "events_api", "payload": {}, "retry_attempt": 0, "retry_reason": ""}
        assert socket_mode.send_envelope(envelope, to=1, redeliver_after=0.5) == 1
        socket_mode.wait_for_ack(envelope_id, timeout=10)
        assert socket_mode.deliveries(envelope_id) == [1, 2]
        assert socket_mode.acked_on(envelope_id) == [2]
        (retried,) = answering.envelopes
        assert (retried["retry_attempt"], retried["retry_reason"]) == (1, "timeout")
        assert [e["retry_attempt"] for e in silent.envelopes] == [0]
    finally:
        silent.close()
        answering.close()


def test_an_eleventh_connection_is_refused(socket_mode, slack_double):
    clients = [Client(socket_mode, slack_double) for _ in range(MAX_CONNECTIONS)]
    try:
        url = WebClient(token=APP_TOKEN, base_url=slack_double.api_url).apps_connections_open(app_token=APP_TOKEN)["url"]
        with pytest.raises(InvalidStatus) as refused:
            with connect(url):
                pass
        assert refused.value.response.status_code == 429
        assert socket_mode.connections == MAX_CONNECTIONS
    finally:
        for client in clients:
            client.close()
