"""Continuous archiving on the live stack: /backup setup-pitr, base backups, the window, gaps, reachable times.

What is promised: setup-pitr needs a second person, turns archiving on and proves it with a segment arriving; a
base backup is cataloged with its checksum and first segment; /backups shows since when any second is restorable
and how old the newest archived change is; a segment removed from the archive is reported as a gap that names it
and the span it breaks; a time the archive cannot reach is refused in one sentence, naming why.
The module turns archiving off again at its end (ALTER SYSTEM RESET and a restart).
"""

import hashlib
import io
import os
import tarfile
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bot.backups.archive import Archive, ArchiveError, archive_for
from bot.backups.model import Backup
from bot.frame.blocks import to_text
from tests.backups.archiving import (
    archived, archiving_off, bases, in_auto_conf, runtime_for, setting, setup_pitr, switch_and_wait,
)
from tests.conftest import run
from tests.duties.conftest import scheduled, utc  # noqa: F401 (a fixture)


@pytest.fixture(scope="module", autouse=True)
def _archiving_off_at_the_end(live_stack):
    yield
    archiving_off(live_stack)


@pytest.fixture
def archiving(make_runtime, tmp_path, app_db):
    """A runtime on the test's own database whose stack archives, with a base backup (through the bot)."""
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)
    if setting(app_db.stack, "archive_mode") == "on":
        reply = run(runtime, "UOP", "/backup base")
    else:
        _asked, reply = setup_pitr(runtime)
    assert not reply.failed, reply.text
    return runtime


def test_setup_pitr_turns_archiving_on_proves_it_and_takes_the_first_base_backup(make_runtime, tmp_path, app_db):
    archiving_off(app_db.stack)
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack)
    before = set(archived(app_db.stack))

    asked, reply = setup_pitr(runtime)

    assert "needs a second person's approval" in asked.text, asked.text
    for fact in ("Turns on continuous archiving", "Restarts postgres", "old settings are put back"):
        assert fact in to_text(asked), (fact, asked.text)
    assert not reply.failed, reply.text
    text = to_text(reply)
    for step in ("🟢 1. Set wal_level, archive_mode, archive_command and archive_timeout", "🟢 2. Restarted postgres",
                 "🟢 3. Switched to a new WAL segment: ", "🟢 4. Base backup #1: ", "Point-in-time restores can reach any second from"):
        assert step in text, (step, text)
    assert setting(app_db.stack, "archive_mode") == "on" and setting(app_db.stack, "archive_timeout") == "60"
    assert in_auto_conf(app_db.stack)["archive_command"] == (
        "(test ! -f /archive/%f && cp %p /archive/%f.part && mv /archive/%f.part /archive/%f) || cmp -s %p /archive/%f")
    arrived = set(archived(app_db.stack)) - before
    assert arrived and any(name in text for name in arrived), "the proof names a segment that is in the archive folder"

    (base,) = bases(runtime)
    assert (base.state, base.requested_by, base.job_id) == ("ok", "UOP", 1)
    data = Path(base.path).read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (base.size, base.sha256)
    assert base.wal_start_file in archived(app_db.stack), "its first segment is archived"
    assert base.wal_start_lsn and base.base_started_at <= base.base_ended_at
    with tarfile.open(base.path) as tar:
        names = tar.getnames()
        label = tar.extractfile("./backup_label").read().decode()
    assert {"./PG_VERSION", "./global/pg_control", "./postgresql.auto.conf"} <= set(names)
    assert not [name for name in names if name.startswith("./pg_wal/")], "the WAL comes from the archive"
    assert f"(file {base.wal_start_file})" in label and f"START WAL LOCATION: {base.wal_start_lsn} " in label


def test_a_second_setup_pitr_finds_archiving_on_and_restarts_nothing(archiving, app_db, stack_container):
    started = stack_container("postgres").attrs["State"]["StartedAt"]
    _asked, reply = setup_pitr(archiving)
    assert not reply.failed, reply.text
    assert "🟢 1. PostgreSQL archives into /archive already; nothing to change or restart." in reply.text
    container = stack_container("postgres")
    container.reload()
    assert container.attrs["State"]["StartedAt"] == started
    assert len(bases(archiving)) == 2


