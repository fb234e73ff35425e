"""The bot's own Prometheus metrics, served at /metrics.

Commands run in runner processes, on several replicas: what they did is read from the shared database
(a few aggregate queries), so every replica reports the same, exact values. One collection is made at a
time and kept CACHE_SECONDS: any number of scrapes in that time read the database once. They are served
on a port of their own (FLOWSTATE_METRICS_PORT), never by the threads that acknowledge Slack.
What only one process sees (the errors of its Slack API calls) is a prometheus_client counter; the
runner processes of a bot share it through prometheus_client's multiprocess mode, in a directory of
that bot process's own (``use_process_directory``), and Prometheus sums it over the replicas.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import collections
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import and_, case, extract, func, select

from bot.backups.model import Backup
from bot.frame.config import ConfigError
from bot.incidents.metrics import recent_medians
from bot.incidents.timeline import Timeline
from bot.jobs.model import PENDING, QUEUED, RUNNING, WAITING, Job
from bot.jobs.outage import OutageLog
from bot.store.engine import AuditEntry, Store, utcnow

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SETTLED_SECONDS = 300  # a row this old no longer changes: counted once, then only newer rows are read
CACHE_SECONDS = 15.0  # a collection serves every scrape for this long (Prometheus scrapes every 15 to 60 s)
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

SLACK_API_ERRORS = Counter(
    "flowstate_bot_slack_api_errors",
    "Slack Web API calls (and response_url posts) that failed, by method and Slack's error.",
    ["method", "error"],
)


@dataclass(frozen=True)
class DutyResult:
    """What the scheduled duties report for one duty: its runs by result, and whether the last one failed."""

    duty: str
    runs_by_result: dict[str, int] = field(default_factory=dict)
    last_failed: bool = False


def duty_results(store: Store) -> list[DutyResult]:
    """The scheduled duties' runs per duty and result, from the duty_runs table; "last failed" counts a failed,
    missed or interrupted newest run."""
    from bot.duties.service import run_counts

    return [DutyResult(duty, counts, last_failed) for duty, (counts, last_failed) in run_counts(store).items()]


def use_process_directory(home: Path) -> str:
    """Before prometheus_client's values are first used: this bot process and its runners count into a fresh
    directory of their own (removed by ``remove_process_directory``)."""
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        directory = tempfile.mkdtemp(prefix=f"metrics-{os.getpid()}-", dir=home)
    except OSError as error:
        raise ConfigError(f"FLOWSTATE_HOME: cannot create the metrics directory in {home} ({error.strerror})") from None
    os.environ[MULTIPROC_ENV] = directory
    # The counter above was created before the directory existed: make it count into the directory.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    SLACK_API_ERRORS._metrics.clear()
    return directory


def remove_process_directory(directory: str | None) -> None:
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def registry(store: Store, duties=duty_results) -> CollectorRegistry:
    """What /metrics shows: the database's view plus this process's (and its runners') counters."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CachedCollector(DatabaseCollector(store, duties)))
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(SLACK_API_ERRORS)
    return registry


def _seconds(later, earlier, dialect: str):
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return extract("epoch", later - earlier)


class CachedCollector:
    """One collection in flight, kept `seconds`: scrapes that arrive meanwhile wait for it and share it, so a
    flood of scrapes (or many Prometheus servers) costs the database one set of queries per interval."""

    def __init__(self, inner, seconds: float = CACHE_SECONDS):
        self._inner, self._seconds = inner, seconds
        self._lock = threading.Lock()
        self._families: list = []
        self._fresh_until = float("-inf")
        self._collections = 0

    def collect(self):
        with self._lock:
            if time.monotonic() >= self._fresh_until:
                self._families = list(self._inner.collect())
                self._collections += 1
                self._fresh_until = time.monotonic() + self._seconds
            families, collections = self._families, self._collections
        made = CounterMetricFamily(
            "flowstate_bot_metrics_collections", f"Reads of the bot's database for /metrics (at most one per {CACHE_SECONDS:.0f} s)."
        )
        made.add_metric([], collections)
        return [*families, made]


class DatabaseCollector:
    """Exact across processes and replicas, and incremental: rows that can no longer change (audit rows, which
    are append-only, written before the horizon; jobs older than the oldest unfinished one) are counted once
    and kept, and each collection reads only the rows after them, by primary key."""

    def __init__(self, store: Store, duties=duty_results):
        self._store = store
        self._duties = duties
        self._audit_upto = 0  # audit_log rows with id <= this are in _audit_settled
        self._audit_settled: collections.Counter[tuple[str, str]] = collections.Counter()
        self._jobs_upto = 0  # bot_jobs rows with id <= this are in _jobs_settled
        self._jobs_settled: dict[str, list[float]] = {}  # command -> [count, sum of seconds, count per bucket...]
        self._outage = OutageLog(log)  # a scrape every 15 s must not log a traceback every 15 s while the database is down

    def collect(self):
        try:
            with self._store.engine.connect() as connection:
                yield from self._commands(connection)
                yield from self._durations(connection)
                yield from self._pending(connection)
                yield from self._backup_age(connection)
            yield from self._duty_metrics()
            yield from self._incident_medians()
        except Exception:
            self._outage.failed("reading the metrics")
            up = GaugeMetricFamily("flowstate_bot_database_up", "1 when /metrics could read the bot's database.")
            up.add_metric([], 0)
            yield up
            return
        self._outage.ok()
        up = GaugeMetricFamily("flowstate_bot_database_up", "1 when /metrics could read the bot's database.")
        up.add_metric([], 1)
        yield up

    @staticmethod
    def _audit_counts(connection, after: int, upto: int | None) -> collections.Counter[tuple[str, str]]:
        where = [AuditEntry.id > after] + ([AuditEntry.id <= upto] if upto is not None else [])
        rows = connection.execute(
            select(AuditEntry.command, AuditEntry.outcome, func.count()).where(*where).group_by(AuditEntry.command, AuditEntry.outcome)
        )
        return collections.Counter({(command, outcome): count for command, outcome, count in rows})

    def _commands(self, connection):
        # The newest row written before the horizon (by the index on `at`): every row with a smaller id was
        # written earlier still, and its transaction (a single INSERT) has long committed.
        settled = connection.execute(
            select(AuditEntry.id).where(AuditEntry.at < utcnow() - timedelta(seconds=SETTLED_SECONDS)).order_by(AuditEntry.at.desc()).limit(1)
        ).scalar()
        if settled is not None and settled > self._audit_upto:
            self._audit_settled += self._audit_counts(connection, self._audit_upto, settled)
            self._audit_upto = settled
        family = CounterMetricFamily(
            "flowstate_bot_commands", "Commands and approval steps in the audit log, by command and outcome.", labels=["command", "outcome"]
        )
        for (command, outcome), count in sorted((self._audit_settled + self._audit_counts(connection, self._audit_upto, None)).items()):
            family.add_metric([command, outcome], count)
        yield family

    @staticmethod
    def _job_times(connection, after: int, upto: int | None) -> dict[str, list[float]]:
        seconds = _seconds(Job.finished_at, Job.started_at, connection.dialect.name).label("seconds")
        where = [Job.id > after, Job.started_at.is_not(None), Job.finished_at.is_not(None)]
        timed = select(Job.command, seconds).where(*where, *([Job.id <= upto] if upto is not None else [])).subquery()
        buckets = [func.sum(case((timed.c.seconds <= bound, 1), else_=0)) for bound in DURATION_BUCKETS]
        rows = connection.execute(select(timed.c.command, func.count(), func.sum(timed.c.seconds), *buckets).group_by(timed.c.command))
        return {command: [count, float(total or 0.0), *(int(n or 0) for n in cumulative)] for command, count, total, *cumulative in rows}

    @staticmethod
    def _settled_job(connection) -> int | None:
        """The newest job id below which every job is done for good: before the oldest one still queued, running,
        waiting for approval or for the stack's lock (by the index on state), and created before the horizon (so its INSERT has committed)."""
        unfinished = connection.execute(select(func.min(Job.id)).where(Job.state.in_([QUEUED, RUNNING, PENDING, WAITING]))).scalar()
        created = connection.execute(
            select(Job.id).where(Job.created_at < utcnow() - timedelta(seconds=SETTLED_SECONDS)).order_by(Job.id.desc()).limit(1)
        ).scalar()
        if created is None:
            return None
        return created if unfinished is None else min(created, unfinished - 1)

    @staticmethod
    def _add(into: dict[str, list[float]], more: dict[str, list[float]]) -> dict[str, list[float]]:
        for command, values in more.items():
            into[command] = [a + b for a, b in zip(into[command], values)] if command in into else list(values)
        return into

    def _durations(self, connection):
        settled = self._settled_job(connection)
        if settled is not None and settled > self._jobs_upto:
            self._add(self._jobs_settled, self._job_times(connection, self._jobs_upto, settled))
            self._jobs_upto = settled
        fresh = self._job_times(connection, self._jobs_upto, None)
        times = self._add({command: list(values) for command, values in self._jobs_settled.items()}, fresh)
        family = HistogramMetricFamily(
            "flowstate_bot_job_duration_seconds", "How long finished jobs ran, from their claim to their end, by command.", labels=["command"]
        )
        for command, (count, total, *cumulative) in sorted(times.items()):
            family.add_metric(
                [command],
                [(str(bound), int(n)) for bound, n in zip(DURATION_BUCKETS, cumulative)] + [("+Inf", int(count))],
                total,
            )
        yield family

    def _pending(self, connection):
        count = connection.execute(
            select(func.count()).select_from(Job).where(and_(Job.state == PENDING, Job.expires_at > utcnow()))
        ).scalar_one()
        family = GaugeMetricFamily("flowstate_bot_pending_approvals", "Requests waiting for a second person's approval now.")
        family.add_metric([], count)
        yield family

    def _backup_age(self, connection):
        newest: datetime | None = connection.execute(
            select(func.max(Backup.started_at)).where(Backup.verified_ok.is_(True), Backup.deleted_at.is_(None))
        ).scalar_one()
        family = GaugeMetricFamily(
            "flowstate_bot_newest_verified_backup_age_seconds",
            "Age of the newest backup whose test restore passed (+Inf when there is none).",
        )
        if isinstance(newest, str):  # SQLite's aggregate loses the column's type
            newest = datetime.fromisoformat(newest)
        if newest is not None and newest.tzinfo is None:
            newest = newest.replace(tzinfo=utcnow().tzinfo)
        family.add_metric([], (utcnow() - newest).total_seconds() if newest else float("inf"))
        yield family

    def _incident_medians(self):
        """The incidents' median response times over 30 and 90 days (bot/incidents/metrics.py), and how many
        incidents each counts: a window where none reached the moment has a count of 0 and no median sample."""
        medians = recent_medians(Timeline(self._store), utcnow())
        seconds = GaugeMetricFamily(
            "flowstate_bot_incident_median_seconds",
            "Median seconds from an incident's start to its acknowledgement, mitigation or resolution, over the incidents started in the window.",
            labels=["measure", "window"],
        )
        counted = GaugeMetricFamily(
            "flowstate_bot_incidents_measured",
            "Incidents started in the window that reached the moment (those the median counts).",
            labels=["measure", "window"],
        )
        for median in medians:
            labels = [median.measure, f"{median.days}d"]
            if median.seconds is not None:
                seconds.add_metric(labels, median.seconds)
            counted.add_metric(labels, median.counted)
        yield seconds
        yield counted

    def _duty_metrics(self):
        runs = CounterMetricFamily("flowstate_bot_duty_runs", "Scheduled duty runs, by duty and result.", labels=["duty", "result"])
        failing = GaugeMetricFamily("flowstate_bot_duty_last_failed", "1 when the last run of a scheduled duty failed.", labels=["duty"])
        for result in self._duties(self._store):
            for outcome, count in result.runs_by_result.items():
                runs.add_metric([result.duty, outcome], count)
            failing.add_metric([result.duty], 1 if result.last_failed else 0)
        yield runs
        yield failing
