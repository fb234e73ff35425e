"""The job table as a queue: every state change is one conditional UPDATE whose row count says who won."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import bindparam, delete, literal_column, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import configure_mappers

from bot.jobs.heartbeat import RunnerHeartbeat
from bot.jobs.model import FINAL, PENDING, QUEUED, RUNNING, WAITING, ChangeLock, Job, RunnerRow
from bot.frame.registry import Invocation
from bot.store.engine import SEEN_REQUEST, Store, utcnow

log = logging.getLogger(__name__)


class ReplayedRequest(Exception):
    """The Slack request this job would come from was received before (its signature is known)."""


def _new_job_statement(dialect: str):
    """INSERT ... ON CONFLICT (dedupe_key) DO NOTHING RETURNING id: no row back means Slack redelivered it.
    Built once per queue: it runs before every ack."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    table = Job.__table__
    return dialect_insert(table).on_conflict_do_nothing(index_elements=[table.c.dedupe_key]).returning(table.c.id)


# On PostgreSQL a job that becomes queued is announced on this channel (a NOTIFY, delivered at its transaction's
# commit); every runner LISTENs on it (bot/jobs/wakeup.py), so a replica's runners take work without polling.
WAKE_CHANNEL = "flowstate_jobs"
_NOTIFY = text(f"SELECT pg_notify('{WAKE_CHANNEL}', :token)")
# The NOTIFY's payload: which process announced. Its own runners are rung by its doorbell at the ack, so they skip
# a NOTIFY of their bot process (bot/jobs/wakeup.py) instead of looking for the same job a second time.
ANNOUNCER_TOKEN = secrets.token_hex(8)
# After a NOTIFY the next waits this long: the jobs of a burst committed meanwhile share one (another replica's
# runners are woken at most this much later; this process's own are rung at the ack).
ANNOUNCE_GAP_SECONDS = 0.01