def test_the_archive_command_leaves_whole_segments_only_and_takes_a_segment_it_already_has(archiving, app_db, stack_container):
    """PostgreSQL's own archive_command, as setup-pitr configured it, run in the postgres container as the archiver runs
    it: a segment arrives whole under its name (no temporary file left); archiving it again with the same bytes is
    success (a retry after a crash must not stall the archiver for ever); other bytes under that name fail and change
    nothing; a temporary file a crash left behind is no segment to the window or the gaps."""
    command = in_auto_conf(app_db.stack)["archive_command"]
    container = stack_container("postgres")
    name = "00000001" + "FFFFFFF0" + "000000AB"  # far past any segment the test server writes

    def archive(source: str) -> int:
        line = command.replace("%p", source).replace("%f", name)
        return container.exec_run(["sh", "-c", line], user="postgres").exit_code

    assert container.exec_run(["sh", "-c", "head -c 65536 /dev/urandom > /tmp/seg-a && head -c 65536 /dev/urandom > /tmp/seg-b"],
                              user="postgres").exit_code == 0
    folder = Path(app_db.stack.pitr.archive_dir)
    try:
        assert archive("/tmp/seg-a") == 0
        first = (folder / name).read_bytes()
        assert len(first) == 65536 and not list(folder.glob("*.part"))
        assert archive("/tmp/seg-a") == 0, "the same segment again must count as archived"
        assert archive("/tmp/seg-b") != 0, "other bytes under an archived name must fail"
        assert (folder / name).read_bytes() == first, "an archived segment was overwritten"
        (folder / name).unlink()
        before = archive_for(archiving.stack, archiving.store).window()
        newest = max(archived(app_db.stack))
        (folder / f"{newest[:-2]}{int(newest[-2:], 16) + 1:02X}.part").write_bytes(b"short")  # what a crash mid-copy leaves
        after = archive_for(archiving.stack, archiving.store).window()
        assert (after.segments, after.gaps) == (before.segments, before.gaps), "a .part was taken for a segment"
    finally:
        (folder / name).unlink(missing_ok=True)
        for leftover in folder.glob("*.part"):
            leftover.unlink()
        container.exec_run(["rm", "-f", "/tmp/seg-a", "/tmp/seg-b"])


def test_backups_shows_the_window_since_the_base_backup_and_the_newest_change(archiving, app_db):
    switch_and_wait(app_db.stack, app_db.dsn, "INSERT INTO users (email, name) VALUES ('w@example.com', 'W')")
    (base, *_) = bases(archiving)
    window = Archive(app_db.stack.pitr, archiving.store, archiving.stack_name, app_db.name).window()
    assert window.since == base.base_ended_at and not window.gaps
    assert window.newest is not None and window.newest >= base.base_ended_at

    listed = run(archiving, "UOP", "/backups").text
    since = base.base_ended_at.astimezone(archiving.settings.tz)
    assert f"Point-in-time: restorable to any second since {since:%H:%M:%S}; newest archived change " in listed, listed
    assert f"base backup, WAL from {base.wal_start_file}" in listed

    assert run(archiving, "UOP", f"/backup verify {base.id}").text == (
        f"Backup #{base.id} is a base backup: /backup verify proves dumps; /backups shows what the archive can restore."
    )
    assert run(archiving, "UOP", f"/restore {base.id}").text == (
        f"Backup #{base.id} is a base backup for point-in-time restores, not a dump; /backups lists the dumps."
    )
    assert archiving.jobs.pending() == [], "no request was made"


def _gapped(archiving, app_db):
    """Four more segments after the base backup; the second of them removed from the archive."""
    names = [switch_and_wait(app_db.stack, app_db.dsn, f"INSERT INTO users (email, name) VALUES ('g{i}@example.com', 'G')")
             for i in range(4)]
    removed = Path(app_db.stack.pitr.archive_dir) / names[1]
    before_gap = (Path(app_db.stack.pitr.archive_dir) / names[0]).stat().st_mtime
    removed.unlink()
    return names, before_gap


