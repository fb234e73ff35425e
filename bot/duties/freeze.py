"""Change freezes: typed with /freeze or weekly windows of the stack file; what they refuse, hold and summarise.

A freeze is a row (bot/duties/model.py Freeze). A window's occurrence gets its row when a replica first sees it
active (INSERT ... ON CONFLICT DO NOTHING on its key). Its start is handled once: the replica whose
`UPDATE ... WHERE started_at IS NULL` wins queues a backup (as the duties are queued, in the same transaction) and
tells the ops channel; its end once too: whoever sets `ended_at` (/freeze end, or the sweep at its time) posts the
summary of the watch alerts the freeze held back. "Now" is the scheduler's clock, so tests move it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, update

from bot.duties.model import Freeze, FreezeAlert
from bot.duties.slots import WEEKDAYS, local_instant, parse_time
from bot.frame import blocks
from bot.frame.humanize import count
from bot.frame.registry import CommandError, Invocation, Reply
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from bot.frame.config import FreezeWindow

log = logging.getLogger(__name__)

TYPED, WINDOW = "typed", "window"


@dataclass(frozen=True)
class Occurrence:
    """One freeze of a stack file window, in UTC."""

    starts_at: datetime
    ends_at: datetime
    reason: str

    @property
    def key(self) -> str:
        return f"window:{self.starts_at:%Y%m%dT%H%MZ}:{self.ends_at:%Y%m%dT%H%MZ}"


def occurrences(window: "FreezeWindow", tz: "ZoneInfo", around: datetime) -> list[Occurrence]:
    """The window's freezes that start within 8 days either side of AROUND (one lasts at most a week)."""
    today = around.astimezone(tz).date()
    start_at = parse_time(window.start)
    end_day, _, end_text = window.end.rpartition(" ")
    end_at = parse_time(end_text)
    found = []
    for offset in range(-8, 9):
        day = today + timedelta(days=offset)
        if WEEKDAYS[day.weekday()] not in window.days:
            continue
        start = local_instant(day, start_at, tz)
        if end_day:
            last = day + timedelta(days=(WEEKDAYS.index(end_day) - day.weekday()) % 7)
            if local_instant(last, end_at, tz) <= start:
                last += timedelta(days=7)
        else:
            last = day if end_at > start_at else day + timedelta(days=1)
        found.append(Occurrence(start, local_instant(last, end_at, tz), window.reason))
    return found


