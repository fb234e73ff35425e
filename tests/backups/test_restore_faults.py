"""/restore when something else fails in the middle: the bot's own database locked, a backup file swapped.

What is promised: once the services are stopped they are started again whatever fails; a store blip does not
abort the work that brings the app back (the journal is written when the store answers again); what is restored
is the very bytes that were verified.
"""

import os
from pathlib import Path

from bot.backups.model import RestoreRun
from bot.jobs.model import Job
from tests.backups.test_restore_live import SERVICE, _backed_up, _backups, _restore, _runtime, _started_at
from tests.conftest import run
from tests.faults import StoreLock, short_busy_timeout


def test_the_store_locked_right_after_the_stop_does_not_leave_the_app_down(make_runtime, tmp_path, app_db, stack_container):
    runtime = _backed_up(make_runtime, tmp_path, app_db, 200)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    short_busy_timeout(runtime)
    lock = StoreLock(runtime)
    runtime.fault = lambda point: lock() if point == "restore:after_stop" else None

    number, reply = _restore(runtime, 1)
    lock.join()

    assert _started_at(stack_container), f"{SERVICE} runs again"
    assert f"🟢 5. Started {SERVICE}; healthy again" in reply.text, reply.text
    assert not reply.failed and "eve@example.com" not in app_db.emails(), "the restore itself went on"
    with runtime.store.session() as session:
        run = session.get(RestoreRun, number)
        assert (run.step, run.finished_at is not None) == ("done", True), "the journal caught up"
        assert session.get(Job, number).state == "succeeded"


def test_with_local_tools_the_bytes_verified_are_the_bytes_restored(make_runtime, tmp_path, app_db, stack_container):
    """compose_service = "": the machine's pg_restore. Another file swapped in after the check is not what is restored."""
    local = app_db.stack.model_copy(update={"database": app_db.stack.database.model_copy(update={"compose_service": ""})})
    runtime = _runtime(make_runtime, tmp_path, local)
    assert not run(runtime, "UOP", "/backup the verified one").failed
    app_db.add_events(30)
    assert not run(runtime, "UOP", "/backup another").failed
    first, other = (Path(b.path) for b in _backups(runtime))

    def swap(point: str) -> None:
        if point == "restore:after_verify":  # verified; not restored yet
            os.replace(other, first)

    runtime.fault = swap
    _number, reply = _restore(runtime, 1)

    assert not reply.failed, reply.text
    assert app_db.query("SELECT count(*) FROM events")[0][0] == 0, "backup #1 as it was verified, not the file swapped in"
