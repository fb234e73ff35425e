"""/restore --to TIME | --before INC-N | --before-release N: what is refused before anything is recovered or asked,
on the embedded store (the live recovery is tests/backups/test_pitr_live.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.frame.config import DatabaseSection, StackConfig
from bot.frame.roles import Role
from bot.store.engine import utcnow
from tests.conftest import grant, run

STACK = StackConfig.model_validate({
    "database": {"dsn": "postgresql://flowstate@127.0.0.1:1/app", "name": "app"},
})


@pytest.fixture
def runtime(make_runtime):
    runtime = make_runtime(STACK, admins=["UADMIN"])
    grant(runtime, "UOP", Role.operator)
    return runtime


@pytest.mark.parametrize("line, said", [
    ("/restore --to yesterday", "'yesterday' is not a time; give ISO 8601 such as 2026-12-05T14:03:05"),
    ("/restore --to '2026-12-05 14:03;rm -rf /'", "is not a time; give ISO 8601"),
    ("/restore --before INC-999", "There is no incident 'INC-999'; /incidents lists them, such as INC-12."),
    ("/restore --before 'x; drop'", "There is no incident"),
    ("/restore 12 --to 2026-12-05T14:03:05", "Give one of BACKUP_ID, --to TIME, --before INC-N or --before-release N"),
    ("/restore --to 2026-12-05T14:03:05 --before INC-1", "Give one of BACKUP_ID, --to TIME, --before INC-N or --before-release N"),
])
def test_bad_input_is_one_sentence_and_no_request(runtime, line, said):
    reply = run(runtime, "UOP", line)
    assert said in reply.text, reply.text
    assert runtime.jobs.pending() == []


def test_a_moment_in_the_future_is_refused(runtime):
    later = (utcnow() + timedelta(hours=1)).isoformat()
    reply = run(runtime, "UOP", f"/restore --to {later}")
    assert reply.text.endswith("is in the future; a restore can only go back."), reply.text


def test_without_a_compose_project_nothing_is_recovered(runtime):
    reply = run(runtime, "UOP", "/restore --to 2026-01-05T14:03:05+01:00")
    assert reply.text == "The stack file names no Compose project, so /restore cannot stop the app services.", reply.text
    assert runtime.jobs.pending() == []


def test_a_release_that_is_not_in_the_ledger_is_named(make_runtime):
    runtime = make_runtime(STACK, admins=["UADMIN"])
    grant(runtime, "UOP", Role.operator)
    reply = run(runtime, "UOP", "/restore --before-release 7")
    assert "deploy" in reply.text.lower() or "There is no release '7'" in reply.text, reply.text
