"""/backup, /backups and /backup verify on the live stack's PostgreSQL, each test on a database of its own.

What is promised: a file with a backup's name is always complete, private and matches its recorded
checksum; a verification restores for real and never leaves its scratch database behind; retention
never deletes what it must keep; nothing a user types reaches a shell.
"""

import os
from pathlib import Path

import pytest
from sqlalchemy import update

from bot.backups.model import Backup
from bot.frame.config import DatabaseSection, StackConfig
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.store.engine import AuditEntry
from tests.backups.conftest import scratch_databases
from tests.conftest import grant, run
from tests import stack_setting


def _runtime(make_runtime, tmp_path, stack, **settings):
    settings.setdefault("backup_dir", tmp_path / "backups")
    runtime = make_runtime(stack, admins=["UADMIN"], **settings)
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UVIEW", Role.viewer)
    return runtime


def _backup(runtime, backup_id: int) -> Backup:
    with runtime.store.session() as session:
        return session.get(Backup, backup_id)


def _set(runtime, backup_id: int, **values) -> None:
    with runtime.store.session.begin() as session:
        session.execute(update(Backup).where(Backup.id == backup_id).values(**values))


def test_an_operator_takes_a_backup_a_private_complete_checksummed_file_with_a_second_copy(make_runtime, tmp_path, app_db):
    import hashlib

    app_db.add_events(2000)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack, backup_copy_dir=tmp_path / "offsite")
    lines = []
    reply = runtime.pipeline.dispatch(Invocation("UOP", "backup", "before the v2 migration", "C1"), lines.append)
    assert not reply.failed, reply.text
    assert reply.text.startswith("✅ Backup #1 taken")
    backup = _backup(runtime, 1)
    path = Path(backup.path)
    assert (backup.state, backup.kind, backup.requested_by, backup.note, backup.database) == ("ok", "manual", "UOP", "before the v2 migration", app_db.name)
    assert path.parent == tmp_path / "backups" and path.name.endswith("-1.dump")
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(path.parent.stat().st_mode & 0o777) == "0o700"
    data = path.read_bytes()
    assert data[:5] == b"PGDMP", "pg_dump's custom format"
    assert backup.size == len(data) and backup.sha256 == hashlib.sha256(data).hexdigest()
    assert backup.sha256 in reply.text
    assert {(schema, table): rows for schema, table, rows in backup.table_counts} == {("public", "events"): 2000, ("public", "users"): 3}
    assert backup.server_version.startswith("15.")
    copy = Path(backup.copy_path)
    assert copy.parent == tmp_path / "offsite" and copy.read_bytes() == data and oct(copy.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left"
    assert any(line.startswith("Dumping ") for line in lines) or backup.size < 1 << 20, "progress while it dumps"
    listed = run(runtime, "UVIEW", "/backups").text
    assert "#1" in listed and '"before the v2 migration"' in listed and backup.sha256[:12] in listed and "never verified" in listed


def test_a_failed_dump_leaves_no_file_that_looks_like_a_backup_and_prunes_nothing(make_runtime, tmp_path, app_db):
    good = _runtime(make_runtime, tmp_path, app_db.stack)
    assert not run(good, "UOP", "/backup").failed and not run(good, "UOP", "/backup").failed
    # pg_dump is refused by the server (no such role) while the bot's own connection works: the dump fails.
    broken = app_db.stack.model_copy(update={"database": app_db.stack.database.model_copy(update={"user": "no_such_role"})})
    runtime = _runtime(make_runtime, tmp_path, broken, backup_keep=1, backup_keep_days=0)
    reply = run(runtime, "UOP", "/backup")
    assert reply.failed and reply.text.startswith("The backup failed, and no file was left: pg_dump failed in the postgres container")
    assert 'role "no_such_role" does not exist' in reply.text
    failed = _backup(runtime, 3)
    assert (failed.state, failed.path, failed.size) == ("failed", None, None)
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == sorted(Path(_backup(good, n).path).name for n in (1, 2))
    assert _backup(runtime, 1).state == _backup(runtime, 2).state == "ok", "a failed newest backup deletes nothing, whatever the rules say"


def test_retention_keeps_the_newest_n_everything_younger_than_d_days_and_the_newest_verified(make_runtime, tmp_path, app_db):
    from datetime import timedelta

    from bot.store.engine import utcnow

    young = _runtime(make_runtime, tmp_path, app_db.stack, backup_keep=2, backup_keep_days=14)
    for _ in range(4):
        assert not run(young, "UOP", "/backup").failed
    assert [_backup(young, n).state for n in range(1, 5)] == ["ok"] * 4, "more than N, but all younger than D days"
    assert not run(young, "UOP", "/backup verify 1").failed
    for n in range(1, 5):
        _set(young, n, started_at=utcnow() - timedelta(days=30))
    reply = run(young, "UOP", "/backup")
    assert "Retention deleted #2" in reply.text and "#3" in reply.text
    states = [_backup(young, n).state for n in range(1, 6)]
    assert states == ["ok", "deleted", "deleted", "ok", "ok"], "#1 is the newest verified, #4 and #5 the newest two"
    assert not Path(_backup(young, 2).path).exists() and Path(_backup(young, 1).path).exists()
    with young.store.session() as session:
        pruned = session.query(AuditEntry).filter(AuditEntry.outcome == "pruned").order_by(AuditEntry.id).all()
    assert [(row.arguments["backup_id"], row.user_id, row.command, row.job_id) for row in pruned] == [
        (2, "UOP", "backup", _backup(young, 5).job_id), (3, "UOP", "backup", _backup(young, 5).job_id)
    ]


def test_verify_restores_for_real_into_a_scratch_database_that_is_dropped(make_runtime, tmp_path, app_db, live_stack):
    app_db.add_events(500)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    assert not run(runtime, "UOP", "/backup").failed
    reply = run(runtime, "UOP", "/backup verify 1")
    assert not reply.failed, reply.text
    assert "Test restore into a scratch database succeeded" in reply.text and "events 500, users 3" in reply.text
    backup = _backup(runtime, 1)
    assert backup.verified_ok is True and backup.verified_at is not None
    assert scratch_databases(live_stack) == []
    assert "🟢 verified" in run(runtime, "UVIEW", "/backups").text


@pytest.mark.parametrize("damage", ["row counts that do not match", "a file cut short but recorded as complete"])
def test_a_failed_verification_does_not_leave_its_scratch_database(make_runtime, tmp_path, app_db, live_stack, damage):
    import hashlib

    app_db.add_events(3000)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    assert not run(runtime, "UOP", "/backup").failed
    backup = _backup(runtime, 1)
    if damage == "row counts that do not match":
        _set(runtime, 1, table_counts=[[s, t, rows + 1] for s, t, rows in backup.table_counts])
        expected = "Row counts differ: public.events: 3000 rows restored, 3001 recorded"
    else:  # as if the dump had been cut off and still recorded: the table of contents reads, the data does not
        path = Path(backup.path)
        path.write_bytes(path.read_bytes()[: backup.size // 2])
        _set(runtime, 1, size=backup.size // 2, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
        expected = "The test restore failed"
    reply = run(runtime, "UOP", "/backup verify 1")
    assert reply.failed and reply.text.startswith("❌ Backup #1 failed verification") and expected in reply.text, reply.text
    assert "Scratch database flowstate_verify_j2_" in reply.text and scratch_databases(live_stack) == []
    assert _backup(runtime, 1).verified_ok is False
    assert "🔴 verification failed" in run(runtime, "UVIEW", "/backups").text


@pytest.mark.parametrize(
    "line, said",
    [
        ("/restore 1;touch${IFS}/tmp/pwned", "is not a backup's number"),
        ("/restore ../../etc/passwd", "is not a backup's number"),
        ("/restore -1", "is not a backup's number"),
        ("/restore 99999999999", "is not a backup's number"),
        ("/restore 0", "There is no backup #0"),
        ("/restore 42", f"There is no backup #42 of {stack_setting.NAME}"),
        ("/backup verify 1 --clean", "verify takes the backup's number"),
        ("/backup verify $(id)", "is not a backup's number"),
        ("/backup <!channel> everyone look", "a note is plain words"),
        ("/backup `rm -rf /`", "a note is plain words"),
        ("/backup line\x00break", "a note is plain words"),
        ("/backup " + "x" * 201, "a note may be at most 200 characters"),
    ],
)
def test_hostile_backup_ids_and_notes_are_refused_in_one_sentence(make_runtime, tmp_path, app_db, line, said):
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    reply = run(runtime, "UOP", line)
    assert said.lower() in reply.text.lower(), reply.text
    with runtime.store.session() as session:
        assert session.query(Backup).count() == 0
    assert not Path("/tmp/pwned").exists()


def test_a_note_with_shell_characters_is_stored_as_words_and_runs_nothing(make_runtime, tmp_path, app_db):
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    note = "$(touch /tmp/pwned-note); DROP TABLE users; --"
    assert not run(runtime, "UOP", f"/backup '{note}'").failed
    assert _backup(runtime, 1).note == note and app_db.emails()[0] == "admin@example.com"
    assert not Path("/tmp/pwned-note").exists()


def test_a_stack_without_docker_backs_up_with_the_local_pg_dump_and_no_password_leaks(make_runtime, tmp_path, app_db, caplog):
    app_db.add_events(100)
    dsn = app_db.dsn.replace("postgresql://flowstate@", "postgresql://flowstate:hunter2-secret@")  # trust auth ignores it
    stack = StackConfig(database=DatabaseSection(dsn=dsn, name=app_db.name))
    runtime = _runtime(make_runtime, tmp_path, stack)
    taken = run(runtime, "UOP", "/backup local")
    verified = run(runtime, "UOP", "/backup verify 1")
    assert not taken.failed and not verified.failed, (taken.text, verified.text)
    assert "events 100, users 3" in verified.text
    with runtime.store.session() as session:
        stored = [str(row.arguments) + str(row.error) for row in session.query(AuditEntry)] + [str(b.error) for b in session.query(Backup)]
    everything = "".join(stored) + taken.text + verified.text + caplog.text
    assert "hunter2" not in everything
    assert os.stat(_backup(runtime, 1).path).st_mode & 0o777 == 0o600


def test_a_backup_is_taken_during_a_change_freeze_that_refuses_a_restart(make_runtime, tmp_path, app_db):
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    frozen = run(runtime, "UADMIN", '/freeze 2h "release day"')
    assert frozen.text.startswith(f"🧊 Changes to {runtime.stack_name} are frozen until "), frozen.text
    taken = run(runtime, "UOP", "/backup before the release")
    assert taken.text.startswith("✅ Backup #1 taken"), taken.text
    refused = run(runtime, "UOP", "/restart backend")
    assert refused.text.startswith("/restart is refused: changes are frozen until "), refused.text
