"""The bot's database: migrations, time zones and the append-only audit, on SQLite and PostgreSQL."""

from datetime import timezone

import pytest
from sqlalchemy import delete, inspect, text, update
from sqlalchemy.exc import DBAPIError

from bot.frame.registry import Invocation
from bot.store.engine import AuditEntry, RoleAssignment, Store


def test_migrations_create_the_schema_and_are_idempotent(database_url):
    store = Store(database_url)
    store.migrate()
    store.migrate()  # a second start must not fail or change anything
    tables = set(inspect(store.engine).get_table_names())
    assert {"role_assignments", "audit_log", "alembic_version", "bot_jobs", "change_locks"} <= tables
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == _newest_migration()
    store.dispose()


def _newest_migration() -> str:
    from pathlib import Path

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import bot.store.migrations

    config = Config()
    config.set_main_option("script_location", str(Path(bot.store.migrations.__file__).parent))
    return ScriptDirectory.from_config(config).get_current_head()


def test_times_come_back_timezone_aware_utc(make_runtime, database_url):
    runtime = make_runtime(database_url=database_url)
    runtime.audit.record(Invocation("U1", "help", "", "C1"), "succeeded")
    with runtime.store.session() as session:
        entry = session.query(AuditEntry).one()
    assert entry.at.tzinfo is not None and entry.at.utcoffset() == timezone.utc.utcoffset(None)


@pytest.mark.parametrize("change", ["update", "delete"])
def test_the_database_refuses_to_change_audit_history(make_runtime, database_url, change):
    runtime = make_runtime(database_url=database_url)
    runtime.audit.record(Invocation("U1", "role", "grant U2 admin", "C1"), "denied")
    statement = update(AuditEntry).values(outcome="succeeded") if change == "update" else delete(AuditEntry)
    with pytest.raises(DBAPIError, match="append-only"):
        with runtime.store.session.begin() as session:
            session.execute(statement)
    with runtime.store.session() as session:
        assert [row.outcome for row in session.query(AuditEntry)] == ["denied"]


def test_role_assignments_round_trip(make_runtime, database_url):
    from tests.conftest import grant
    from bot.frame.roles import Role

    runtime = make_runtime(database_url=database_url)
    grant(runtime, "U2", Role.approver)
    assert runtime.authz.role_of("U2") is Role.approver
    with runtime.store.session() as session:
        row = session.get(RoleAssignment, "U2")
    assert row.granted_by == "UADMIN" and row.granted_at.tzinfo is not None
