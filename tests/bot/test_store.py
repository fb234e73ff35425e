"""The bot's database: migrations, time zones and the append-only audit, on SQLite and PostgreSQL."""

import time
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


def test_a_write_refused_by_the_database_writes_none_of_its_steps_and_the_next_one_lands(make_runtime, database_url):
    """The store's writer sends a transaction's statements together (PostgreSQL's pipeline mode): one that fails
    leaves none of the others written, and the connection serves the next write."""
    from bot.jobs.model import Job
    from bot.jobs.queue import ReplayedRequest

    runtime = make_runtime(database_url=database_url)
    asked = Invocation("U1", "whoami", "", "C1")
    first = runtime.jobs.submit(asked, dedupe_key="k1", signature="v0=same")
    with pytest.raises(ReplayedRequest):
        runtime.jobs.submit(asked, dedupe_key="k2", signature="v0=same")  # its job row comes after the refused signature
    second = runtime.jobs.submit(asked, dedupe_key="k3", signature="v0=other")
    with runtime.store.session() as session:
        assert [(job.id, job.dedupe_key) for job in session.query(Job).order_by(Job.id)] == [(first, "k1"), (second, "k3")]

    # A LATER step refused: the earlier one of the same write is not kept either.
    from sqlalchemy.exc import IntegrityError

    from bot.store.engine import SEEN_REQUEST, SeenRequest, utcnow

    with pytest.raises(IntegrityError):
        runtime.store.ack_writer.write((SEEN_REQUEST, {"signature": "v0=fresh", "seen_at": utcnow()}),
                                       (SEEN_REQUEST, {"signature": "v0=same", "seen_at": utcnow()}))
    with runtime.store.session() as session:
        assert session.get(SeenRequest, "v0=fresh") is None
    # Values travel as values, whatever they hold (on PostgreSQL they are quoted into the query by libpq).
    typed = "it's 100% done'); DROP TABLE bot_jobs; -- \\ ; %(x)s $1 ü"
    third = runtime.jobs.submit(Invocation("U1", "whoami", typed, "C1"), dedupe_key="k4")
    assert runtime.jobs.get(third).text == typed


def test_connections_the_database_ended_while_idle_are_replaced_before_use(make_runtime, postgres_url, postgres_admin):
    """No ping before every use: a connection PostgreSQL ended (a restart, an administrator) is seen from its socket and
    replaced, so the next command neither fails nor is written twice."""
    import psycopg

    runtime = make_runtime(database_url=postgres_url)
    asked = Invocation("U1", "whoami", "", "C1")
    runtime.jobs.submit(asked, dedupe_key="before")  # the writer keeps its connection; the pool has one idle too
    with runtime.store.session() as session:
        session.query(AuditEntry).all()
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_admin, autocommit=True) as admin:
        ended = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]
        assert ended >= 2
        for _ in range(100):  # the backends have gone (their farewell sent), as after a restart
            if not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)).fetchone()[0]:
                break
            time.sleep(0.05)
    runtime.jobs.submit(asked, dedupe_key="after")
    runtime.audit.record(asked, "succeeded")
    with runtime.store.session() as session:
        assert [row.outcome for row in session.query(AuditEntry)] == ["succeeded"]
    from bot.jobs.model import Job

    with runtime.store.session() as session:
        assert sorted(job.dedupe_key for job in session.query(Job)) == ["after", "before"]


def _kept_connections(runtime):
    return [connection.dbapi_connection for connection in runtime.store.ack_writer._free]


def test_the_writers_prepared_statements_survive_another_replicas_migration_and_a_reset_server(make_runtime, postgres_url):
    """On PostgreSQL the writer's statements are prepared once per connection. A migration run by another replica that
    changes what a prepared statement returns, and a server that forgot them (DEALLOCATE ALL, as a connection pooler
    resets), do not fail the next command, and nothing is written twice. (Audit rows only: a job's row would wake the
    announcer's thread, which takes the writer's connections this test reaches into.)"""
    import psycopg

    runtime = make_runtime(database_url=postgres_url)
    asked = Invocation("U1", "whoami", "", "C1")
    runtime.audit.record(asked, "allowed")
    (kept,) = _kept_connections(runtime)
    assert kept.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 1  # the row's INSERT

    with psycopg.connect(postgres_url, autocommit=True) as other:  # the INSERT's RETURNING id changes its type
        other.execute("ALTER TABLE audit_log ALTER COLUMN id TYPE bigint")
    runtime.audit.record(asked, "succeeded")

    kept.execute("DEALLOCATE ALL")
    runtime.audit.record(asked, "failed")
    assert _kept_connections(runtime) == [kept]  # the same connection, its statement prepared again
    assert kept.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 1
    with runtime.store.session() as session:
        assert [row.outcome for row in session.query(AuditEntry).order_by(AuditEntry.id)] == ["allowed", "succeeded", "failed"]


def test_a_statement_postgresql_will_not_prepare_is_sent_as_text(make_runtime, postgres_url):
    """PostgreSQL prepares no statement whose parameter's type it cannot tell (`$1 IS NULL`): the writer sends that one
    with its values in the text, every time, and the answer is the same."""
    runtime = make_runtime(database_url=postgres_url)
    asked = text("SELECT 'found' WHERE :maybe IS NULL")
    assert runtime.store.ack_writer.read(asked, {"maybe": None}) == "found"
    assert runtime.store.ack_writer.read(asked, {"maybe": "set"}) is None
    assert runtime.store.ack_writer.read(asked, {"maybe": None}) == "found"
