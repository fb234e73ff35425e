"""/restart SERVICE... on a stack in memory (tests/fakes.py), on the embedded SQLite store: the bot's own
behaviour (refusals, order, the gate's verdict, approvals) without Docker. The live stack's own tests are in
tests/commands/test_health_live.py and tests/bot/test_fault_matrix.py."""

from __future__ import annotations

import pytest

from bot.frame.roles import Role
from tests.commands.test_users_live import run_approved
from tests.conftest import grant, run
from tests.fakes import FakeStack


@pytest.fixture
def restarts(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    runtime.stack = FakeStack(["backend", "frontend", "nginx"])
    yield runtime
    runtime.stack.pool.shutdown(wait=False)


def _audit_outcomes(runtime, command: str) -> list[str]:
    from sqlalchemy import select

    from bot.store.engine import AuditEntry

    with runtime.store.session() as session:
        return [e.outcome for e in session.scalars(select(AuditEntry).where(AuditEntry.command == command).order_by(AuditEntry.id))]


def test_an_unknown_service_is_refused_before_anyone_is_asked_and_nothing_restarts(restarts):
    grant(restarts, "UOP", Role.operator)
    reply = run(restarts, "UOP", "/restart backend wat")
    assert reply.text == "wat is not a service of fake; the services are backend, frontend, nginx."
    assert restarts.jobs.pending() == [], "no request was made"
    assert restarts.stack.fake.calls == []
    assert _audit_outcomes(restarts, "restart") == ["rejected"]


def test_an_approved_restart_restarts_each_service_in_order_and_reports_it_healthy(restarts):
    said = run_approved(restarts, "/restart frontend backend")
    assert said.startswith("Restarted\n🟢 *frontend* is healthy again after "), said
    assert "🟢 *backend* is healthy again after " in said
    assert restarts.stack.fake.calls == [("restart", ("frontend",)), ("restart", ("backend",))]
    assert _audit_outcomes(restarts, "restart")[-1] == "succeeded"


def test_a_service_that_does_not_come_back_fails_the_gate_and_the_next_one_waits(restarts):
    restarts.stack.fake.broken.add("frontend")
    said = run_approved(restarts, "/restart frontend backend")
    assert said.startswith("Restart failed\n🔴 *frontend* was restarted, but the stack is not healthy: Not healthy after "), said
    assert "frontend: exited with code 1" in said
    assert said.endswith("Not restarted after that failure: backend.")
    assert restarts.stack.fake.calls == [("restart", ("frontend",))], "backend was not touched"
    assert _audit_outcomes(restarts, "restart")[-1] == "failed"


def test_a_service_down_before_the_restart_is_named_and_not_counted_against_it(restarts):
    restarts.stack.fake.fail("nginx")
    said = run_approved(restarts, "/restart backend")
    assert said.startswith("Restarted\n🟢 *backend* is healthy again after "), said
    assert "(failing before and not counted: nginx)" in said
