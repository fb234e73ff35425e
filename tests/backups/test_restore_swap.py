"""A swap restore on the live stack: the backup goes into a new database beside live while the app keeps running;
python-worker stops only for the rename; the database it replaced is kept (and listed) until the backups' retention.

What is promised: the app is down only across the swap (its services stop after the new database is full); a write
made during the fill is in the kept copy; a gate that fails swaps the names back; a swap that cannot be made (a
session the bot may not end) is said and the restore goes in place; a kept copy is dropped by the sweep after retention.
"""

from datetime import datetime, timedelta, timezone

import psycopg

from bot.backups.flows import drop_expired_copies
from bot.backups.model import Backup, RestoreRun
from bot.frame.blocks import to_text
from bot.store.engine import utcnow
from tests.backups.test_restore_live import SERVICE, _backed_up, _backups, _restore, _started_at
from tests.conftest import run


def _journal(runtime, number: int) -> RestoreRun:
    with runtime.store.session() as session:
        return session.get(RestoreRun, number)


def _databases(app_db) -> list[str]:
    return [row[0] for row in app_db.query("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (app_db.name + "%",))]


def _in(app_db, database: str, query: str) -> list[tuple]:
    with psycopg.connect(psycopg.conninfo.make_conninfo(app_db.dsn, dbname=database), autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _docker_time(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, as an aware datetime."""
    day, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc) + timedelta(microseconds=int((fraction or "0")[:6].ljust(6, "0")))


def test_a_swap_restore_keeps_the_app_up_while_it_fills_and_keeps_the_old_database(make_runtime, tmp_path, app_db, stack_container):
    runtime = _backed_up(make_runtime, tmp_path, app_db, 1000, "'known good'")
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve Intruder')")
    app_db.query("DELETE FROM events WHERE id <= 100")
    worker = stack_container(SERVICE)
    during: dict[str, str] = {}

    def look(text: str) -> None:
        # While the backup goes into the new database, the app runs and writes to live.
        if text.startswith("2. Restoring backup #1 into") and not during:
            worker.reload()
            during["worker"] = worker.status
            app_db.query("INSERT INTO users (email, name) VALUES ('during@example.com', 'Written during the fill')")

    number, reply = _restore(runtime, 1, look)
    assert not reply.failed, reply.text
    new, old = f"{app_db.name}__restore_{number}", f"{app_db.name}__before_{number}"
    text = to_text(reply)
    for step in ("🟢 1. Verified backup #1", f"🟢 2. Restored backup #1 into {new}, beside {app_db.name}, while the app kept running",
                 f"🟢 3. Stopped {SERVICE}", f"🟢 4. Swapped: {app_db.name} is backup #1 now, and the data it held is kept as {old}",
                 f"🟢 5. Started {SERVICE}; healthy again", f"6. {app_db.name} now holds backup #1; the data it replaced is kept as database {old}"):
        assert step in text, (step, text)
    assert during == {"worker": "running"}, "the app ran while the backup was restored"
    assert len(_backups(runtime)) == 1, "no safety backup: the old database is the safety copy"

    assert app_db.emails() == ["admin@example.com", "alice@example.com", "bob@example.com"]
    assert app_db.query("SELECT count(*) FROM events")[0][0] == 1000
    kept = [email for (email,) in _in(app_db, old, "SELECT email FROM users ORDER BY id")]
    assert kept[-2:] == ["eve@example.com", "during@example.com"], "the write made during the fill is in the kept copy"
    assert _in(app_db, old, "SELECT count(*) FROM events")[0][0] == 900
    assert _databases(app_db) == [app_db.name, old], "the new database became live; nothing else is left"

    journal = _journal(runtime, number)
    assert (journal.mode, journal.step, journal.new_database, journal.old_database) == ("swap", "done", new, old)
    assert journal.filled_at <= journal.app_stopped_at <= journal.app_back_at
    worker.reload()
    stopped, started = _docker_time(worker.attrs["State"]["FinishedAt"]), _docker_time(worker.attrs["State"]["StartedAt"])
    assert journal.filled_at <= stopped <= started <= journal.app_back_at, "python-worker was down only after the fill: for the swap"

    listed = run(runtime, "UOP", "/backups").text
    assert f"*Kept copy* `{old}`" in listed and f"the data before /restore request #{number} brought back backup #1" in listed, listed

    assert drop_expired_copies(runtime.backups, runtime.store, runtime.settings.backup_keep_days, utcnow()) == [], "young: kept"
    later = utcnow() + timedelta(days=runtime.settings.backup_keep_days, minutes=1)
    assert drop_expired_copies(runtime.backups, runtime.store, runtime.settings.backup_keep_days, later) == [old]
    assert _databases(app_db) == [app_db.name] and _journal(runtime, number).dropped_at is not None
    assert "Kept copy" not in run(runtime, "UOP", "/backups").text
    assert drop_expired_copies(runtime.backups, runtime.store, runtime.settings.backup_keep_days, later) == [], "once"


def test_a_gate_that_fails_after_the_swap_swaps_the_names_back(make_runtime, tmp_path, app_db, stack_container):
    runtime = _backed_up(make_runtime, tmp_path, app_db, 100)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    frontend = stack_container("frontend")  # started again after the test

    def fault(point: str) -> None:
        if point == "restore:after_rename":  # the swap is made; the services have not started yet
            frontend.stop(timeout=5)

    runtime.fault = fault
    number, reply = _restore(runtime, 1)
    assert reply.failed
    text = to_text(reply)
    assert f"🟢 4. Swapped: {app_db.name} is backup #1 now" in text, text
    assert f"The services are not healthy on the restored data; swapping {app_db.name} back." in text, text
    assert f"🟢 Swapped back: {app_db.name} is as it was before" in text, text
    assert "eve@example.com" in app_db.emails(), "live holds the data from before the restore"
    assert _databases(app_db) == [app_db.name], "the restored copy is dropped; no kept copy is left"
    assert _started_at(stack_container)
    assert _journal(runtime, number).step == "failed"


def test_a_session_the_bot_may_not_end_is_said_and_the_restore_goes_in_place(make_runtime, tmp_path, owned_app_db, live_stack, stack_container):
    app_db = owned_app_db
    runtime = _backed_up(make_runtime, tmp_path, app_db, 100)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    superuser = psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname=app_db.name)
    with psycopg.connect(superuser, autocommit=True, application_name="a DBA's psql") as held:
        pid = held.execute("SELECT pg_backend_pid()").fetchone()[0]
        number, reply = _restore(runtime, 1)
        assert held.execute("SELECT 1").fetchone() == (1,), "the session was left alone"
    assert not reply.failed, reply.text
    text = to_text(reply)
    said = (f"⚠️ A swap cannot be made: the session {pid} of {live_stack.database.user} (a DBA's psql) on {app_db.name} will not end: "
            f"the DSN's user may not terminate it. So backup #1 is restored in place, after a safety backup.")
    assert said in text, text
    for step in ("🟢 2. Safety backup #2", f"🟢 3. Stopped {SERVICE}", "🟢 4. Restored backup #1", f"🟢 5. Started {SERVICE}; healthy again"):
        assert step in text, (step, text)
    assert "eve@example.com" not in app_db.emails()
    journal = _journal(runtime, number)
    assert (journal.mode, journal.step, journal.safety_backup_id) == ("in_place", "done", 2)
    assert journal.swap_refused.startswith(f"the session {pid} of ")
    assert _databases(app_db) == [app_db.name]
    with runtime.store.session() as session:
        assert session.get(Backup, 2).kind == "safety"


def test_the_new_database_is_made_like_live_its_owner_settings_grants_and_comment(make_runtime, tmp_path, owned_app_db, live_stack):
    """By the database's owner (CREATEDB, not a superuser): what the database itself carries is the same after the swap."""
    app_db = owned_app_db
    runtime = _backed_up(make_runtime, tmp_path, app_db, 10)
    name = app_db.name
    superuser = psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname="postgres")
    with psycopg.connect(superuser, autocommit=True) as conn:
        for statement in (f"ALTER DATABASE {name} SET work_mem = '8MB'", f"ALTER DATABASE {name} SET statement_timeout = '30s'",
                          f"ALTER DATABASE {name} CONNECTION LIMIT 40", f"REVOKE TEMPORARY ON DATABASE {name} FROM PUBLIC",
                          f"GRANT CREATE ON DATABASE {name} TO pg_monitor", f"COMMENT ON DATABASE {name} IS 'the app''s data'"):
            conn.execute(statement)
    properties = (
        "SELECT pg_get_userbyid(d.datdba), d.datconnlimit, (SELECT array_agg(g ORDER BY g) FROM unnest(d.datacl::text[]) g),"
        " shobj_description(d.oid, 'pg_database'), (SELECT array_agg(c ORDER BY c) FROM pg_db_role_setting, unnest(setconfig) c"
        " WHERE setdatabase = d.oid AND setrole = 0) FROM pg_database d WHERE datname = %s"
    )
    before = app_db.query(properties, (name,))
    number, reply = _restore(runtime, 1)
    assert not reply.failed, reply.text
    assert "🟢 4. Swapped" in reply.text, reply.text
    after = app_db.query(properties, (name,))
    assert after == before and before[0][0] == app_db.stack.database.user, (before, after)
    assert app_db.query("SHOW work_mem") == [("8MB",)], "a new session on live gets the database's settings"
    assert app_db.query(properties, (f"{name}__before_{number}",))[0][1:] == before[0][1:], "the kept copy keeps them too"


def test_a_session_that_comes_after_the_stop_and_will_not_end_means_start_again_then_in_place(make_runtime, tmp_path, owned_app_db,
                                                                                               live_stack, stack_container):
    app_db = owned_app_db
    runtime = _backed_up(make_runtime, tmp_path, app_db, 100)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    superuser = psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname=app_db.name)
    held: list = []

    def fault(point: str) -> None:
        if point == "restore:after_stop":  # the new database is full; a DBA connects before the renames
            held.append(psycopg.connect(superuser, autocommit=True, application_name="late psql"))

    runtime.fault = fault
    try:
        number, reply = _restore(runtime, 1)
    finally:
        for conn in held:
            conn.close()
    assert not reply.failed, reply.text
    text = to_text(reply)
    lines = [f"🟢 2. Restored backup #1 into {app_db.name}__restore_{number}", f"🟢 3. Stopped {SERVICE}",
             f"🔴 4. The swap could not be made: the session ", f"(late psql) on {app_db.name} will not end: the DSN's user may not "
             f"terminate it. {app_db.name} was not touched.", f"🟢 5. Started {SERVICE}; healthy again",
             "⚠️ A swap cannot be made: the session ", "So backup #1 is restored in place, after a safety backup.",
             "🟢 2. Safety backup #2", "🟢 4. Restored backup #1", "6. "]
    positions = [text.find(line) for line in lines]
    assert -1 not in positions and positions == sorted(positions), (lines, text)
    assert "eve@example.com" not in app_db.emails()
    assert _databases(app_db) == [app_db.name], "the unused new database is dropped"
    assert (_journal(runtime, number).mode, _journal(runtime, number).step) == ("in_place", "done")


def test_a_disk_without_room_for_the_copy_is_said_and_the_restore_goes_in_place(make_runtime, tmp_path, app_db, monkeypatch):
    """The free space is read from the database server's own disk (df in its container): a copy that could fill it
    (here: the room the copy's WAL needs made larger than any disk) is not made; the restore says why and goes in
    place, and no database is created beside live."""
    from bot.backups import swap

    runtime = _backed_up(make_runtime, tmp_path, app_db, 100)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    monkeypatch.setattr(swap, "WAL_ROOM_BYTES", 1 << 60)  # an exbibyte
    number, reply = _restore(runtime, 1)
    assert not reply.failed, reply.text
    text = to_text(reply)
    assert f"⚠️ A swap cannot be made: the database server's disk has " in text, text
    assert f"free, and a copy of {app_db.name} (" in text and "beside it needs about 1048576.0 TiB" in text, text
    assert "So backup #1 is restored in place, after a safety backup." in text, text
    assert "eve@example.com" not in app_db.emails()
    assert _journal(runtime, number).mode == "in_place"
    assert _databases(app_db) == [app_db.name]

    monkeypatch.setattr(swap, "WAL_ROOM_BYTES", 1 << 30)  # the real room: this machine's disk has it
    number, reply = _restore(runtime, 1)
    assert not reply.failed, reply.text
    assert _journal(runtime, number).mode == "swap", to_text(reply)
