"""The trends: /stats' key metrics sampled once a minute into the bot's database, for charts (bot/stack/chart.py).

Every runner's sweep offers to sample the current minute; the replica whose INSERT of the minute's row goes in
measures it (what /stats measures, over the last minute) and stores one row per series. A metric that could not
be read is not stored: its minute is a gap, never a 0. Rows older than FLOWSTATE_SAMPLE_DAYS are deleted by the
same sweep, a batch of minutes at a time. A minute is stored as the whole minutes since 1970-01-01 UTC, so that a
window longer than the chart has pixel columns is read already decimated: the database gives each column's minimum
and maximum (GROUP BY), a few thousand rows for a week instead of 160,000.
"""

from __future__ import annotations

import logging
import threading
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from sqlalchemy import Float, Integer, String, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.stack.stats import Window, measure
from bot.store.engine import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    import numpy as np

    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

PRUNE_MINUTES = 60  # minutes of samples deleted per batch: a few hundred rows, a short transaction


class SampledMinute(Base):
    """A minute some replica claimed to sample: one row, one winner."""

    __tablename__ = "sampled_minutes"

    minute: Mapped[int] = mapped_column(Integer, primary_key=True)  # minutes since the epoch (minute_number)
    claimed_by: Mapped[str] = mapped_column(String(160))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MetricSample(Base):
    """One measured value of a series (edge_error_rate, backend_error_rate, cpu:SERVICE, mem:SERVICE, db_connections,
    queue_length) in one minute."""

    __tablename__ = "metric_samples"

    series: Mapped[str] = mapped_column(String(160), primary_key=True)
    minute: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    value: Mapped[float] = mapped_column(Float)


