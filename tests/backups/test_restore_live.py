"""/restore on the live stack: it replaces only a database of the test's own; it stops and starts python-worker.

What is promised: a restore needs a second person and shows them what it replaces; a damaged or foreign
backup is refused before anything stops; a restore that fails leaves the data exactly as it was and the
services running; a restore that succeeds keeps what it replaced in a safety backup.
"""

import hashlib
import re
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.backups.model import Backup, RestoreRun
from bot.frame.blocks import to_text
from bot.adapters.console import run_approved
from bot.frame.roles import Role
from tests.conftest import grant, run

SERVICE = "python-worker"  # the one app service these tests stop: short downtime for the other tests on this stack


def _runtime(make_runtime, tmp_path, stack):
    runtime = make_runtime(stack, admins=["UADMIN"], backup_dir=tmp_path / "backups", restore_services=[SERVICE])
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    return runtime


def _backed_up(make_runtime, tmp_path, app_db, events: int, note: str = ""):
    """A runtime on the test's database of so many events, and backup #1 of it."""
    app_db.add_events(events)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    assert not run(runtime, "UOP", f"/backup {note}").failed
    return runtime


def _restore(runtime, backup_id: int, progress=lambda _text: None):
    """Ask as an operator, approve as an approver (as the console does); the request's number and the run's reply."""
    asked = run(runtime, "UOP", f"/restore {backup_id}")
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, progress))
    return number, reply


def _backups(runtime) -> list[Backup]:
    with runtime.store.session() as session:
        return list(session.query(Backup).order_by(Backup.id))


def _started_at(stack_container) -> str:
    container = stack_container(SERVICE)
    container.reload()
    assert container.status == "running"
    return container.attrs["State"]["StartedAt"]


def test_backup_change_restore_in_place_the_change_is_gone_and_the_safety_backup_holds_it(make_runtime, tmp_path, in_place_db, stack_container):
    """When a swap cannot be made (here: the kept copy's name would be too long), the restore goes in place."""
    app_db = in_place_db
    runtime = _backed_up(make_runtime, tmp_path, app_db, 1000, "'known good'")
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve Intruder')")
    app_db.query("DELETE FROM events WHERE id <= 100")

    asked = run(runtime, "UOP", "/restore 1")
    assert asked.text.startswith("Request #2: `/restore 1` needs a second person's approval")
    request = to_text(runtime.approvals.render(runtime.jobs.get(2), "waiting"))
    backup = _backups(runtime)[0]
    for fact in (f"Backup #1* of `{app_db.name}`, taken ", "s ago) by @UOP", "Size ", backup.sha256, "Note: known good",
                 f"Replaces database `{app_db.name}` on flowstate-test", f"{SERVICE} will be stopped"):
        assert fact in request, (fact, request)
        assert fact in to_text(asked), ("the console shows the requester what Slack shows the approver", fact, asked.text)
    assert run(runtime, "UOP", "/approvals approve 2").text == "You asked for request #2, so a second person must approve it."

    assert run(runtime, "UAPP", "/approvals approve 2").text == "You approved request #2; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert not reply.failed, reply.text
    text = to_text(reply)
    assert f"⚠️ A swap cannot be made: the name {app_db.name}__restore_2 would be longer than PostgreSQL's 63 bytes." in text, text
    for step in ("🟢 1. Verified backup #1", "🟢 2. Safety backup #2", f"🟢 3. Stopped {SERVICE}", "🟢 4. Restored backup #1",
                 f"🟢 5. Started {SERVICE}; healthy again", "6. "):
        assert step in text, (step, text)
    assert re.search(r"🟢 4\. Restored .* \(\d+\.\d s\)", text), "each step with its time"
    assert "eve@example.com" not in app_db.emails() and app_db.query("SELECT count(*) FROM events")[0][0] == 1000
    safety = _backups(runtime)[1]
    assert (safety.kind, safety.note, safety.job_id) == ("safety", "safety backup before restoring backup #1", 2)
    assert {t: rows for _s, t, rows in safety.table_counts} == {"events": 900, "users": 4}
    with runtime.store.session() as session:
        assert session.get(RestoreRun, 2).step == "done"

    _number, back = _restore(runtime, safety.id)  # the safety backup holds the change
    assert not back.failed, back.text
    assert "eve@example.com" in app_db.emails() and app_db.query("SELECT count(*) FROM events")[0][0] == 900
    assert _started_at(stack_container)


