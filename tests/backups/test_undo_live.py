"""/restore --table on the live stack: rows of one table brought back from a backup, in one transaction.

What is promised: the request shows how many rows and a redacted sample, and needs a second person; after approval
exactly the rows asked for come back as they were (inserted, or updated where the key exists) and nothing else changes
(a checksum of every other row and table); a failure inside the write-back changes nothing; the scratch database is
gone when the request ends in any way; what cannot be done is refused before anyone is asked.
"""

import re
from types import SimpleNamespace

import psycopg
import pytest

from bot.adapters.console import run_approved
from bot.backups.flows import sweep_undo_scratch
from bot.backups.model import RowRestore
from bot.backups.undo import recover
from bot.frame.blocks import to_text
from bot.jobs.model import Job
from tests.backups.conftest import _admin_dsn
from tests.backups.test_restore_live import _runtime
from tests.conftest import run

DELETED = [5, 8, 11, 14, 17]
EDITED = [6, 9, 12]
CHANGED = DELETED + EDITED


def _checksum(app_db, table: str, where: str = "true") -> str:
    return app_db.query(f"SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {table} t WHERE {where}")[0][0]


def _rows(app_db, ids: list[int]) -> list[tuple]:
    return app_db.query("SELECT t::text FROM users t WHERE id = ANY(%s) ORDER BY id", (ids,))