def _insert_ignoring(store: "Store", model: type[Base]):
    if store.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__).on_conflict_do_nothing()


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def minute_number(moment: datetime) -> int:
    """The minute a moment falls in, as stored: whole minutes since 1970-01-01 UTC."""
    return int(moment.timestamp() // 60)


def minute_at(number: int) -> datetime:
    return datetime.fromtimestamp(number * 60, timezone.utc)


class Sampler:
    def __init__(self, store: "Store", stack: "Stack", holder: str, days: float):
        self._store, self._stack, self._holder = store, stack, holder
        self.keep = timedelta(days=days)
        self._claim = _insert_ignoring(store, SampledMinute).returning(SampledMinute.__table__.c.minute)
        self._insert = _insert_ignoring(store, MetricSample)
        self._offered: datetime | None = None  # the last minute this process offered to sample
        self._pruned: datetime | None = None  # the last minute whose batch of old rows was deleted
        self._measuring = threading.Lock()  # held while this process measures a minute, and for good once closed
        self._closed = False

    @property
    def measurable(self) -> bool:
        config = self._stack.config
        return self._stack.compose is not None or config.database is not None or config.queue is not None

    def sweep(self, now: datetime) -> None:
        """Each minute: one batch of old rows deleted, and the minute offered; the winner measures on a thread of
        its own, so a slow docker stats never holds up the sweep."""
        minute = minute_of(now)
        if self._pruned != minute and self.prune(now) < PRUNE_MINUTES:
            self._pruned = minute  # all gone; after a full batch, another at the next sweep
        if self._offered == minute or not self.measurable:
            return
        self._offered = minute
        if not self._measuring.acquire(blocking=False):
            return  # the last minute's measurement still runs here: another replica may take this one
        try:
            won = self.claim(minute)
        except BaseException:  # the store away: the sweep reports it; the next minute is offered again
            self._measuring.release()
            raise
        if not won:
            self._measuring.release()
            return
        threading.Thread(target=self._measure_and_release, args=(minute,), name="sampler", daemon=True).start()

    def close(self, timeout: float) -> None:
        """At the runtime's end: wait for a measurement still running (it uses the stack and the store), take no other."""
        if not self._closed:
            self._closed = self._measuring.acquire(timeout=timeout)

    def _measure_and_release(self, minute: datetime) -> None:
        try:
            self.store(minute, self.measure())
        except Exception:
            log.exception("could not sample the metrics of %s; that minute is a gap", minute.isoformat())
        finally:
            self._measuring.release()

    def claim(self, minute: datetime) -> bool:
        """The INSERT that wins the minute: True for the one replica (and runner) that samples it."""
        with self._store.session.begin() as session:
            won = session.execute(self._claim, dict(minute=minute_number(minute), claimed_by=self._holder[:160], claimed_at=utcnow()))
            return won.scalar() is not None

    def measure(self) -> dict[str, float]:
        """What /stats measures over the last minute, by series; what could not be read is left out."""
        values: dict[str, float] = {}
        for section in measure(self._stack, Window("1m", 60)):
            values.update(section.values)
        return values

    def sample(self, minute: datetime) -> bool:
        """Claim, measure and store one minute, here and now (the sweep does it on a thread); whether this won it."""
        if not self.claim(minute):
            return False
        self.store(minute, self.measure())
        return True

    def store(self, minute: datetime, values: dict[str, float]) -> None:
        if values:
            with self._store.session.begin() as session:
                number = minute_number(minute)
                session.execute(self._insert, [dict(series=series[:160], minute=number, value=value) for series, value in values.items()])

    def prune(self, now: datetime) -> int:
        """Delete the oldest PRUNE_MINUTES minutes older than the retention; how many minutes went."""
        cutoff = minute_number(now - self.keep)
        with self._store.session.begin() as session:
            old = list(session.scalars(
                select(SampledMinute.minute).where(SampledMinute.minute < cutoff).order_by(SampledMinute.minute).limit(PRUNE_MINUTES)
            ))
            if old:
                session.execute(delete(MetricSample).where(MetricSample.minute <= old[-1]))
                session.execute(delete(SampledMinute).where(SampledMinute.minute <= old[-1]))
        return len(old)


@dataclass
class Samples:
    """A series as read, oldest first: each minute's value (low == high), or each bucket of minutes' minimum and
    maximum. x in seconds since the epoch; a step longer than `step` is a gap (minutes nobody measured)."""

    x: np.ndarray
    low: np.ndarray
    high: np.ndarray
    step: int = 60  # seconds between two points with nothing missing between them

    @property
    def bucketed(self) -> bool:
        return self.step > 60


def sampled(store: "Store", start: datetime, end: datetime) -> bool:
    """Whether any sample lies in [start, end] (a chart of it has something to draw)."""
    with store.session() as session:
        return session.scalars(
            select(MetricSample.minute).where(MetricSample.minute >= minute_number(start), MetricSample.minute <= minute_number(end)).limit(1)
        ).first() is not None


def read(store: "Store", start: datetime, end: datetime, columns: int) -> dict[str, Samples]:
    """Every series' samples in [start, end]: each minute when the window has at most two per column, else each of
    `columns` buckets' minimum and maximum, computed by the database."""
    table = MetricSample.__table__
    first, last = minute_number(start), minute_number(end)
    width = math.ceil((last - first + 1) / columns) if last - first + 1 > 2 * columns else 1
    bucket = (table.c.minute - first) // width
    query = (
        select(table.c.series, bucket, func.min(table.c.value), func.max(table.c.value))
        .where(table.c.minute >= first, table.c.minute <= last)
        .group_by(table.c.series, bucket)
        .order_by(table.c.series, bucket)
    )
    import numpy as np  # here, not at import: the process that acks Slack never draws

    with store.engine.connect() as connection:
        rows = connection.execute(query).all()
    found: dict[str, list] = {}
    for name, number, low, high in rows:
        found.setdefault(name, []).append((number, low, high))
    series = {}
    for name, points in found.items():
        numbers, low, high = (np.array(column, dtype=float) for column in zip(*points))
        series[name] = Samples((first + numbers * width) * 60.0, low, high, width * 60)
    return series