def test_a_removed_segment_is_reported_as_a_gap_naming_it_and_the_span_it_breaks(archiving, app_db):
    names, before_gap = _gapped(archiving, app_db)
    archive = Archive(app_db.stack.pitr, archiving.store, archiving.stack_name, app_db.name)

    (gap,) = archive.window().gaps
    assert (gap.first, gap.count, gap.broken_until) == (names[1], 1, None)
    assert abs(gap.broken_from.timestamp() - before_gap) < 0.01, "the span starts at the last change archived before it"
    assert archive.window().since is None, "no base backup reaches the newest change through the gap"

    listed = run(archiving, "UOP", "/backups").text
    assert f"🔴 Gap in the WAL archive: WAL segment {names[1]} is missing; no restore can reach a time from " in listed, listed
    assert "until a base backup is taken after it (/backup base)" in listed
    assert "🔴 Point-in-time: restorable only up to " in listed and ", before the gap; newest archived change " in listed

    assert not run(archiving, "UOP", "/backup base").failed  # a base backup after the gap: later times are reachable again
    (gap,) = archive.window().gaps
    newest_base = bases(archiving)[-1]
    assert (gap.base_after, gap.broken_until) == (newest_base.id, newest_base.base_ended_at)
    assert archive.window().since == newest_base.base_ended_at
    assert f"until base backup #{newest_base.id} ended" in run(archiving, "UOP", "/backups").text


def test_check_reachable_gives_the_base_backup_or_refuses_in_one_sentence(archiving, app_db):
    archive = Archive(app_db.stack.pitr, archiving.store, archiving.stack_name, app_db.name)
    (base, *_) = bases(archiving)
    switch_and_wait(app_db.stack, app_db.dsn)
    time.sleep(1.1)
    middle = base.base_ended_at + timedelta(seconds=0.5)
    assert archive.check_reachable(middle).id == base.id

    with pytest.raises(ArchiveError) as before:
        archive.check_reachable(base.base_ended_at - timedelta(seconds=1))
    assert f"is before the oldest base backup (#{base.id}) ended at " in str(before.value)

    newest = archive.window().newest
    with pytest.raises(ArchiveError) as past:
        archive.check_reachable(newest + timedelta(seconds=30))
    assert "is past the newest archived change (" in str(past.value)

    names, before_gap = _gapped(archiving, app_db)
    target = archive.window().newest
    with pytest.raises(ArchiveError) as across:
        archive.check_reachable(target)
    said = str(across.value)
    assert f"WAL segment {names[1]} is missing from the archive, which breaks every restore from base backup #{base.id}" in said
    for refused in (str(before.value), str(past.value), said):
        assert refused.count(". ") == 0 and refused.endswith("."), "one sentence"
    assert archive.check_reachable(middle).id == base.id, "a time before the gap is still reachable"


def test_retention_of_base_backups_prunes_the_segments_no_kept_base_backup_needs(make_runtime, tmp_path, app_db):
    runtime = runtime_for(make_runtime, tmp_path, app_db.stack, backup_keep=1, backup_keep_days=0)
    if setting(app_db.stack, "archive_mode") != "on":
        assert not setup_pitr(runtime)[1].failed
    else:
        assert not run(runtime, "UOP", "/backup base").failed
    first = bases(runtime)[0]
    switch_and_wait(app_db.stack, app_db.dsn)
    older = [name for name in archived(app_db.stack) if name < first.wal_start_file]
    reply = run(runtime, "UOP", "/backup base")
    assert not reply.failed, reply.text
    kept = bases(runtime)[-1]
    assert f"Retention deleted base backups #{first.id}" in reply.text, reply.text
    assert not os.path.exists(first.path)
    assert all(name >= kept.wal_start_file for name in archived(app_db.stack)), "nothing before the kept base backup's start"
    assert kept.wal_start_file in archived(app_db.stack)
    assert older or first.wal_start_file < kept.wal_start_file


