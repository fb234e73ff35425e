"""The audit trail: one row per decision, written in its own transaction so a failed command keeps it."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.redact import redact, redact_value
from bot.registry import Invocation
from bot.store import AuditEntry, Store, utcnow

Outcome = Literal[
    "allowed", "denied", "rejected", "succeeded", "failed",
    # the steps of a request that needs a second person, each linked to its job
    "requested", "approved", "declined", "cancelled", "expired", "break-glass", "interrupted", "dropped",
    # a backup file deleted by the retention rules
    "pruned",
]


class AuditLog:
    def __init__(self, store: Store):
        self._store = store

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
    ) -> None:
        entry = AuditEntry(
            at=utcnow(),
            user_id=invocation.user_id,
            channel_id=invocation.channel_id,
            source=invocation.source,
            command=invocation.command[:64],
            arguments=redact_value(arguments if arguments is not None else {"text": invocation.text}),
            outcome=outcome,
            duration_ms=duration_ms,
            error=redact(error)[:2000] if error else None,
            error_id=error_id,
            job_id=job_id,
        )
        with self._store.session.begin() as session:
            session.add(entry)

    @staticmethod
    def latest(session: Session, count: int) -> list[AuditEntry]:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(count))
        return list(rows)
