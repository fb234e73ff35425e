"""/backup setup-pitr when its restart goes wrong: the Docker engine refusing, PostgreSQL not starting with them.

What is promised: PostgreSQL runs afterwards with the settings it had (archiving off, nothing left in
postgresql.auto.conf for the next restart to apply), and the reply says so. Faults come at the step boundary
(bot/frame/faults.py), on the live stack's server. The module leaves archiving off.
"""

import psycopg
import pytest

from bot.backups.archive import recover_setup
from tests.backups.archiving import admin, archiving_off, bases, in_auto_conf, runtime_for, setting, setup_pitr, wait_for_postgres
from tests.conftest import run
from tests.faults import RefusingDocker


@pytest.fixture(autouse=True)
def _archiving_off(live_stack, stack_container):
    stack_container("postgres")  # started again afterwards, whatever happened
    archiving_off(live_stack)
    yield
    archiving_off(live_stack)


def _as_before(stack) -> None:
    wait_for_postgres(stack, seconds=5)
    assert (setting(stack, "archive_mode"), setting(stack, "wal_level")) == ("off", "replica")
    assert in_auto_conf(stack) == {}, "nothing waits in postgresql.auto.conf for the next restart"


def test_a_docker_error_at_the_restart_leaves_postgresql_running_with_its_old_settings(make_runtime, tmp_path, app_db, stack_container):
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)
    started = stack_container("postgres").attrs["State"]["StartedAt"]
    refusing = RefusingDocker(runtime, tmp_path)
    runtime.fault = lambda point: refusing() if point == "setup-pitr:after_settings" else None

    _asked, reply = setup_pitr(runtime)

    assert reply.failed, reply.text
    assert "🟢 1. Set wal_level, archive_mode, archive_command and archive_timeout" in reply.text
    assert "🔴 2. Restarting postgres failed: The Docker engine is not reachable at unix://" in reply.text, reply.text
    assert "PostgreSQL runs with its old settings; the changes are undone (it was not restarted with them)." in reply.text
    _as_before(app_db.stack)
    container = stack_container("postgres")
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started, "not restarted"
    assert bases(runtime) == []


def test_postgresql_not_starting_after_the_restart_gets_its_old_settings_back(make_runtime, tmp_path, app_db, stack_container):
    """The restart fails: the settings the server restarts with cannot start it (wal_level minimal with archiving)."""
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)

    def unstartable(point: str) -> None:
        if point == "setup-pitr:after_settings":
            with psycopg.connect(app_db.dsn, autocommit=True) as conn:
                conn.execute("ALTER SYSTEM SET wal_level = minimal")

    runtime.fault = unstartable
    _asked, reply = setup_pitr(runtime)

    assert reply.failed, reply.text
    assert "🔴 2. PostgreSQL exited after the restart: " in reply.text and "wal_level" in reply.text, reply.text
    assert (
        "Its old postgresql.auto.conf is put back and postgres started again: PostgreSQL runs with its old settings." in reply.text
    ), reply.text
    _as_before(app_db.stack)
    container = stack_container("postgres")
    container.reload()
    assert container.status == "running"
    assert bases(runtime) == []


def test_setup_pitr_without_a_pitr_section_is_refused_before_a_request_is_made(make_runtime, tmp_path, app_db):
    stack = app_db.stack.model_copy(update={"pitr": None})
    runtime = runtime_for(make_runtime, tmp_path, stack)
    reply = run(runtime, "UOP", "/backup setup-pitr")
    assert reply.text.startswith("/backup cannot run: the stack file") and "has no [pitr] section" in reply.text, reply.text
    assert "has no [pitr] section" in run(runtime, "UOP", "/backup base").text
    assert setting(app_db.stack, "archive_mode") == "off"


def test_setup_pitr_is_refused_during_a_change_freeze_while_a_backup_is_not(make_runtime, tmp_path, app_db):
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)
    run(runtime, "UAPP", '/freeze 2h "release day"')
    refused = run(runtime, "UOP", "/backup setup-pitr").text
    assert refused.startswith("/backup setup-pitr is refused: changes are frozen until ") and refused.endswith(
        "it restarts PostgreSQL, so ask after the freeze."
    ), refused
    assert runtime.jobs.pending() == [], "no request was made"
    assert run(runtime, "UOP", "/backup during the freeze").text.startswith("✅ Backup #")
    assert setting(app_db.stack, "archive_mode") == "off"


def test_after_a_crash_before_the_restart_the_settings_waiting_for_it_are_undone(make_runtime, tmp_path, app_db):
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)
    with admin(app_db.stack) as conn:  # what setup-pitr had written when the bot died
        conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
        conn.execute("SELECT pg_reload_conf()")

    said = recover_setup(runtime.stack)

    assert said == (
        "It was turning archiving on and had not restarted PostgreSQL: the settings waiting for a restart are undone, "
        "and PostgreSQL runs with archive_mode off as before; /backup setup-pitr starts over."
    )
    assert in_auto_conf(app_db.stack).get("archive_mode", "off") == "off", "the next restart keeps archiving off"
