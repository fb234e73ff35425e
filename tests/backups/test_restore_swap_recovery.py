"""What a restarted bot does about a swap restore it left, from its journal and the names on the live server.

(Kills at each step of a real run are in tests/bot/test_fault_matrix.py; here, the states a kill cannot reach since
both renames are one transaction: the live name missing, renamed by hand between them.)
"""

from types import SimpleNamespace

import psycopg

from bot.backups.flows import recover
from bot.backups.model import RestoreRun
from bot.store.engine import utcnow
from tests.backups.test_restore_live import SERVICE, _started_at
from tests.backups.test_restore_swap import _databases


def _admin(app_db, sql: str) -> None:
    with psycopg.connect(psycopg.conninfo.make_conninfo(app_db.dsn, dbname="postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _journal(runtime, app_db, job_id: int, step: str) -> None:
    with runtime.store.session.begin() as session:
        session.add(RestoreRun(job_id=job_id, backup_id=1, database=app_db.name, services=[SERVICE], step=step, mode="swap",
                               new_database=f"{app_db.name}__restore_{job_id}", old_database=f"{app_db.name}__before_{job_id}",
                               started_at=utcnow()))


def test_the_live_name_missing_after_the_first_rename_the_swap_is_finished_and_said_why(make_runtime, app_db, stack_container):
    runtime = make_runtime(app_db.stack, restore_services=[SERVICE])
    new, old = f"{app_db.name}__restore_7", f"{app_db.name}__before_7"
    _admin(app_db, f'CREATE DATABASE "{new}" TEMPLATE "{app_db.name}"')  # the complete new one
    with psycopg.connect(psycopg.conninfo.make_conninfo(app_db.dsn, dbname=new), autocommit=True) as conn:
        conn.execute("INSERT INTO users (email, name) VALUES ('restored@example.com', 'From the backup')")
    _admin(app_db, f'ALTER DATABASE "{app_db.name}" RENAME TO "{old}"')  # the first rename, and nothing after it
    _journal(runtime, app_db, 7, "rename")
    stack_container(SERVICE).stop(timeout=5)

    text = recover(runtime.backups, runtime.stack, runtime.store, SimpleNamespace(id=7))

    assert text.startswith(f"{app_db.name} was missing ({old} and {new} were there): the swap was finished, because {new} was "
                           f"complete before any rename; {app_db.name} holds backup #1 and the data it replaced is kept as {old}."), text
    assert "Services: 🟢 Healthy" in text, text
    assert "restored@example.com" in app_db.emails()
    assert _databases(app_db) == [app_db.name, old]
    assert _started_at(stack_container)
    with runtime.store.session() as session:
        assert session.get(RestoreRun, 7).step == "interrupted"


def test_cut_off_while_it_filled_live_is_untouched_and_the_new_database_dropped(make_runtime, app_db, stack_container):
    runtime = make_runtime(app_db.stack, restore_services=[SERVICE])
    new = f"{app_db.name}__restore_8"
    _admin(app_db, f'CREATE DATABASE "{new}"')
    _journal(runtime, app_db, 8, "fill")
    stack_container(SERVICE)

    text = recover(runtime.backups, runtime.stack, runtime.store, SimpleNamespace(id=8))

    assert text.startswith(f"It was cut off before the swap: {app_db.name} was not touched; the unfinished {new} is dropped."), text
    assert _databases(app_db) == [app_db.name]
    assert app_db.emails() == ["admin@example.com", "alice@example.com", "bob@example.com"]