def test_the_nightly_duty_takes_a_base_backup_and_the_daily_report_shows_the_window_and_a_gap_loudly(archiving, scheduled, app_db, tmp_path):
    duties = scheduled(utc(2026, 3, 28, 1, 0), stack=app_db.stack, backup_at="02:00", daily_report_at="08:30",
                       backup_dir=tmp_path / "scheduled", approver_group="S0ONCALL")
    dump, base = duties.at(utc(2026, 3, 28, 1, 0))  # the store is the archiving fixture's: its base backup is #1
    assert dump.startswith("✅ Backup #2 taken") and base.startswith("✅ Base backup #3 taken"), (dump, base)
    with duties.rt.store.session() as session:
        taken = session.get(Backup, 3)
    assert (taken.kind, taken.requested_by, taken.state) == ("base", "scheduler", "ok")
    assert duties.runs("nightly-backup")[0].message == "backup #2 taken; base backup #3 taken"

    (report,) = duties.at(utc(2026, 3, 28, 7, 30))
    since = bases(duties.rt)[0].base_ended_at.astimezone(duties.rt.settings.tz)  # the oldest: any second since its end
    assert f"\nPoint-in-time: restorable to any second since {since:%Y-%m-%d %H:%M:%S %Z}; newest archived change " in report, report

    switch_and_wait(app_db.stack, app_db.dsn)
    names, _before_gap = _gapped(duties.rt, app_db)
    posted = duties.at(utc(2026, 3, 29, 6, 30))  # the next night's backups and morning's report
    (report,) = [text for text in posted if text.startswith("☀️ Daily report")]
    (loud,) = [text for text in posted if text.startswith("🚨")]
    assert f"🔴 Gap in the WAL archive: WAL segment {names[1]} is missing" in report, report
    assert loud.startswith(f"🚨 <!subteam^S0ONCALL> The WAL archive of {duties.rt.stack_name} needs attention"), loud
    assert names[1] in loud


RECOVER_BY_HAND = """
set -e
D=/var/lib/postgresql/data/archive-test-recovery; S=$D-sock
rm -rf "$D" "$S"; mkdir -p "$D" "$S"
tar -xf /var/lib/postgresql/data/archive-test.tar -C "$D"; rm -f /var/lib/postgresql/data/archive-test.tar
touch "$D/recovery.signal"
# archive_mode off: the recovered copy must never archive its own timeline into the live archive.
printf "restore_command = 'cp /archive/%%f %%p'\\nrecovery_target_time = '%s'\\nrecovery_target_action = 'promote'\\narchive_mode = 'off'\\n" "$TARGET" >> "$D/postgresql.auto.conf"
chown -R postgres:postgres "$D" "$S"; chmod 700 "$D"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }
as_pg pg_ctl -D "$D" -w -t 60 -l "$D.log" -o "-c listen_addresses= -k $S -p 5999 -c shared_preload_libraries=pg_stat_statements" start >/dev/null
for _ in $(seq 60); do  # hot standby answers while it replays; promoted at the target
    [ "$(as_pg psql -h "$S" -p 5999 -U flowstate -d postgres -Atc 'SELECT pg_is_in_recovery()')" = f ] && break; sleep 0.5
done
as_pg psql -h "$S" -p 5999 -U flowstate -d "$DB" -Atc "SELECT pg_is_in_recovery(), string_agg(email, ',' ORDER BY id) FROM users WHERE email LIKE 'pitr%'" || true
as_pg pg_ctl -D "$D" -m fast stop >/dev/null
rm -rf "$D" "$S" "$D.log"
"""


def test_a_base_backup_recovers_by_hand_to_a_time_between_two_writes(archiving, app_db, stack_container):
    """What /restore --to will do: the tar, recovery.signal, restore_command from the archive, a target time."""
    app_db.query("INSERT INTO users (email, name) VALUES ('pitr1@example.com', 'Before')")
    time.sleep(1.2)
    target = app_db.query("SELECT now()")[0][0]
    time.sleep(1.2)
    app_db.query("INSERT INTO users (email, name) VALUES ('pitr2@example.com', 'After')")
    switch_and_wait(app_db.stack, app_db.dsn)
    base = Archive(app_db.stack.pitr, archiving.store, archiving.stack_name, app_db.name).check_reachable(target)

    container = stack_container("postgres")
    with open(base.path, "rb") as tar:
        data = tar.read()
    wrapper = io.BytesIO()
    with tarfile.open(fileobj=wrapper, mode="w") as outer:
        info = tarfile.TarInfo("archive-test.tar")
        info.size = len(data)
        outer.addfile(info, io.BytesIO(data))
    assert container.put_archive("/var/lib/postgresql/data", wrapper.getvalue())
    result = container.exec_run(["sh", "-c", RECOVER_BY_HAND], environment={"TARGET": target.isoformat(), "DB": app_db.name})
    assert result.exit_code == 0, result.output.decode()
    assert result.output.decode().strip().splitlines()[-1] == "f|pitr1@example.com", result.output.decode()
