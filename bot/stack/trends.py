"""The trends: /stats' key metrics sampled once a minute into the bot's database, for charts (bot/stack/chart.py).

Every runner's sweep offers to sample the current minute; the replica whose INSERT of the minute's row goes in
measures it (what /stats measures, over the last minute) and stores one row per series. A metric that could not
be read is not stored: its minute is a gap, never a 0. Rows older than FLOWSTATE_SAMPLE_DAYS are deleted by the
same sweep, a batch of minutes at a time.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Float, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from bot.stack.stats import Window, measure
from bot.store.engine import Base, UTCDateTime, utcnow

if TYPE_CHECKING:
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

PRUNE_MINUTES = 60  # minutes of samples deleted per batch: a few hundred rows, a short transaction


class SampledMinute(Base):
    """A minute some replica claimed to sample: one row, one winner."""

    __tablename__ = "sampled_minutes"

    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(160))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MetricSample(Base):
    """One measured value of a series (edge_error_rate, backend_error_rate, cpu:SERVICE, mem:SERVICE, db_connections,
    queue_length) in one minute."""

    __tablename__ = "metric_samples"

    series: Mapped[str] = mapped_column(String(160), primary_key=True)
    minute: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True, index=True)
    value: Mapped[float] = mapped_column(Float)


def _insert_ignoring(store: "Store", model: type[Base]):
    if store.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model.__table__).on_conflict_do_nothing()


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class Sampler:
    def __init__(self, store: "Store", stack: "Stack", holder: str, days: float):
        self._store, self._stack, self._holder = store, stack, holder
        self.keep = timedelta(days=days)
        self._claim = _insert_ignoring(store, SampledMinute).returning(SampledMinute.__table__.c.minute)
        self._insert = _insert_ignoring(store, MetricSample)
        self._offered: datetime | None = None  # the last minute this process offered to sample
        self._pruned: datetime | None = None  # the last minute whose batch of old rows was deleted
        self._measuring = threading.Lock()

    @property
    def measurable(self) -> bool:
        config = self._stack.config
        return self._stack.compose is not None or config.database is not None or config.queue is not None

    def sweep(self, now: datetime) -> None:
        """Each minute: one batch of old rows deleted, and the minute offered; the winner measures on a thread of
        its own, so a slow docker stats never holds up the sweep."""
        minute = minute_of(now)
        if self._pruned != minute and self.prune(now) < PRUNE_MINUTES:
            self._pruned = minute  # a full batch: another one at the next sweep
        if self._offered == minute or not self.measurable:
            return
        self._offered = minute
        if not self._measuring.acquire(blocking=False):
            return  # the last minute's measurement still runs here: another replica may take this one
        if not self.claim(minute):
            self._measuring.release()
            return
        threading.Thread(target=self._measure_and_release, args=(minute,), name="sampler", daemon=True).start()

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
            won = session.execute(self._claim, dict(minute=minute, claimed_by=self._holder[:160], claimed_at=utcnow()))
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
                session.execute(self._insert, [dict(series=series[:160], minute=minute, value=value) for series, value in values.items()])

    def prune(self, now: datetime) -> int:
        """Delete the oldest PRUNE_MINUTES minutes older than the retention; how many minutes went."""
        cutoff = now - self.keep
        with self._store.session.begin() as session:
            old = list(session.scalars(
                select(SampledMinute.minute).where(SampledMinute.minute < cutoff).order_by(SampledMinute.minute).limit(PRUNE_MINUTES)
            ))
            if old:
                session.execute(delete(MetricSample).where(MetricSample.minute <= old[-1]))
                session.execute(delete(SampledMinute).where(SampledMinute.minute <= old[-1]))
        return len(old)


def sampled(store: "Store", start: datetime, end: datetime) -> bool:
    """Whether any sample lies in [start, end] (a chart of it has something to draw)."""
    with store.session() as session:
        return session.scalars(
            select(MetricSample.minute).where(MetricSample.minute >= minute_of(start), MetricSample.minute <= end).limit(1)
        ).first() is not None


def read(store: "Store", start: datetime, end: datetime) -> dict[str, list[tuple[datetime, float]]]:
    """Every series' samples in [start, end], oldest first."""
    series: dict[str, list[tuple[datetime, float]]] = {}
    with store.session() as session:
        rows = session.execute(
            select(MetricSample.series, MetricSample.minute, MetricSample.value)
            .where(MetricSample.minute >= minute_of(start), MetricSample.minute <= end)
            .order_by(MetricSample.series, MetricSample.minute)
        )
        for name, minute, value in rows:
            series.setdefault(name, []).append((minute, value))
    return series
