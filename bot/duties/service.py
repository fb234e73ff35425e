"""The scheduler: which slot of which duty is due, who runs it (one INSERT wins), and what /schedule shows.

A tick (every sweep of every runner, a couple of seconds apart) looks at the newest slot of each duty that
is on. A slot with no row yet is claimed by INSERT ... ON CONFLICT DO NOTHING on (duty, slot): the replica
whose row went in queues the duty as a job (dedupe key `duty:NAME:SLOT`), any runner claims that job, and
the other replicas do nothing. A slot found too late (past the grace window: every replica was down when
it came) is recorded as missed and reported once, and never run.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Protocol

from sqlalchemy import and_, func, or_, select, update

from bot.frame import blocks
from bot.duties import model
from bot.duties.clock import Clock, clock_for
from bot.duties.freeze import Freezes
from bot.duties.model import DutyRun
from bot.duties.slots import Every, Schedule, latest_slot, next_slot, parse_daily, parse_weekly
from bot.jobs.model import FINAL, Job
from bot.jobs.model import QUEUED as JOB_QUEUED
from bot.frame.registry import Invocation, Notifier, Reply
from bot.frame.authz import SYSTEM_USERS
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.duties.watch import Evaluator
    from bot.frame.audit import AuditLog
    from bot.frame.config import Settings
    from bot.frame.dispatcher import Dispatcher
    from bot.jobs.queue import JobQueue, KeepAlive
    from bot.stack.stack import Stack
    from bot.store.engine import Store


class Host(Protocol):
    """What the duties use of the composition root (bot/runtime.py), which a domain may not import."""

    settings: "Settings"
    store: "Store"
    stack: "Stack"
    audit: "AuditLog"
    dispatcher: "Dispatcher"
    jobs: "JobQueue"
    notifier: Notifier | None
    holder: str
    wake: Callable[[], None]

    @property
    def stack_name(self) -> str: ...

    def keep_alive(self, job_id: int, holder: str) -> "KeepAlive": ...

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"  # the requester of every duty (see bot.frame.authz.SYSTEM_USERS)
SCHEDULER_ROLE = SYSTEM_USERS[SCHEDULER]
SOURCE = "scheduler"  # the jobs and audit rows of duties


@dataclass(frozen=True)
class Outcome:
    ok: bool
    summary: str  # one line: what /schedule shows as the last result


@dataclass(frozen=True)
class Duty:
    name: str
    title: str
    schedule: Schedule | None  # None: turned off
    setting: str  # the setting that turns it off
    work: Callable[["Duties", datetime], Outcome]

    @property
    def reports_missed(self) -> bool:
        """A late watch check is as good as one on time: only the other duties report a missed slot."""
        return not isinstance(self.schedule, Every)


def _insert_run(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    table = DutyRun.__table__
    return dialect_insert(table).on_conflict_do_nothing(index_elements=[table.c.duty, table.c.slot]).returning(table.c.id)


def slot_key(slot: datetime) -> str:
    return f"{slot:%Y%m%dT%H%MZ}"


class Duties:
    def __init__(self, runtime: Host, clock: Clock | None = None, evaluator: "Evaluator | None" = None):
        from bot.duties import flows as tasks
        from bot.duties.watch import Watch

        self.rt = runtime
        self.clock = clock or clock_for(runtime.settings)
        self.watch = Watch(self, evaluator)
        self._insert = _insert_run(runtime.store.engine.dialect.name)
        s = runtime.settings
        self.all = [
            Duty("daily-report", "Daily health report", parse_daily(s.daily_report_at), "FLOWSTATE_DAILY_REPORT_AT", tasks.daily_report),
            Duty("nightly-backup", "Nightly backup", parse_daily(s.backup_at), "FLOWSTATE_BACKUP_AT", tasks.nightly_backup),
            Duty("restore-drill", "Weekly restore drill", parse_weekly(s.drill_at), "FLOWSTATE_DRILL_AT", tasks.restore_drill),
            Duty("watch-check", "Watch", Every(s.watch_minutes) if s.watch_minutes else None, "FLOWSTATE_WATCH_MINUTES", self.watch.run),
        ]
        # Queued by a freeze's start (its slot: the freeze's start), not by the clock: not in /schedule.
        self.backup_at_freeze = Duty("freeze-backup", "Backup at a freeze's start", None, "", tasks.freeze_backup)
        self.freezes = Freezes(self)

    @property
    def channel(self) -> str | None:
        return self.rt.settings.ops_channel

    @property
    def grace(self) -> timedelta:
        return timedelta(minutes=self.rt.settings.duty_grace_minutes)

    def on(self) -> list[Duty]:
        return [duty for duty in self.all if duty.schedule is not None] if self.channel else []

    def invocation(self, command: str, text: str = "") -> Invocation:
        return Invocation(SCHEDULER, command, text, self.channel, SOURCE)  # type: ignore[arg-type]

    def when(self, moment: datetime) -> str:
        return f"{moment.astimezone(self.rt.settings.tz):%a %Y-%m-%d %H:%M %Z}"

    def post(self, reply: Reply) -> str | None:
        """A message to the ops channel; Slack failing is logged, and never fails the duty's record."""
        messages = self.rt.messages
        if messages is None or not self.channel:
            log.info("duty message (no Slack): %s", reply.text.splitlines()[0] if reply.text else "")
            return None
        try:
            return messages.post(self.channel, reply)
        except Exception:
            log.exception("could not post a duty's message to %s", self.channel)
            return None

    def say(self, text: str) -> str | None:
        return self.post(Reply(text, [blocks.section(text)], in_channel=True))

    # ---- the tick --------------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock.now()
        self._settle_interrupted()
        newest = {duty.name: latest_slot(duty.schedule, self.rt.settings.tz, now) for duty in self.on()}
        if not newest:
            return
        with self.rt.store.session() as session:  # one query for all: the common answer is "every one is there"
            present = set(
                session.execute(
                    select(DutyRun.duty, DutyRun.slot).where(or_(*(and_(DutyRun.duty == name, DutyRun.slot == slot) for name, slot in newest.items())))
                ).all()
            )
        for duty in self.on():
            slot = newest[duty.name]
            if (duty.name, slot) in present:
                continue
            late = now - slot
            window = timedelta(minutes=duty.schedule.minutes) if isinstance(duty.schedule, Every) else self.grace
            if late <= window:
                self._start(duty, slot, late)
            elif duty.reports_missed and self._ran_before(duty.name, slot):
                self._miss(duty, slot)

    def _ran_before(self, duty: str, slot: datetime) -> bool:
        """A duty with no earlier row was just turned on (or the bot is new): nothing was missed."""
        with self.rt.store.session() as session:
            return session.scalars(select(DutyRun.id).where(DutyRun.duty == duty, DutyRun.slot < slot).limit(1)).first() is not None

    def _claim(self, session, duty: Duty, slot: datetime, state: str, message: str | None = None) -> int | None:
        """The INSERT that wins the slot: its id, or None when another replica's row is there."""
        values = dict(duty=duty.name, slot=slot, state=state, claimed_by=self.rt.holder[:160], created_at=utcnow(), message=message)
        if state == model.MISSED:
            values["finished_at"] = values["created_at"]
        return session.execute(self._insert, values).scalar()

    def _start(self, duty: Duty, slot: datetime, late: timedelta) -> None:
        """The slot's row and its job in one transaction: a replica dying in between leaves neither, never a row without a job."""
        with self.rt.store.session.begin() as session:
            job_id = self.queue(session, duty, slot)
        if job_id is None:
            return
        log.info("duty %s of %s queued as request #%s (%.0f s after its slot)", duty.name, slot.isoformat(), job_id, late.total_seconds())
        self.rt.wake()

    def queue(self, session, duty: Duty, slot: datetime) -> int | None:
        """The slot's row and its job, in the caller's transaction: the job's id, or None when another replica's row is there."""
        run_id = self._claim(session, duty, slot, model.QUEUED)
        if run_id is None:
            return None
        # No channel on the duty's own job and audit rows: a watch check every few minutes is not an event of an
        # incident open in the ops channel (the commands a duty runs there, /health or /backup, are).
        job = Job(
            dedupe_key=f"duty:{duty.name}:{slot_key(slot)}", state=JOB_QUEUED, source=SOURCE, requester=SCHEDULER,
            command=duty.name, text=slot.isoformat(), created_at=utcnow(),
        )
        session.add(job)
        session.flush()
        session.execute(update(DutyRun).where(DutyRun.id == run_id).values(job_id=job.id))
        return job.id

    def _miss(self, duty: Duty, slot: datetime) -> None:
        text = (
            f"⚠️ *{duty.title}* of {self.when(slot)} was missed: no replica of the bot was running then, and it is more than "
            f"{self.rt.settings.duty_grace_minutes:g} min late, so it was not run. The next one is at "
            f"{self.when(next_slot(duty.schedule, self.rt.settings.tz, self.clock.now()))}."
        )
        with self.rt.store.session.begin() as session:
            won = self._claim(session, duty, slot, model.MISSED, f"missed: no replica was running at {self.when(slot)}") is not None
        if won:
            missed = Invocation(SCHEDULER, duty.name, slot.isoformat(), None, SOURCE)  # type: ignore[arg-type]
            self.rt.audit.record(missed, "failed", error="missed: no replica was running")
            self.say(text)

    def _settle_interrupted(self) -> None:
        """A duty whose job was interrupted (its runner died) is never run again; its row says so, and the channel is told once."""
        with self.rt.store.session() as session:
            stuck = session.execute(
                select(DutyRun, Job.state)
                .join(Job, Job.id == DutyRun.job_id)
                .where(DutyRun.state.in_([model.QUEUED, model.RUNNING]), Job.state.in_([s for s in FINAL if s not in ("succeeded", "failed")]))
            ).all()
        for run, job_state in stuck:
            if self._finish(run.id, model.INTERRUPTED, f"{job_state}: the bot process running it stopped; not run again"):
                title = next((d.title for d in [*self.all, self.backup_at_freeze] if d.name == run.duty), run.duty)
                self.say(
                    f"⚠️ *{title}* of {self.when(run.slot)} was interrupted: the bot process running it stopped. It was not run "
                    "again; check /health and /backups, and run it by hand if it is still needed."
                )

    def _finish(self, run_id: int, state: str, message: str) -> bool:
        with self.rt.store.session.begin() as session:
            return session.execute(
                update(DutyRun)
                .where(DutyRun.id == run_id, DutyRun.state.in_([model.QUEUED, model.RUNNING]))
                .values(state=state, message=message[:2000], finished_at=utcnow())
            ).rowcount == 1

    # ---- running one, in a runner ------------------------------------------------------------------

    def run_job(self, job: Job, holder: str) -> Reply:
        """The duty's job, claimed by a runner and handed over by the pipeline: run it as the scheduler, audited; its
        outcome is the reply (the pipeline finishes the job row with it)."""
        duty = next(d for d in [*self.all, self.backup_at_freeze] if d.name == job.command)
        slot = datetime.fromisoformat(job.text)
        with self.rt.store.session.begin() as session:
            session.execute(update(DutyRun).where(DutyRun.job_id == job.id).values(state=model.RUNNING))
        invocation = job.invocation()
        self.rt.audit.record(invocation, "allowed", job_id=job.id)
        started = time.monotonic()
        error_id = None
        try:
            outcome = duty.work(self, slot)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("duty %s of %s failed [error id %s]", duty.name, slot.isoformat(), error_id)
            outcome = Outcome(False, f"failed unexpectedly (error id {error_id})")
            self.say(f"🚨 *{duty.title}* of {self.when(slot)} failed unexpectedly (error id {error_id}); the details are in the bot's log.")
        state = model.SUCCEEDED if outcome.ok else model.FAILED
        self.rt.audit.record(
            invocation, state, duration_ms=round((time.monotonic() - started) * 1000),
            error=None if outcome.ok else outcome.summary, error_id=error_id, job_id=job.id,
        )
        with self.rt.store.session.begin() as session:
            session.execute(
                update(DutyRun).where(DutyRun.job_id == job.id).values(state=state, message=outcome.summary[:2000], finished_at=utcnow())
            )
        return Reply(outcome.summary, failed=not outcome.ok, error_id=error_id)

    # ---- what /schedule shows ----------------------------------------------------------------------

    def last_runs(self) -> dict[str, DutyRun]:
        with self.rt.store.session() as session:
            latest = {}
            for duty in self.all:
                run = session.scalars(select(DutyRun).where(DutyRun.duty == duty.name).order_by(DutyRun.slot.desc()).limit(1)).first()
                if run is not None:
                    latest[duty.name] = run
            return latest

    def next_run(self, duty: Duty) -> datetime | None:
        if duty.schedule is None or not self.channel:
            return None
        return next_slot(duty.schedule, self.rt.settings.tz, self.clock.now())


def run_counts(store) -> dict[str, tuple[dict[str, int], bool]]:
    """For the bot's metrics: each duty's runs by state, and whether its newest finished run failed (or was missed)."""
    counts: dict[str, dict[str, int]] = {}
    last_failed: dict[str, bool] = {}
    with store.session() as session:
        for duty, state, count in session.execute(select(DutyRun.duty, DutyRun.state, func.count()).group_by(DutyRun.duty, DutyRun.state)):
            counts.setdefault(duty, {})[state] = count
        for duty in counts:
            newest = session.scalars(
                select(DutyRun.state)
                .where(DutyRun.duty == duty, DutyRun.state.not_in([model.QUEUED, model.RUNNING]))
                .order_by(DutyRun.slot.desc())
                .limit(1)
            ).first()
            last_failed[duty] = newest in (model.FAILED, model.MISSED, model.INTERRUPTED)
    return {duty: (counts[duty], last_failed[duty]) for duty in counts}
