"""/logs on a stack in memory (tests/fakes.py): which service, which lines, what is hidden; no Docker needed.
Reading a real container's log is tests/deploy/test_logs_live.py."""

from __future__ import annotations

import pytest

from bot.frame.roles import Role
from tests.conftest import grant, run
from tests.fakes import FakeStack


@pytest.fixture
def runtime(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    runtime.stack = FakeStack(["backend", "frontend"])
    grant(runtime, "UOP", Role.operator)
    yield runtime
    runtime.stack.pool.shutdown(wait=False)


def test_an_unknown_service_is_refused_with_the_known_ones(runtime):
    assert run(runtime, "UOP", "/logs wat").text == "wat is not a service of fake; the services are backend, frontend."


def test_a_services_lines_are_shown_with_secrets_redacted_and_grep_keeps_only_matching_lines(runtime):
    runtime.stack.fake.log_lines["backend"] = [
        "2026-12-05T10:00:00Z GET /api/items 200",
        "2026-12-05T10:00:01Z connecting with password=hunter2secret",
        "2026-12-05T10:00:02Z GET /api/items 500",
    ]
    shown = run(runtime, "UOP", "/logs backend").text
    assert shown.startswith("3 log lines of backend since 15m\n"), shown
    assert "hunter2secret" not in shown and "GET /api/items 500" in shown
    filtered = run(runtime, "UOP", "/logs backend --grep 500").text
    assert filtered == "1 log line of backend since 15m containing 500\n2026-12-05T10:00:02Z GET /api/items 500"
    assert run(runtime, "UOP", "/logs backend --grep nothing-like-it").text == (
        "No log lines of backend since 15m containing nothing-like-it (3 lines read)."
    )