def _insert_freeze(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    table = Freeze.__table__
    return dialect_insert(table).on_conflict_do_nothing(index_elements=[table.c.key])


class Scheduler(Protocol):
    """What freezes use of the scheduler (bot/duties/service.py Duties), which owns them."""

    rt: Any
    clock: Any
    backup_at_freeze: Any  # the duty a freeze's start queues

    def invocation(self, command: str, text: str = "") -> Invocation: ...

    def say(self, text: str) -> str | None: ...

    def queue(self, session, duty, slot: datetime) -> int | None: ...


class Freezes:
    def __init__(self, duties: Scheduler):
        self._duties = duties
        self._insert = _insert_freeze(duties.rt.store.engine.dialect.name)

    @property
    def _store(self):
        return self._duties.rt.store

    def now(self) -> datetime:
        return self._duties.clock.now()

    # ---- which freeze, when ----------------------------------------------------------------------

    def _windows(self, around: datetime) -> list[Occurrence]:
        tz = self._duties.rt.settings.tz
        return [found for window in self._duties.rt.stack.config.freeze.window for found in occurrences(window, tz, around)]

    def _materialize(self, now: datetime) -> None:
        """A window's freeze that is on now gets its row (once across replicas: its key is unique). Looked for first:
        a window lasts hours and the sweep runs every few seconds, and on SQLite even an ignored INSERT takes the one
        writer's lock that the acks wait on."""
        on = [found for found in self._windows(now) if found.starts_at <= now < found.ends_at]
        if not on:
            return
        with self._store.session() as session:
            stored = set(session.scalars(select(Freeze.key).where(Freeze.key.in_([found.key for found in on]))))
        on = [found for found in on if found.key not in stored]
        if not on:
            return
        with self._store.session.begin() as session:
            for found in on:
                session.execute(self._insert, dict(
                    key=found.key, kind=WINDOW, reason=found.reason, frozen_by=self._duties.invocation("freeze").user_id,
                    starts_at=found.starts_at, ends_at=found.ends_at, created_at=utcnow(),
                ))

    def active(self, now: datetime | None = None) -> list[Freeze]:
        """The freezes on at NOW (the scheduler's clock), the one that ends last first."""
        now = now or self.now()
        self._materialize(now)
        with self._store.session() as session:
            return list(session.scalars(
                select(Freeze).where(Freeze.starts_at <= now, Freeze.ends_at > now, Freeze.ended_at.is_(None)).order_by(Freeze.ends_at.desc())
            ))

    def next_window(self, now: datetime) -> Occurrence | None:
        coming = [found for found in self._windows(now) if found.starts_at > now]
        return min(coming, key=lambda found: found.starts_at) if coming else None

    def until(self, moment: datetime, now: datetime | None = None) -> str:
        """A freeze's end as people read it: the time alone today, with the day otherwise."""
        tz = self._duties.rt.settings.tz
        local = moment.astimezone(tz)
        if local.date() == (now or self.now()).astimezone(tz).date():
            return f"{local:%H:%M %Z}"
        return f"{local:%a %Y-%m-%d %H:%M %Z}"

    def phrase(self, freeze: Freeze, now: datetime | None = None) -> str:
        """"frozen until 18:00 UTC by <@U1>: release day"."""
        by = f"<@{freeze.frozen_by}>" if freeze.kind == TYPED else "the stack file's freeze window"
        return f"frozen until {self.until(freeze.ends_at, now)} by {by}: {freeze.reason}"

    def frozen(self) -> str | None:
        """Why changes are refused now ("frozen until …"), or None when nothing is frozen: what the pipeline asks."""
        active = self.active()
        return self.phrase(active[0]) if active else None

    def banner(self) -> str | None:
        """What /health, /stats and the daily report open with during a freeze."""
        frozen = self.frozen()
        return f"🧊 Change freeze: changes are {frozen}; commands that change the stack are refused until then." if frozen else None

    def with_banner(self, reply: Reply) -> Reply:
        banner = self.banner()
        if banner is None:
            return reply
        return dataclasses.replace(reply, text=f"{banner}\n{reply.text}", blocks=[blocks.section(banner), *reply.blocks])

    # ---- starting ------------------------------------------------------------------------------

    def freeze(self, user_id: str, length: timedelta, reason: str) -> list[str]:
        """A typed freeze from now: its row, then its start (announced, a backup queued); what was said."""
        now = self.now()
        active = self.active(now)
        if active:
            raise CommandError(f"Changes are already {self.phrase(active[0], now)}; /freeze end ends that freeze first.")
        frozen = Freeze(kind=TYPED, reason=reason, frozen_by=user_id, starts_at=now, ends_at=now + length, created_at=utcnow())
        with self._store.session.begin() as session:
            session.add(frozen)
        # Another replica's sweep may have handled its start already: then the phrase alone.
        return self.start_due(now) or [f"🧊 Changes to {self._duties.rt.stack_name} are {self.phrase(frozen, now)}."]

    def start_due(self, now: datetime) -> list[str]:
        """Freezes on now whose start nobody handled yet: the replica whose UPDATE wins queues the backup and tells."""
        with self._store.session() as session:
            waiting = list(session.scalars(select(Freeze).where(
                Freeze.started_at.is_(None), Freeze.ended_at.is_(None), Freeze.starts_at <= now, Freeze.ends_at > now,
            )))
        said = []
        for freeze in waiting:
            backup = self._duties.backup_at_freeze
            database = self._duties.rt.stack.config.database is not None
            with self._store.session.begin() as session:
                won = session.execute(
                    update(Freeze).where(Freeze.id == freeze.id, Freeze.started_at.is_(None)).values(started_at=now)
                ).rowcount == 1
                job_id = self._duties.queue(session, backup, freeze.starts_at) if won and database else None
                if job_id is not None:
                    session.execute(update(Freeze).where(Freeze.id == freeze.id).values(backup_job_id=job_id))
            if not won:
                continue
            if job_id is not None:
                self._duties.rt.wake()
            if freeze.kind == WINDOW:
                self._audit(freeze, "start")
            said.append(self._announce_start(freeze, now, job_id, database))
        return said

    def _announce_start(self, freeze: Freeze, now: datetime, job_id: int | None, database: bool) -> str:
        if job_id is not None:
            backup = f"A backup is queued (request #{job_id}); /backups shows it once it is taken."
        elif database:
            backup = "No backup was queued: one for this moment is already taken or queued; /backups shows it."
        else:
            backup = "No backup was taken: the stack file has no [database] section."
        text = (
            f"🧊 Changes to {self._duties.rt.stack_name} are {self.phrase(freeze, now)}. Commands that change the stack are "
            f"refused until then (an admin may still use --break-glass \"REASON\"), and watch alerts are held for a summary "
            f"at its end. {backup}"
        )
        self._duties.say(text)
        return text

    # ---- ending --------------------------------------------------------------------------------

    def end(self, user_id: str) -> list[str]:
        """/freeze end: every freeze on now ends now, each once (a second click finds none); the summaries."""
        now = self.now()
        active = self.active(now)
        if not active:
            raise CommandError("Nothing is frozen now, so there is nothing to end; /freeze shows the next freeze.")
        said = [self._finish(freeze, now, user_id, early=True) for freeze in active]
        said = [text for text in said if text is not None]
        if not said:
            raise CommandError("That freeze was just ended by someone else; nothing more was changed.")
        return said

    def end_due(self, now: datetime) -> list[str]:
        """Freezes whose time is up: ended at their time, once, by the scheduler (with its audit row)."""
        with self._store.session() as session:
            due = list(session.scalars(select(Freeze).where(Freeze.ended_at.is_(None), Freeze.ends_at <= now)))
        said = []
        for freeze in due:
            text = self._finish(freeze, freeze.ends_at, self._duties.invocation("freeze").user_id, early=False)
            if text is not None:
                self._audit(freeze, "end")
                said.append(text)
        return said

    def _finish(self, freeze: Freeze, at: datetime, by: str, *, early: bool) -> str | None:
        with self._store.session.begin() as session:
            won = session.execute(
                update(Freeze).where(Freeze.id == freeze.id, Freeze.ended_at.is_(None)).values(ended_at=at, ended_by=by)
            ).rowcount == 1
        if not won or freeze.started_at is None and not early:
            return None  # another replica or person ended it; or it came and went while no replica ran: nothing to tell
        text = self.summary(freeze, at, by if early else None)
        self._duties.say(text)
        return text

    def summary(self, freeze: Freeze, at: datetime, early_by: str | None) -> str:
        with self._store.session() as session:
            alerts = list(session.scalars(select(FreezeAlert).where(FreezeAlert.freeze_id == freeze.id).order_by(FreezeAlert.fired_at, FreezeAlert.id)))
        who = f"<@{freeze.frozen_by}>" if freeze.kind == TYPED else "the stack file's freeze window"
        how = f"was ended early by <@{early_by}>" if early_by else "ended"
        head = f"🔓 The change freeze by {who} ({freeze.reason}) {how} at {self.until(at, at)}; changes are allowed again."
        if not alerts:
            return f"{head} No watch alert fired during the freeze."
        listed = "; ".join(f"{alert.key} at {self.until(alert.fired_at, at)}: {alert.detail}" for alert in alerts[:20])
        more = f"; and {len(alerts) - 20} more" if len(alerts) > 20 else ""
        return f"{head} During the freeze {count(len(alerts), 'alert')} fired: {listed}{more}. /watch shows what still fires."

    def _audit(self, freeze: Freeze, action: str) -> None:
        """The scheduler's own row for what no person typed: a window's start, a freeze's end at its time."""
        invocation = self._duties.invocation("freeze", action)
        self._duties.rt.audit.record(
            dataclasses.replace(invocation, channel_id=None), "succeeded",
            arguments={"action": action, "freeze": freeze.id, "kind": freeze.kind, "reason": freeze.reason,
                       "until": freeze.ends_at.isoformat()},
        )

    # ---- the watch and the sweep -------------------------------------------------------------------

    @staticmethod
    def hold(session, freeze: Freeze, key: str, detail: str, since: datetime, now: datetime) -> None:
        """A watch alert that fires during FREEZE: kept for its summary instead of posted, once per firing (in the
        watch's transaction)."""
        held = session.scalar(
            select(FreezeAlert.id).where(FreezeAlert.freeze_id == freeze.id, FreezeAlert.key == key, FreezeAlert.fired_at >= since).limit(1)
        )
        if held is None:
            session.add(FreezeAlert(freeze_id=freeze.id, key=key, detail=detail[:2000], fired_at=now))

    def sweep(self) -> None:
        """The runner's sweep: windows that came get their row, starts and ends that came are handled, each once."""
        now = self.now()
        self._materialize(now)
        self.start_due(now)
        self.end_due(now)


def shown(freezes: Freezes) -> list[str]:
    """What /freeze shows: the freezes on now, or the next window."""
    now = freezes.now()
    active = freezes.active(now)
    if active:
        return [f"🧊 Changes are {freezes.phrase(freeze, now)}." for freeze in active] + [
            "Commands that change the stack are refused until then; an approver may end it early with /freeze end."
        ]
    coming = freezes.next_window(now)
    if coming is not None:
        return [f"Nothing is frozen now. The next freeze window starts {freezes.until(coming.starts_at, now)} and lasts until "
                f"{freezes.until(coming.ends_at, now)}: {coming.reason}."]
    return ["Nothing is frozen now, and the stack file has no freeze window; an approver freezes changes with /freeze DURATION \"REASON\"."]