class _Announcer:
    """The NOTIFY for queued jobs (an ack's, an approval's), sent after their commit by a thread of its own: one for
    all the jobs committed while it was sending the last one, or in the short gap after it.

    Not in the transaction that stores the job: PostgreSQL serializes the commits of the transactions that NOTIFY (a
    lock held until the commit's WAL flush is done), so the acks of a burst would each wait for the flushes of all
    those before it (300 concurrent commits: 1.15 s with a NOTIFY each, 0.16-0.25 s without). A NOTIFY alone writes
    no WAL. The job is stored before its ack as before; only the wake-up of the other replicas' runners comes a round
    trip later (this process's own are rung at the ack), and one that is lost (the store away) is made up by their
    poll."""

    def __init__(self, store: Store):
        self._writer = store.ack_writer
        self._owed = False  # a job was committed since the last NOTIFY was sent
        self._due = threading.Event()
        self._closing = False
        self._start = threading.Lock()
        self._thread: threading.Thread | None = None

    def soon(self) -> None:
        self._owed = True
        self._due.set()
        if self._thread is None:
            with self._start:
                if self._thread is None and not self._closing:
                    self._thread = threading.Thread(target=self._run, name="job-announcer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while True:
            self._due.wait()
            self._due.clear()
            if self._owed:
                self._owed = False  # before the NOTIFY: a job committed from now on gets the next one
                try:
                    self._writer.write((_NOTIFY, {"token": ANNOUNCER_TOKEN}))
                except Exception as error:  # the ack that stored the job went through; the poll finds it
                    log.debug("could not announce queued jobs (%s); the runners' poll finds them", error)
            if self._closing:  # what was owed is sent first
                return
            time.sleep(ANNOUNCE_GAP_SECONDS)

    def close(self) -> None:
        with self._start:
            self._closing = True
            thread = self._thread
        self._due.set()
        if thread is not None:
            thread.join(timeout=5)


def _claim_statement(postgres: bool, by_source: bool):
    """UPDATE the oldest queued jobs (at most `many`, of one source) to running for a holder, RETURNING their rows:
    the whole claim is one statement, and nothing is read back after it. On PostgreSQL its SELECT locks the rows it
    picks and skips the rows other runners are taking (FOR UPDATE SKIP LOCKED), so concurrent claims neither wait
    for each other nor win the same job; SQLite runs one writer at a time, so there the single statement is enough.
    It runs on the store's writer, compiled once; on PostgreSQL prepared once per connection, and planned once: the
    state it looks for is in its text, not a parameter, so the plan kept is the one for the few queued rows among
    many finished (ix_bot_jobs_state), never a walk of the whole table in id order that a state unknown to the
    planner could choose. Every other value is a named parameter."""
    queued = literal_column(f"'{QUEUED}'")
    oldest = select(Job.id).where(Job.state == queued, *([Job.source == bindparam("of_source")] if by_source else []))
    oldest = oldest.order_by(Job.id).limit(bindparam("many"))
    if postgres:
        # Picked once: a subquery under IN may be run again by the plan (and lock more rows than asked for).
        oldest = select(oldest.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED").c.id)
    return (
        update(Job)
        .where(Job.id.in_(oldest.scalar_subquery()), Job.state == queued)
        .values(state=bindparam("running"), holder=bindparam("claimer"), started_at=bindparam("claimed_at"))
        .returning(*Job.__table__.columns)
    )


# A held job's end: only while its runner still holds it (a sweep may have interrupted it meanwhile).
_FINISH = (
    update(Job)
    .where(Job.id == bindparam("job"), Job.state == bindparam("running"), Job.holder == bindparam("by"))
    .values(state=bindparam("outcome"), finished_at=bindparam("at"), result=bindparam("said"), error_id=bindparam("error"))
    .returning(Job.id)
)
# On PostgreSQL a claim's commit need not wait for its WAL flush: the write a runner makes before it runs anything
# (the audit row "allowed", or the stack lock) waits for its own, and the WAL is flushed in order, so no job runs
# on a claim a crash of the database could lose (and if that write fails, nothing runs).
_CLAIM_UNFLUSHED = text("SET LOCAL synchronous_commit TO OFF")


def _this_host() -> str:
    """The host name and the PID namespace: replicas in containers with host networking share the host's name,
    but each counts its pids in a namespace of its own, where another replica's pid means nothing."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()[:80]}~{namespace}"


def new_holder() -> str:
    """Who holds a job: host and pid (to tell a dead local holder at once) and a token unique to this process."""
    return f"{_this_host()}/{os.getpid()}/{secrets.token_hex(4)}"


def holder_is_dead(holder: str) -> bool:
    """True only when the holder ran here (same host, same PID namespace) and its process is gone; elsewhere
    the lease decides."""
    host, _, rest = holder.partition("/")
    pid = rest.partition("/")[0]
    if host != _this_host() or not pid.isdigit():
        return False
    return not process_running(int(pid))


def process_running(pid: int) -> bool:
    """A process of this PID namespace that still runs. A zombie (killed, not yet reaped: an init that reaps
    late keeps one for a while) runs no more."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc here: the kernel's answer to a null signal
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def process_identity(pid: int) -> str | None:
    """A process as recovery must know it: this host and PID namespace, its pid and its start time (clock ticks
    after boot, /proc/PID/stat). A pid the kernel gave again, a thread's id or another host's pid is not it.
    None when there is no such process (a thread, or one that has ended)."""
    started = _start_time(pid)
    return None if started is None else f"{_this_host()}/{pid}/{started}"


def identity_running(identity: str) -> bool:
    """The very process process_identity() named runs still (on another host or namespace: not that we can see)."""
    host, _, rest = identity.partition("/")
    pid, _, started = rest.partition("/")
    return host == _this_host() and pid.isdigit() and _start_time(int(pid)) == started


def _start_time(pid: int) -> str | None:
    """The start time of a live process (not a zombie, not a thread: /proc lists a thread's id too)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            tgid = next((line.split()[1] for line in status if line.startswith("Tgid:")), None)
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if tgid != str(pid) or fields[0] == "Z":
        return None
    return fields[19]  # field 22 of proc(5), counted from the state (field 3)


def ended_and_unlocked(job_id_column) -> list:
    """Conditions on a domain row's job: it has ended, and holds no stack lock (a recovery that runs holds it).
    The runners' sweep finishes the release and restore rows such a job left open."""
    return [job_id_column.in_(select(Job.id).where(Job.state.in_(FINAL))), job_id_column.not_in(select(ChangeLock.job_id))]


class JobQueue:
    def __init__(self, store: Store, heartbeat: RunnerHeartbeat | None = None):
        self._store = store
        self._heartbeat = heartbeat  # this process's, started once it holds a job
        self._postgres = store.engine.dialect.name == "postgresql"
        self._new_job = _new_job_statement(store.engine.dialect.name)
        self._announcer = _Announcer(store)
        self._claim_any, self._claim_of_source = _claim_statement(self._postgres, False), _claim_statement(self._postgres, True)
        # A claimed row as the ORM would load it: each column's own conversion of what the driver returns.
        dialect = store.engine.dialect
        self._columns = [(column.key, column.type._cached_result_processor(dialect, None)) for column in Job.__table__.columns]
        configure_mappers()  # what the first Job() would do: its attributes know their columns from now on
        self._new_job_instance = Job.__mapper__.class_manager.new_instance

    # ---- creating ----------------------------------------------------------------------------

    def submit(
        self,
        invocation: Invocation,
        *,
        response_url: str | None = None,
        dedupe_key: str | None = None,
        signature: str | None = None,
        state: str = QUEUED,
        **fields,
    ) -> int | None:
        """A new job; None when a job with the same dedupe key exists (Slack redelivered the request).

        With the signature of the Slack request it comes from, that signature is remembered in the same commit
        (the replay guard's seen-set): ReplayedRequest if it was seen before, and then nothing is written.
        One short transaction on the ack writer's connection: this runs before every ack."""
        if state == RUNNING:
            self._beating(fields.get("holder"))
        values = dict(
            dedupe_key=dedupe_key,
            state=state,
            source=invocation.source,
            requester=invocation.user_id[:64],
            channel_id=invocation.channel_id[:64] if invocation.channel_id else None,
            command=invocation.command[:64],
            text=invocation.text.replace("\x00", "\ufffd"),
            response_url=response_url,
            created_at=utcnow(),
            **fields,
        )
        wake = self._postgres and state == QUEUED
        if any(isinstance(value, (dict, list)) for value in fields.values()):  # JSON: not on an ack's path
            with self._store.engine.begin() as connection:
                job_id = connection.execute(self._new_job, values).scalar_one_or_none()
        else:
            steps = [(self._new_job, values)]
            if signature is not None:
                steps.insert(0, (SEEN_REQUEST, {"signature": signature, "seen_at": values["created_at"]}))
            try:
                job_id = self._store.ack_writer.write(*steps)
            except IntegrityError:
                if signature is None:
                    raise
                raise ReplayedRequest() from None
        if wake and job_id is not None:
            self._announcer.soon()
        return job_id

    def close(self) -> None:
        self._announcer.close()

    def _beating(self, holder: str | None) -> None:
        """A job about to be held by this process: its runner's heartbeat runs from now on."""
        if self._heartbeat is not None and holder == self._heartbeat.id:
            self._heartbeat.start()

    def get(self, job_id: int) -> Job | None:
        with self._store.session() as session:
            return session.get(Job, job_id)

    # ---- conditional state changes -------------------------------------------------------------

    def _change(self, job_id: int, where: list, **values) -> bool:
        with self._store.session.begin() as session:
            result = session.execute(update(Job).where(Job.id == job_id, *where).values(**values))
            return result.rowcount == 1

    def claim(self, job_id: int, holder: str) -> Job | None:
        """queued -> running for this holder; None when someone else claimed it first."""
        self._beating(holder)
        won = self._change(job_id, [Job.state == QUEUED], state=RUNNING, holder=holder, started_at=utcnow())
        return self.get(job_id) if won else None

    def claim_next(self, holder: str, source: str | None = None) -> Job | None:
        """The oldest queued job, now running for this holder, or None."""
        claimed = self.claim_many(holder, 1, source)
        return claimed[0] if claimed else None

    def claim_many(self, holder: str, many: int, source: str | None = None) -> list[Job]:
        """The oldest queued jobs, at most `many`, now running for this holder, oldest first: one statement on the
        store's writer, so no other runner can win one of them too (on PostgreSQL their rows are skipped by the
        others while this one takes them)."""
        self._beating(holder)
        params = {"running": RUNNING, "claimer": holder, "claimed_at": utcnow(), "many": many}
        if source is not None:
            params["of_source"] = source
        claim = (self._claim_of_source if source is not None else self._claim_any, params)
        rows = self._store.ack_writer.write(*([(_CLAIM_UNFLUSHED, {})] if self._postgres else []), claim, every_row=True)
        return sorted((self._loaded(row) for row in rows), key=lambda job: job.id)

    def _loaded(self, row: tuple) -> Job:
        """A claimed row as a Job, built as the ORM builds a loaded one (its values in the instance's dict, nothing
        marked changed): Job(**values) sets each column through its instrumented attribute, 40 us a job against 2."""
        job = self._new_job_instance()
        job.__dict__.update((key, convert(value) if convert else value) for (key, convert), value in zip(self._columns, row))
        return job

    def update_held(self, job: Job, holder: str, **values) -> bool:
        """Change a running job this holder holds (its arguments, its message); False if it lost the job."""
        return self._change(job.id, [Job.state == RUNNING, Job.holder == holder], **values)

    def finish(self, job_id: int, holder: str, state: str, result: str | None = None, error_id: str | None = None) -> bool:
        """running -> its final state, while this holder still holds it; on the store's writer (one per job)."""
        return self.finish_written(self.finish_step(job_id, holder, state, result, error_id))

    @staticmethod
    def finish_step(job_id: int, holder: str, state: str, result: str | None = None, error_id: str | None = None) -> tuple:
        """finish() as a step of the store's writer, to be written in one transaction with others (an audit row)."""
        values = {"job": job_id, "running": RUNNING, "by": holder, "outcome": state, "at": utcnow(),
                  "said": result[:4000] if result else None, "error": error_id}
        return _FINISH, values

    def finish_written(self, step: tuple) -> bool:
        return self._store.ack_writer.write(step) is not None

    def to_pending(self, job_id: int, holder: str, arguments: dict, expires_at: datetime, **fields) -> bool:
        """A checked request now waits for a second person; its runner lets go of it (`fields`: its rule, its reason)."""
        return self._change(
            job_id,
            [Job.state == RUNNING, Job.holder == holder],
            state=PENDING,
            arguments=arguments,
            expires_at=expires_at,
            holder=None,
            **fields,
        )

    def to_waiting(self, job_id: int, holder: str, stack: str, expires_at: datetime) -> bool:
        """An approved request whose stack's lock another change holds waits for it, held by no process (a restart
        keeps it); its runner lets go of it. The lock's release queues it again (ChangeLocks)."""
        return self._change(
            job_id, [Job.state == RUNNING, Job.holder == holder], state=WAITING, holder=None, waits_on=stack, expires_at=expires_at
        )

    def set_message(self, job_id: int, channel: str, ts: str) -> None:
        self._change(job_id, [], message_channel=channel, message_ts=ts)

    def approve(self, job_id: int, approver: str) -> bool:
        """pending -> queued, only for a live request and never by its requester; every replica's runners are woken
        after its commit (its caller rings this process's)."""
        now = utcnow()
        with self._store.session.begin() as session:
            won = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == PENDING, Job.expires_at > now, Job.requester != approver)
                .values(state=QUEUED, approver=approver, decided_at=now)
            ).rowcount == 1
        if won and self._postgres:
            self._announcer.soon()
        return won

    def decide(self, job_id: int, state: str, by: str, *, only_requester: bool = False) -> bool:
        """pending -> denied or cancelled (cancel only by the requester)."""
        where = [Job.state == PENDING]
        if only_requester:
            where.append(Job.requester == by)
        return self._change(job_id, where, state=state, approver=by, decided_at=utcnow(), finished_at=utcnow())

    def cancel_waiting(self, job_id: int, by: str) -> bool:
        """waiting -> cancelled, only by its requester; who approved it stays on the row."""
        return self._change(job_id, [Job.state == WAITING, Job.requester == by], state="cancelled", decided_at=utcnow(), finished_at=utcnow())

    # ---- sweeping --------------------------------------------------------------------------------

    def _take(self, where: list, state: str, **values) -> list[Job]:
        """Move every matching job to a final state, one conditional update each; returns the ones moved here."""
        with self._store.session() as session:
            candidates = session.scalars(select(Job).where(*where).order_by(Job.id)).all()
        moved = []
        for job in candidates:
            guard = [Job.state == job.state, Job.holder == job.holder] if job.holder else [Job.state == job.state]
            if self._change(job.id, guard, state=state, finished_at=utcnow(), **values):
                moved.append(self.get(job.id))
        return moved

    def expire_due(self) -> list[Job]:
        return self._take([Job.state.in_((PENDING, WAITING)), Job.expires_at <= utcnow()], "expired")

    def interrupt(self, *, holder: str | None = None, stale_after: float | None = None, local_dead: bool = False) -> list[Job]:
        """Running jobs whose holder is gone: a given holder, a runner whose heartbeat lapsed (or that never had one,
        once the job is older than that), or a dead process on this host."""
        where: list = [Job.state == RUNNING]
        if holder is not None:
            where.append(Job.holder == holder)
        elif stale_after is not None:
            cutoff = utcnow() - timedelta(seconds=stale_after)
            where += [Job.started_at < cutoff, Job.holder.not_in(select(RunnerRow.id).where(RunnerRow.heartbeat_at >= cutoff))]
        if local_dead:
            with self._store.session() as session:
                holders = set(session.scalars(select(Job.holder).where(*where)).all())
            dead = [h for h in holders if h and holder_is_dead(h)]
            if not dead:
                return []
            where.append(Job.holder.in_(dead))
        taken = self._take(where, "interrupted")
        if stale_after is not None:
            self._forget_silent_runners(utcnow() - timedelta(seconds=stale_after))
        return taken

    def _forget_silent_runners(self, cutoff: datetime) -> None:
        """Runners silent since the cutoff, whose jobs the sweep has just settled. Looked for first: on SQLite even
        a DELETE of nothing would take the one writer's lock, every sweep."""
        silent = RunnerRow.heartbeat_at < cutoff
        with self._store.session() as session:
            if session.scalar(select(RunnerRow.id).where(silent).limit(1)) is None:
                return
        with self._store.session.begin() as session:
            session.execute(delete(RunnerRow).where(silent))

    def drop_stale(self, older_than: float, commands: set[str]) -> list[Job]:
        """Queued, never checked, asked long ago: a late /health answers a question nobody is still asking."""
        cutoff = utcnow() - timedelta(seconds=older_than)
        return self._take(
            [Job.state == QUEUED, Job.arguments.is_(None), Job.created_at < cutoff, Job.command.in_(commands)], "dropped"
        )

    def pending(self, limit: int = 50) -> list[Job]:
        with self._store.session() as session:
            return list(session.scalars(select(Job).where(Job.state == PENDING).order_by(Job.id).limit(limit)))

    def waiting(self, limit: int = 50) -> list[Job]:
        """Approved requests waiting for the stack's lock, in the order they will run."""
        with self._store.session() as session:
            return list(session.scalars(select(Job).where(Job.state == WAITING).order_by(Job.decided_at, Job.id).limit(limit)))