def _scratch(app_db) -> list[str]:
    with psycopg.connect(_admin_dsn(app_db.stack), autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{app_db.name}\\_\\_undo\\_%",))]


@pytest.fixture
def world(make_runtime, tmp_path, app_db):
    """20 more users (a secret column among theirs) and events of the first three; backup #1; then 5 users deleted,
    3 edited, and one more added (whose email is one of the deleted users')."""
    app_db.query("ALTER TABLE users ADD COLUMN password_hash text NOT NULL DEFAULT 'pbkdf2$s3cr3t'")
    app_db.query("INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', 'User ' || i FROM generate_series(4, 23) i")
    app_db.add_events(300)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    assert not run(runtime, "UOP", "/backup before the mistake").failed
    before = _rows(app_db, CHANGED)
    app_db.query("DELETE FROM users WHERE id = ANY(%s)", (DELETED,))
    app_db.query("UPDATE users SET name = 'Edited', role = 'admin' WHERE id = ANY(%s)", (EDITED,))
    app_db.query("INSERT INTO users (email, name) VALUES ('newcomer@example.com', 'Newcomer')")
    return runtime, before


def _ask(runtime, line: str):
    asked = run(runtime, "UOP", line)
    match = re.match(r"Request #(\d+): ", asked.text)
    assert match, asked.text
    return int(match.group(1)), asked


def _approve(runtime, number: int):
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    return reply


def test_undo_by_where_brings_back_exactly_those_rows_and_nothing_else_changes(world, app_db):
    runtime, before = world
    others, events = _checksum(app_db, "users", f"id NOT IN ({', '.join(map(str, CHANGED))})"), _checksum(app_db, "events")

    number, asked = _ask(runtime, f'/restore --table users --where "id IN ({", ".join(map(str, CHANGED))})" 1')
    request = to_text(asked)
    for fact in ("needs a second person's approval", "*Rows of `users`* from backup #1: --where id IN (5, 8, 11, 14, 17, 6, 9, 12)",
                 f"*8 rows* to write back into `{app_db.name}`.users", "in one transaction; nothing else is touched",
                 "The first 5 by key", "user5@example.com | User 5 | user |"):
        assert fact in request, (fact, request)
    assert "s3cr3t" not in request and "(hidden)" in request, "a secret column's values are never shown"
    assert _scratch(app_db) == [f"{app_db.name}__undo_{number}"], "the rows wait in the scratch database"
    assert run(runtime, "UOP", f"/approvals approve {number}").text.endswith("a second person must approve it.")

    reply = _approve(runtime, number)
    assert not reply.failed, reply.text
    assert "🟢 2. Wrote 8 rows back into" in reply.text and f"Scratch database {app_db.name}__undo_{number} dropped." in reply.text
    assert _rows(app_db, CHANGED) == before, "exactly those 8 rows as they were"
    assert _checksum(app_db, "users", f"id NOT IN ({', '.join(map(str, CHANGED))})") == others, "no other user changed"
    assert _checksum(app_db, "events") == events, "no other table changed"
    assert _scratch(app_db) == []
    with runtime.store.session() as session:
        journal = session.get(RowRestore, number)
        assert (journal.step, journal.rows, journal.written, journal.dropped_at is not None) == ("done", 8, 8, True)


def test_rows_deleted_since_brings_back_the_deleted_only(world, app_db):
    runtime, before = world
    backup = runtime.backups.get(1)
    edited = _rows(app_db, EDITED)
    since = backup.started_at.isoformat()

    number, asked = _ask(runtime, f"/restore --table users --rows-deleted-since {since} 1")
    assert "*5 rows* to write back" in to_text(asked), to_text(asked)
    assert "A backup cannot tell when a row went" in to_text(asked)
    reply = _approve(runtime, number)

    assert not reply.failed, reply.text
    assert _rows(app_db, DELETED) == [row for row in before if int(row[0].split(",")[0][1:]) in DELETED]
    assert _rows(app_db, EDITED) == edited, "the edited rows keep their edit: their key is in live"
    assert app_db.query("SELECT count(*) FROM users")[0][0] == 24
    assert _scratch(app_db) == []


def test_a_failure_inside_the_write_back_changes_nothing(world, app_db):
    """A deleted user's email was taken since: the 8th row fails on the unique email, after 7 went in; all roll back."""
    runtime, _before = world
    app_db.query("UPDATE users SET email = 'user17@example.com' WHERE email = 'newcomer@example.com'")
    users, events = _checksum(app_db, "users"), _checksum(app_db, "events")

    number, _asked = _ask(runtime, f'/restore --table users --where "id IN ({", ".join(map(str, CHANGED))})" 1')
    reply = _approve(runtime, number)

    assert reply.failed
    assert "🔴 2. The write-back failed and its transaction rolled back, so" in reply.text, reply.text
    assert "users_email_key" in reply.text or "duplicate key" in reply.text, reply.text
    assert (_checksum(app_db, "users"), _checksum(app_db, "events")) == (users, events), "nothing changed"
    assert _scratch(app_db) == []


def test_a_fault_before_the_commit_changes_nothing(world, app_db):
    runtime, _before = world
    users = _checksum(app_db, "users")

    def fault(point: str) -> None:
        if point == "undo:before_commit":
            raise RuntimeError("injected: the bot fails with the rows written, uncommitted")

    runtime.fault = fault
    number, _asked = _ask(runtime, '/restore --table users --where "id BETWEEN 5 AND 17" 1')
    reply = _approve(runtime, number)

    assert reply.failed and "Traceback" not in reply.text
    assert _checksum(app_db, "users") == users, "the transaction rolled back"
    assert _scratch(app_db) == []
    with runtime.store.session() as session:
        journal = session.get(RowRestore, number)
        assert (journal.step, journal.finished_at is not None) == ("failed", True), journal.outcome
        assert journal.outcome.endswith(f"{app_db.name} was not changed."), journal.outcome


def test_a_request_that_ends_unapproved_has_its_scratch_database_dropped_by_the_sweep(world, app_db):
    runtime, _before = world
    number, _asked = _ask(runtime, '/restore --table users --where "id = 5" 1')
    assert _scratch(app_db) == [f"{app_db.name}__undo_{number}"]
    sweep_undo_scratch(runtime.store, runtime.backups)
    assert _scratch(app_db), "a request still waiting keeps its rows"

    assert "cancelled" in run(runtime, "UOP", f"/approvals cancel {number}").text.lower()
    sweep_undo_scratch(runtime.store, runtime.backups)
    assert _scratch(app_db) == []
    with runtime.store.session() as session:
        assert session.get(RowRestore, number).dropped_at is not None
        assert session.get(Job, number).state == "cancelled"


@pytest.mark.parametrize("line, refusal", [
    ('/restore --table users --where "nme = 1" 1', "users has no column 'nme'; its columns are id, email"),
    ('/restore --table users --where "id = 1; DROP TABLE users" 1', "--where cannot contain ';' (character 7)"),
    ('/restore --table users --where "id = \'x\'" 1', 'invalid input syntax for type integer: "x"'),
    ('/restore --table users --where "id = 1" 2026-12-01T10:00Z', "2026-12-01 10:00:00 UTC cannot be reached: "),
    ('/restore --table nosuch --where "id = 1" 1', "has no table nosuch"),
    ('/restore --table "users; x" --where "id = 1" 1', "is not a table's name"),
    ('/restore --table nokey --where "a = 1" 1', "nokey has no primary key"),
    ("/restore --table users --rows-deleted-since 2000-01-01T00:00Z 1", "rows deleted before it are not in it"),
    ("/restore --table users 1", "--table takes either --where"),
    ('/restore --where "id = 1" 1', "add --table TABLE"),
    ('/restore --table users --where "id = 1"', "ay where the rows come from: a backup's number or a time"),
    ('/restore --table users --where "id = 1" 9', "There is no backup #9"),
])
def test_what_cannot_be_done_is_refused_before_anyone_is_asked(world, app_db, line, refusal):
    runtime, _before = world
    app_db.query("CREATE TABLE nokey (a int)")
    reply = run(runtime, "UOP", line)
    assert refusal in reply.text, reply.text
    assert not reply.text.startswith("Request #")
    assert _scratch(app_db) == []


@pytest.mark.parametrize("commit, said", [
    (True, "The write-back had committed: the 8 rows are in"),
    (False, "The write-back rolled back: {db} is exactly as it was."),
])
def test_a_bot_killed_mid_write_says_whether_the_transaction_committed(world, app_db, commit, said):
    """The journal holds the write-back's transaction id: PostgreSQL still knows whether it committed."""
    runtime, _before = world
    number, _asked = _ask(runtime, '/restore --table users --where "id = 6" 1')
    with psycopg.connect(app_db.dsn) as conn:  # the write as the run would have left it when the bot died
        conn.execute("UPDATE users SET name = 'Written' WHERE id = 6")
        xid = conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
        conn.commit() if commit else conn.rollback()
    with runtime.store.session.begin() as session:
        journal = session.get(RowRestore, number)
        journal.step, journal.xid, journal.rows = "writing", xid, 8

    text = recover(runtime.backups, runtime.store, SimpleNamespace(id=number))

    assert said.format(db=app_db.name) in text, text
    assert _scratch(app_db) == [], "the scratch database is dropped"
    with runtime.store.session() as session:
        journal = session.get(RowRestore, number)
        assert (journal.step, journal.finished_at is not None, journal.dropped_at is not None) == ("interrupted", True, True)
