"""The audit trail: one row per decision, written in its own transaction so a failed command keeps it.

Observers (an incident's timeline) see each row after it is written; one that fails is logged and
never fails the command.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Callable, Literal

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from bot.frame.redact import redact, redact_value
from bot.frame.registry import Command, Invocation, command_line
from bot.store.engine import AuditEntry, Store, utcnow

log = logging.getLogger(__name__)

Outcome = Literal[
    "allowed", "denied", "rejected", "succeeded", "failed",
    # the steps of a request that needs a second person, each linked to its job
    "requested", "approved", "declined", "cancelled", "expired", "break-glass", "interrupted", "dropped",
    # an approved request that waits for the stack's lock another change holds
    "waiting",
    # a backup file deleted by the retention rules
    "pruned",
    # a reply Slack would not take within the delivery's bound (bot/adapters/slack/client.py)
    "undelivered",
    # a role granted for a while, back to the one before it at its end (bot/access)
    "reverted",
]


TEXT_LIMIT = 4000  # what is kept of a rejected command's text: enough to see what was tried


def _fit(value: str | None, width: int) -> str | None:
    """A string the column takes: no NUL (PostgreSQL refuses it, and the row would be lost), at most its width."""
    return None if value is None else value.replace("\x00", "\ufffd")[:width]


def _storable(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(key): _storable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_storable(item) for item in value]
    return value


_INSERT = insert(AuditEntry.__table__).returning(AuditEntry.id)  # built once: every command writes two rows
_JSON = ("arguments", "details")


# What the observers are told beside a row they did not ask for: nobody asked (see AuditLog.ask_with_each_row).
NOT_ASKED = object()


@dataclass(slots=True)
class AuditRow:
    """A row as it was written, as the observers see it: AuditEntry's columns, without the ORM's bookkeeping (two are
    written on every command's path); `asked`, the answer to the observers' question (ask_with_each_row)."""

    at: datetime
    user_id: str
    channel_id: str | None
    source: str
    command: str
    arguments: dict | None
    outcome: str
    duration_ms: int
    error: str | None
    error_id: str | None
    job_id: int | None
    origin: str | None
    details: dict | None
    id: int | None = None
    asked: object = NOT_ASKED


_COLUMNS = tuple(column.key for column in AuditEntry.__table__.columns if column.key != "id")
assert set(_COLUMNS) <= {field.name for field in fields(AuditRow)}, "AuditRow lacks a column of audit_log"


def _values(entry: AuditRow) -> dict:
    """The row's columns as the store's writer takes them: plain values, the JSON ones serialized as the ORM does
    (None as JSON null)."""
    values = {key: getattr(entry, key) for key in _COLUMNS}
    for key in _JSON:
        values[key] = json.dumps(values[key])
    return values


class AuditLog:
    def __init__(self, store: Store):
        self._store = store
        self.observers: list[Callable[[AuditRow], None]] = []
        self._asking = None  # the INSERT that also answers the observers' question (ask_with_each_row)

    def ask_with_each_row(self, question) -> None:
        """A scalar subquery on the row's channel (bindparam "asked_channel") answered by the row's own INSERT, in its
        round trip: the observers find the answer as `entry.asked`. The incidents' timeline asks for the channel's
        open incident, which it would otherwise read once more after every command's outcome row."""
        self._asking = insert(AuditEntry.__table__).returning(AuditEntry.id, question)

    def record(
        self,
        invocation: Invocation,
        outcome: Outcome,
        *,
        arguments: dict | None = None,
        duration_ms: int = 0,
        error: str | None = None,
        error_id: str | None = None,
        job_id: int | None = None,
        details: dict | None = None,
        also: tuple = (),
        observed: bool = True,
        at: datetime | None = None,
    ) -> None:
        """Write the row (stamped `at`, when what it records happened: a question's outcome row is written after its
        reply, and must still come before what was typed next) (with `also`, more (statement, params) steps of the store's writer, in the same transaction),
        then show it to the observers, unless the caller knows none needs it (`observed`)."""
        entry = AuditRow(
            at=at or utcnow(),
            user_id=_fit(invocation.user_id, 64),
            channel_id=_fit(invocation.channel_id, 64),
            source=invocation.source,
            command=_fit(invocation.command, 64),
            arguments=_storable(redact_value(arguments if arguments is not None else {"text": invocation.text[:TEXT_LIMIT]})),
            outcome=outcome,
            duration_ms=duration_ms,
            error=_fit(redact(error), 2000) if error else None,
            error_id=error_id,
            job_id=job_id,
            origin=_fit(invocation.origin, 64),
            details=_storable(redact_value(details)) if details else None,
        )
        observers = self.observers if observed else ()
        if observers and self._asking is not None:
            ((entry.id, entry.asked),) = self._store.ack_writer.write(
                *also, (self._asking, _values(entry) | {"asked_channel": entry.channel_id}), every_row=True)
        else:
            entry.id = self._store.ack_writer.write(*also, (_INSERT, _values(entry)))
        for observe in observers:
            try:
                observe(entry)
            except Exception:
                log.exception("an observer of the audit log failed on a %s row of /%s", outcome, entry.command)

    @staticmethod
    def latest(session: Session, count: int, before: int | None = None) -> list[AuditEntry]:
        query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(count)
        if before is not None:
            query = query.where(AuditEntry.id < before)
        return list(session.scalars(query))


def as_typed(entry: AuditEntry, commands: dict[str, Command]) -> str:
    """The command as its user would type it: the checked arguments in order (`/restart backend`), or the text as it
    came when it was refused before its arguments were checked."""
    arguments = entry.arguments or {}
    if set(arguments) == {"text"}:
        return f"/{entry.command} {arguments['text']}".rstrip()
    cmd = commands.get(entry.command)
    if cmd is None:  # a command this version no longer has
        return f"/{entry.command}"
    return command_line(cmd, {key: value for key, value in arguments.items() if value != ""})