class _Held(Exception):
    """The lock a hand-over wanted is someone else's: its transaction rolls back."""


class ChangeLocks:
    """One state-changing job per operated stack: a lock row with an owner and an expiry.

    An approved request that finds it held waits (JobQueue.to_waiting); whoever lets the lock go hands it, in the
    same transaction, to the request waiting longest (approved first) and queues that one, so the waiting ones run
    in approval order, one at a time, and no change asked meanwhile takes their turn. A lock let go while nobody
    saw it, or expired with a crashed holder, is handed over by the runners' sweep (hand_over_free)."""

    def __init__(self, store: Store, lease_seconds: float, describe: Callable[[Job], str] | None = None,
                 wake: Callable[[], None] = lambda: None):
        self._store = store
        self._lease = timedelta(seconds=lease_seconds)
        self._describe = describe or (lambda job: f"/{job.command} {job.text}".strip())  # the lock's `command`
        self._wake = wake  # this process's runners (on PostgreSQL every replica's too: the hand-over NOTIFYs)
        self._postgres = store.engine.dialect.name == "postgresql"

    def acquire(self, stack: str, job: Job, command_line: str) -> ChangeLock | None:
        """None when this job holds the lock now; otherwise the lock someone else holds."""
        now = utcnow()
        with self._store.session.begin() as session:
            taken = session.execute(
                update(ChangeLock)
                .where(ChangeLock.stack == stack, or_(ChangeLock.job_id == job.id, ChangeLock.expires_at < now))
                .values(job_id=job.id, requester=job.requester, command=command_line, acquired_at=now, expires_at=now + self._lease)
            ).rowcount
        if taken:
            return None
        try:
            with self._store.session.begin() as session:
                session.add(
                    ChangeLock(
                        stack=stack, job_id=job.id, requester=job.requester, command=command_line,
                        acquired_at=now, expires_at=now + self._lease,
                    )
                )
            return None
        except IntegrityError:
            with self._store.session() as session:
                held = session.get(ChangeLock, stack)
            if held is None:  # released between our two statements: try once more
                return self.acquire(stack, job, command_line)
            return held if held.job_id != job.id else None

    def held(self, stack: str) -> ChangeLock | None:
        """The lock a change holds on the stack now, if any (an expired one is a crashed holder's: not a change)."""
        with self._store.session() as session:
            return session.scalar(select(ChangeLock).where(ChangeLock.stack == stack, ChangeLock.expires_at >= utcnow()))

    def release(self, job_id: int) -> None:
        """This job's lock goes to the request waiting longest for it, or (none waiting) is let go."""
        with self._store.session() as session:  # looked for first: on SQLite a DELETE of nothing takes the writer's lock
            stacks = session.scalars(select(ChangeLock.stack).where(ChangeLock.job_id == job_id)).all()
        for stack in stacks:
            if self._hand_over(stack, releasing=job_id):
                continue
            with self._store.session.begin() as session:
                session.execute(delete(ChangeLock).where(ChangeLock.stack == stack, ChangeLock.job_id == job_id))
            self.hand_over_free([stack])  # a request that began to wait after our look: it saw the lock still ours

    def hand_over_free(self, stacks: list[str] | None = None) -> None:
        """Requests waiting for a lock that is free (let go while nobody saw it, or expired with a crashed holder) get
        it. Only reads while none waits. A lock handed to a queued request is its own until it runs, expired or not."""
        now = utcnow()
        with self._store.session() as session:
            waited = set(session.scalars(select(Job.waits_on).where(Job.state == WAITING).distinct()).all())
            if stacks is not None:
                waited &= set(stacks)
            if not waited:
                return
            live = or_(ChangeLock.expires_at >= now, ChangeLock.job_id.in_(select(Job.id).where(Job.state == QUEUED)))
            busy = set(session.scalars(select(ChangeLock.stack).where(ChangeLock.stack.in_(waited), live)).all())
        for stack in sorted(waited - busy):
            self._hand_over(stack, releasing=None)

    def _hand_over(self, stack: str, *, releasing: int | None) -> bool:
        """The oldest waiting request of this stack: queued, holding the lock (the releasing job's, or a free one), in
        one transaction; False when none waits or the lock is someone else's (then nothing changed)."""
        with self._store.session() as session:
            waiters = session.scalars(
                select(Job).where(Job.state == WAITING, Job.waits_on == stack).order_by(Job.decided_at, Job.id).limit(10)
            ).all()
        for waiter in waiters:
            now = utcnow()
            values = dict(job_id=waiter.id, requester=waiter.requester, command=self._describe(waiter), acquired_at=now,
                          expires_at=now + self._lease)
            try:
                with self._store.session.begin() as session:
                    queued = update(Job).where(Job.id == waiter.id, Job.state == WAITING).values(state=QUEUED)
                    if session.execute(queued).rowcount != 1:
                        continue  # cancelled or expired meanwhile, or handed the lock by another: the next one
                    if releasing is not None:
                        mine = update(ChangeLock).where(ChangeLock.stack == stack, ChangeLock.job_id == releasing)
                        if session.execute(mine.values(**values)).rowcount != 1:
                            raise _Held()
                    else:
                        unqueued = ChangeLock.job_id.not_in(select(Job.id).where(Job.state == QUEUED, Job.id != waiter.id))
                        expired = update(ChangeLock).where(ChangeLock.stack == stack, ChangeLock.expires_at < now, unqueued)
                        if session.execute(expired.values(**values)).rowcount != 1:
                            session.add(ChangeLock(stack=stack, **values))
                            session.flush()  # a live lock's row is there: IntegrityError, and nothing changed
                    if self._postgres:
                        session.execute(_NOTIFY, {"token": ANNOUNCER_TOKEN})
            except (_Held, IntegrityError):
                return False
            log.info("request #%s, waiting for the lock of %s, has it now", waiter.id, stack)
            self._wake()
            return True
        return False
