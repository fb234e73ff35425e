"""PostgreSQL's LISTEN/NOTIFY as a runner's wake-up: a job stored by any replica wakes every runner at once.

The process that queues a job NOTIFYs queue.WAKE_CHANNEL just after its commit (its token as the payload); each
runner process keeps one connection LISTENing on it, and skips the NOTIFYs of the bot process whose doorbell rings it. A connection that drops is made again, and the runner looks for jobs then, since
a NOTIFY sent meanwhile is lost (the runner's slow poll is the last safety net). On SQLite there is one bot
process, whose doorbell wakes its runners: nothing to listen to.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bot.jobs.queue import WAKE_CHANNEL
from bot.store.engine import normalize_url
from bot.jobs.outage import OutageLog

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 2.0


class NotifiedWakeups:
    def __init__(self, database_url: str, wake: Callable[[], None], outage: OutageLog | None = None, rung_by: str | None = None):
        """`rung_by`: the announcer token (queue.ANNOUNCER_TOKEN) of the bot process that rings this runner's doorbell
        for every job it queues: its NOTIFYs wake nobody here a second time."""
        parsed = make_url(normalize_url(database_url))
        self._conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        self._wake = wake
        self._rung_by = rung_by
        self._outage = outage or OutageLog(log)  # a runner's own: an outage is said once per process
        self._closing = threading.Event()
        self._thread = None
        if parsed.get_backend_name() == "postgresql":
            self._thread = threading.Thread(target=self._listen, name="job-notifications", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        import psycopg

        while not self._closing.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5, application_name="flowstate-bot runner") as connection:
                    connection.execute(f"LISTEN {WAKE_CHANNEL}")
                    self._outage.ok()
                    self._wake()  # what was queued while this connection was not listening
                    while not self._closing.is_set():
                        for note in connection.notifies(timeout=1.0):
                            if self._rung_by is None or note.payload != self._rung_by:
                                self._wake()
            except Exception as error:
                if self._closing.is_set():
                    return
                try:  # the driver's error as SQLAlchemy's, which the outage log knows as "the database is down"
                    raise (DBAPIError.instance(None, None, error, psycopg.Error) if isinstance(error, psycopg.Error) else error) from None
                except Exception:
                    self._outage.failed("listening for queued jobs")
                self._closing.wait(RECONNECT_SECONDS)

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=3)
