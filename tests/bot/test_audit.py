"""Observers of the audit log see every row once it is written; a failing one never fails the command."""

import logging

from bot.store.engine import AuditEntry
from tests.conftest import run


def test_an_observer_sees_each_row_after_it_is_written(make_runtime):
    runtime = make_runtime(admins=["UA"])
    seen = []

    def observe(entry: AuditEntry) -> None:
        with runtime.store.session() as session:  # already committed: another session sees it
            stored = session.get(AuditEntry, entry.id)
        seen.append((entry.command, entry.outcome, entry.channel_id, stored is not None))

    runtime.audit.observers.append(observe)
    run(runtime, "UA", "/whoami", channel="C0OPS")
    assert seen == [("whoami", "allowed", "C0OPS", True), ("whoami", "succeeded", "C0OPS", True)]


def test_a_failing_observer_is_logged_and_the_command_still_answers(make_runtime, caplog):
    runtime = make_runtime(admins=["UA"])

    def broken(entry: AuditEntry) -> None:
        raise RuntimeError("observer down")

    runtime.audit.observers.append(broken)
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UA", "/whoami")
    assert reply.text.startswith("You are <@UA> with the admin role") and not reply.failed
    assert "an observer of the audit log failed on a succeeded row of /whoami" in caplog.text
    with runtime.store.session() as session:
        assert [row.outcome for row in session.query(AuditEntry).order_by(AuditEntry.id)] == ["allowed", "succeeded"]
