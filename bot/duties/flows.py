"""What the daily report, the nightly backup and the weekly drill do: the commands a person would run, as the scheduler.

Each walks the request pipeline (role check, audit, the stack's one-change lock for /backup) exactly as
typed commands do; the duty then posts the result to the ops channel. A failure is loud: it mentions the
approver group (FLOWSTATE_APPROVER_GROUP) with the error.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from bot.frame import blocks
from bot.backups.archive import archiving_state, window_report
from bot.backups.model import BASE, OK, Backup
from bot.duties.service import SCHEDULER, Outcome
from bot.frame.registry import Reply
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.duties.service import Duties

NIGHTLY_NOTE = "nightly"
FREEZE_NOTE = "freeze"


def _first_line(reply: Reply) -> str:
    return next((line for line in reply.text.splitlines() if line.strip()), "(no answer)")[:300]


def _loud(duties: "Duties", title: str, error: str) -> None:
    group = duties.rt.settings.approver_group
    who = f"<!subteam^{group}> " if group else ""
    duties.post(Reply(f"🚨 {who}{title}: {error}", [blocks.section(f"🚨 {who}*{title}*"), *blocks.sections(error.splitlines())], in_channel=True))


def daily_report(duties: "Duties", slot: datetime) -> Outcome:
    """/health and /stats, unasked: one line when all is well, both in full when not."""
    health = duties.rt.pipeline.dispatch(duties.invocation("health"))
    stats = duties.rt.pipeline.dispatch(duties.invocation("stats"))
    day = f"{slot.astimezone(duties.rt.settings.tz):%a %Y-%m-%d}"
    verdicts = f"{health.text.splitlines()[-1]}; {stats.text.splitlines()[-1]}"
    frozen = duties.freezes.banner()
    opening = f"{frozen}\n" if frozen else ""
    window = _window(duties, slot)
    if health.healthy and stats.healthy:
        duties.say(f"{opening}☀️ Daily report for {day}: {verdicts} (/health and /stats show the details).{window}")
        return Outcome(True, f"all well: {verdicts}")
    state = "not all is well" if False in (health.healthy, stats.healthy) else "part of the stack is not measured"
    duties.say(f"{opening}☀️ Daily report for {day}: {state}; /health and /stats follow.{window}")
    duties.post(health)
    duties.post(stats)
    problems = "health failing" if health.healthy is False else "health not measured" if health.healthy is None else "health ok"
    thresholds = "thresholds crossed" if stats.healthy is False else "stats not measured" if stats.healthy is None else "stats ok"
    return Outcome(True, f"posted; {problems}, {thresholds}")


def _window(duties: "Duties", slot: datetime) -> str:
    """The point-in-time window's lines for the report (nothing without [pitr]); a gap or a failing archiver is also
    said loudly, apart."""
    stack = duties.rt.stack
    if stack.config.pitr is None or stack.config.database is None:
        return ""
    tz = duties.rt.settings.tz
    lines, trouble = window_report(stack, duties.rt.store, utcnow(), lambda moment: f"{moment.astimezone(tz):%Y-%m-%d %H:%M:%S %Z}")
    if trouble:
        _loud(duties, f"The WAL archive of {duties.rt.stack_name} needs attention ({duties.when(slot)})", "\n".join(lines))
    return "".join(f"\n{line}" for line in lines)


def _newest_backup_id(duties: "Duties") -> int:
    with duties.rt.store.session() as session:
        return session.scalar(select(func.max(Backup.id))) or 0


def nightly_backup(duties: "Duties", slot: datetime) -> Outcome:
    """/backup nightly (with its retention); success is a new complete backup in the catalogue, nothing less. When
    the stack file has [pitr] and PostgreSQL archives, /backup base too (with the base backups' retention)."""
    dump = _backup(duties, slot, NIGHTLY_NOTE, "The nightly backup")
    stack = duties.rt.stack
    if stack.config.pitr is None or stack.config.database is None or not archiving_state(stack)[0]:
        return dump
    base = _backup(duties, slot, "base", "The nightly base backup", kind=BASE)
    return Outcome(dump.ok and base.ok, f"{dump.summary}; {base.summary.replace('backup #', 'base backup #')}")


def freeze_backup(duties: "Duties", slot: datetime) -> Outcome:
    """/backup freeze, queued once when a change freeze starts (bot/duties/freeze.py)."""
    return _backup(duties, slot, FREEZE_NOTE, "The backup at the start of the freeze")


def _backup(duties: "Duties", slot: datetime, note: str, title: str, kind: str | None = None) -> Outcome:
    before = _newest_backup_id(duties)
    reply = duties.rt.pipeline.dispatch(duties.invocation("backup", note))
    same_kind = Backup.kind == BASE if kind == BASE else Backup.kind != BASE
    with duties.rt.store.session() as session:
        taken = session.scalars(
            select(Backup).where(Backup.id > before, Backup.requested_by == SCHEDULER, Backup.state == OK, same_kind)
            .order_by(Backup.id.desc())
        ).first()
    if taken is None or reply.failed:
        _loud(duties, f"{title} of {duties.when(slot)} failed", reply.text)
        return Outcome(False, f"failed: {_first_line(reply)}")
    duties.post(reply)
    return Outcome(True, f"backup #{taken.id} taken")


def restore_drill(duties: "Duties", slot: datetime) -> Outcome:
    """/backup verify of the newest complete backup: a real test restore; its result is stored with the backup."""
    with duties.rt.store.session() as session:
        newest = session.scalars(
            select(Backup).where(Backup.stack == duties.rt.stack_name, Backup.state == OK, Backup.kind != BASE)
            .order_by(Backup.id.desc())
        ).first()
    if newest is None:
        error = f"there is no complete backup of {duties.rt.stack_name} to verify; /backup takes one."
        _loud(duties, f"The weekly restore drill of {duties.when(slot)} failed", error)
        return Outcome(False, f"failed: {error}")
    started = utcnow()
    reply = duties.rt.pipeline.dispatch(duties.invocation("backup", f"verify {newest.id}"))
    with duties.rt.store.session() as session:
        checked = session.get(Backup, newest.id)
    if not (checked.verified_ok and checked.verified_at and checked.verified_at >= started):
        _loud(duties, f"The weekly restore drill of {duties.when(slot)} failed on backup #{newest.id}", reply.text)
        return Outcome(False, f"backup #{newest.id} failed: {_first_line(reply)}")
    duties.post(reply)
    return Outcome(True, f"backup #{newest.id} verified by a test restore")