def _truncate(path: Path, backup: Backup, runtime, app_db, live_stack) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _flip_a_byte(path: Path, backup: Backup, runtime, app_db, live_stack) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _remove(path: Path, backup: Backup, runtime, app_db, live_stack) -> None:
    path.unlink()


def _replace_with_a_dump_of_another_database(path: Path, backup: Backup, runtime, app_db, live_stack) -> None:
    """A complete, checksummed file in the catalogue, but of the `postgres` database."""
    import docker

    client = docker.from_env()
    try:
        (container,) = client.containers.list(
            filters={"label": [f"com.docker.compose.project={live_stack.stack.compose_project}", "com.docker.compose.service=postgres"]}
        )
        dump = container.exec_run(["pg_dump", "-U", "flowstate", "-Fc", "-d", "postgres"], stderr=False).output
    finally:
        client.close()
    path.write_bytes(dump)
    with runtime.store.session.begin() as session:
        session.execute(update(Backup).where(Backup.id == backup.id).values(size=len(dump), sha256=hashlib.sha256(dump).hexdigest()))


@pytest.mark.parametrize(
    "damage, said",
    [
        (_truncate, "is truncated or was changed"),
        (_flip_a_byte, "SHA-256 of backup #1 does not match"),
        (_remove, "The file of backup #1 is missing"),
        (_replace_with_a_dump_of_another_database, "is a dump of postgres, not of flowstate_restore_"),
    ],
)
def test_a_damaged_or_foreign_backup_is_refused_before_anything_stops(make_runtime, tmp_path, app_db, live_stack, stack_container, damage, said):
    runtime = _backed_up(make_runtime, tmp_path, app_db, 10)
    backup = _backups(runtime)[0]
    damage(Path(backup.path), backup, runtime, app_db, live_stack)
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    started = _started_at(stack_container)
    _number, reply = _restore(runtime, 1)
    assert reply.failed and said in reply.text, reply.text
    assert "🔴 1. " in reply.text and "Nothing was stopped and the database was not touched." in reply.text
    assert _started_at(stack_container) == started, f"{SERVICE} was never stopped"
    assert len(_backups(runtime)) == 1, "no safety backup was taken"
    assert "eve@example.com" in app_db.emails()


def test_a_restore_in_place_that_fails_inside_its_transaction_leaves_the_data_exactly_as_it_was(make_runtime, tmp_path, in_place_db,
                                                                                                stack_container):
    app_db = in_place_db
    runtime = _backed_up(make_runtime, tmp_path, app_db, 500)
    # An object the dump does not know depends on a table it replaces: dropping that table fails mid-restore.
    app_db.query("CREATE VIEW admins AS SELECT id, email FROM users WHERE role = 'admin'")
    app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
    before = app_db.query("SELECT id, email, name, role FROM users ORDER BY id"), app_db.query("SELECT count(*), sum(id) FROM events")
    _number, reply = _restore(runtime, 1)
    assert reply.failed
    assert "🔴 4. pg_restore failed and its transaction rolled back" in reply.text and "exactly as it was" in reply.text, reply.text
    assert "cannot drop table" in reply.text and "because other objects depend on it" in reply.text, reply.text
    assert f"🟢 5. Started {SERVICE}; healthy again" in reply.text
    after = app_db.query("SELECT id, email, name, role FROM users ORDER BY id"), app_db.query("SELECT count(*), sum(id) FROM events")
    assert after == before and app_db.query("SELECT count(*) FROM admins")[0][0] == 1
    assert _started_at(stack_container)
    with runtime.store.session() as session:
        assert session.get(RestoreRun, 2).step == "failed"


def test_health_and_stats_open_with_the_restore_while_it_runs_and_not_after(make_runtime, tmp_path, app_db):
    runtime = _backed_up(make_runtime, tmp_path, app_db, 100)
    grant(runtime, "UVIEW", Role.viewer)
    during: dict[str, str] = {}

    def look(_text: str) -> None:
        # The restore's first progress line: it holds the stack's lock now, and a viewer asks how production is.
        if not during:
            during.update(health=to_text(run(runtime, "UVIEW", "/health")), stats=to_text(run(runtime, "UVIEW", "/stats 1m")))

    number, reply = _restore(runtime, 1, look)
    assert not reply.failed, reply.text
    for name, text in during.items():
        first = text.splitlines()[0]
        assert first.startswith("⏳ Change in progress: `/restore 1` by @UOP since "), (name, text)
        assert first.endswith(f"(request #{number}): errors now may be the change, not an outage."), (name, text)
    assert set(during) == {"health", "stats"}
    assert "Change in progress" not in to_text(run(runtime, "UVIEW", "/health"))
