"""Faults a test injects at a change's step boundary (bot/frame/faults.py), on real parts.

- The bot's store unavailable: another connection holds SQLite's write lock (`BEGIN EXCLUSIVE`) for a few
  seconds, longer than the store's busy timeout (shortened here to 1 s, so the test need not wait 30 s).
- The Docker engine unavailable: the bot's client is pointed at a socket that refuses.
- Slack answering 500 or 429 to every call (the Web API double is told to).
"""

from __future__ import annotations

import socket
import sqlite3
import threading
from pathlib import Path

from bot.store.engine import make_engine

BUSY_SECONDS = 1.0  # the store's busy timeout in these tests
LOCKED_SECONDS = 3.0  # how long the store stays locked: several busy timeouts


def short_busy_timeout(runtime, seconds: float = BUSY_SECONDS) -> None:
    """The runtime's store gives up on a locked SQLite file after `seconds` (BUSY_SECONDS) instead of 30 s."""
    engine = make_engine(str(runtime.store.engine.url), busy_seconds=seconds)
    runtime.store.engine.dispose()
    runtime.store.engine = engine
    runtime.store.session.configure(bind=engine)


class StoreLock:
    """Holds the store's write lock for `seconds` from another connection, as another process would."""

    def __init__(self, runtime, seconds: float = LOCKED_SECONDS):
        self.path = runtime.store.engine.url.database
        self.seconds = seconds
        self.taken = threading.Event()
        self.thread: threading.Thread | None = None

    def __call__(self, _point: str | None = None) -> None:
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()
        assert self.taken.wait(10), "the store's lock was not taken"

    def _hold(self) -> None:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            self.taken.set()
            threading.Event().wait(self.seconds)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()


class RefusingDocker:
    """Points the runtime's Docker client at a unix socket nobody listens on: every call is refused."""

    def __init__(self, runtime, tmp_path: Path):
        self.runtime = runtime
        self.path = tmp_path / "refusing-docker.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))  # bound, never listening: connect() is refused

    def __call__(self, _point: str | None = None) -> None:
        stack = self.runtime.stack.compose  # as if FLOWSTATE_DOCKER_URL named it: the next call connects anew
        stack._docker_url, stack._client = f"unix://{self.path}", None


class SlackFailing:
    """From the fault on, every Web API call answers HTTP 500 (`status=500`) or 429 with Retry-After 1."""

    METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral")

    def __init__(self, double, status: int):
        self.double, self.status = double, status

    def __call__(self, _point: str | None = None) -> None:
        for method in self.METHODS:
            if self.status == 429:
                self.double.ratelimit_next(method, retry_after=1, times=1000)
            else:
                self.double.server_error_next(method, status=self.status, times=1000)
