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


def _grouped(runtime, postgres_url, writes):
    """Run `writes` (callables) while a first write waits on a lock, so they queue behind it and are written
    together as the next group; each one's result or exception, in order."""
    import threading

    import psycopg

    writer = runtime.store.ack_writer
    outcomes: list = [None] * len(writes)

    def run(index, write):
        try:
            outcomes[index] = write()
        except Exception as error:
            outcomes[index] = error

    with psycopg.connect(postgres_url) as holder:
        holder.execute("LOCK TABLE audit_log IN SHARE ROW EXCLUSIVE MODE")  # INSERTs into it wait
        first = threading.Thread(target=run, args=(0, writes[0]))
        first.start()
        deadline = time.monotonic() + 10
        while not writer._writing and time.monotonic() < deadline:
            time.sleep(0.01)
        rest = [threading.Thread(target=run, args=(i, write)) for i, write in enumerate(writes) if i]
        for thread in rest:
            thread.start()
        while len(writer._queued) < len(rest) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(writer._queued) == len(rest), "the writes did not queue behind the first"
        holder.rollback()
    for thread in [first, *rest]:
        thread.join(timeout=10)
    return outcomes


def _audit_insert(runtime, text):
    from bot.frame.audit import _INSERT, AuditRow, _values
    from bot.store.engine import utcnow

    row = AuditRow(at=utcnow(), user_id="U1", channel_id="C1", source="slack", command="whoami", arguments={"text": text},
                   outcome="succeeded", duration_ms=0, error=None, error_id=None, job_id=None, origin=None, details=None)
    return lambda: runtime.store.ack_writer.write((_INSERT, _values(row)))


def test_concurrent_writes_on_postgresql_commit_together_each_with_its_own_result(make_runtime, postgres_url):
    """Writes that arrive while another is being written go as one transaction (one commit for the group); each
    caller gets what its own statement returned."""
    runtime = make_runtime(database_url=postgres_url)
    texts = ["first", "second", "third", "fourth"]
    ids = _grouped(runtime, postgres_url, [_audit_insert(runtime, text) for text in texts])
    assert all(isinstance(each, int) for each in ids), ids
    with runtime.store.engine.connect() as connection:
        rows = {id_: (arguments["text"], xmin) for id_, arguments, xmin in
                connection.execute(text("SELECT id, arguments, xmin::text FROM audit_log"))}
    assert [rows[id_][0] for id_ in ids] == texts  # each caller's id is its own row's
    assert len({rows[id_][1] for id_ in ids[1:]}) == 1  # the three queued: one transaction
    assert rows[ids[0]][1] != rows[ids[1]][1]


def test_a_write_that_fails_in_a_group_on_postgresql_fails_alone(make_runtime, postgres_url):
    """A replayed signature in a group: its caller gets the IntegrityError, the others' rows are written once each."""
    from sqlalchemy.exc import IntegrityError

    from bot.store.engine import SEEN_REQUEST, utcnow

    runtime = make_runtime(database_url=postgres_url)
    runtime.store.ack_writer.write((SEEN_REQUEST, {"signature": "v0=seen", "seen_at": utcnow()}))
    replay = lambda: runtime.store.ack_writer.write((SEEN_REQUEST, {"signature": "v0=seen", "seen_at": utcnow()}))  # noqa: E731
    outcomes = _grouped(runtime, postgres_url, [_audit_insert(runtime, "first"), _audit_insert(runtime, "before"), replay,
                                                _audit_insert(runtime, "after")])
    assert isinstance(outcomes[2], IntegrityError)
    assert all(isinstance(outcomes[i], int) for i in (0, 1, 3)), outcomes
    with runtime.store.engine.connect() as connection:
        written = sorted(arguments["text"] for (arguments,) in connection.execute(text("SELECT arguments FROM audit_log")))
    assert written == ["after", "before", "first"]


def test_a_group_without_a_connection_fails_once_for_all_its_writes(make_runtime, postgres_url, monkeypatch):
    """When no connection can be had (PostgreSQL down or not answering), the group's writes all get that error from the
    one attempt: none tries again alone, which against a server that does not answer would wait its timeout each."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from bot.store.engine import SEEN_REQUEST, _Write, utcnow

    runtime = make_runtime(database_url=postgres_url)
    writer = runtime.store.ack_writer
    attempts = []

    def unreachable():
        attempts.append(1)
        raise OperationalError(None, None, psycopg.OperationalError("connection timeout expired"))

    monkeypatch.setattr(writer, "_take", unreachable)
    group = [_Write([writer._sql(SEEN_REQUEST, {"signature": f"v0={i}", "seen_at": utcnow()})], False) for i in range(3)]
    writer._commit_group_pg(group)
    assert len(attempts) == 1
    assert all(isinstance(each.error, OperationalError) and each.result is None for each in group)
