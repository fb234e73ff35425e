"""Point-in-time recovery on the live stack, archiving turned on for this module (and off again at its end).

What is promised: rows inserted at t1 and t2 and a table dropped at t3, recovered to t2 + 1 s, are all there, the
table back; a target past the newest archived change is refused before any service stops; the scratch instance is
gone once its request ends, however it ends; a bot killed mid-run leaves the app running.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from bot.backups.recovery import RecoveryError, Scratch, reachable
from bot.stack.compose import ComposeStack
from tests.backups.pitr_world import archiving_off, archiving_on, switch_wal, take_base


@pytest.fixture(scope="module")
def archiving(live_stack):
    archiving_on(live_stack)
    yield live_stack
    archiving_off(live_stack)


def _scratch_dirs(stack) -> list[str]:
    compose = ComposeStack(stack.stack.compose_project)
    out = bytearray()
    compose.exec_stream(stack.database.compose_service, ["ls", "/var/lib/postgresql/data"], out.extend)
    return [name for name in out.decode().split() if name.startswith("flowstate-pitr-")]


def _history(app_db):
    """t1, t2: a row each; t3: events dropped; the WAL switched and archived. Returns t2."""
    app_db.query("INSERT INTO users (email, name) VALUES ('t1@example.com', 'At T1')")
    time.sleep(1.0)
    (t2,), = app_db.query("INSERT INTO users (email, name) VALUES ('t2@example.com', 'At T2') RETURNING now()")
    time.sleep(2.0)
    app_db.query("DROP TABLE events")
    return t2


def test_recovered_to_t2_plus_one_second_both_rows_are_there_and_the_dropped_table_is_back(archiving, app_db, tmp_path):
    app_db.add_events(50)
    base = take_base(archiving, tmp_path / "base.tar")
    t2 = _history(app_db)
    switch_wal(archiving, archiving.pitr.archive_dir)
    reachable(archiving.pitr.archive_dir, base, t2 + timedelta(seconds=1))

    scratch = Scratch(ComposeStack(archiving.stack.compose_project), archiving.database, archiving.pitr, 990001)
    try:
        scratch.recover(base, t2 + timedelta(seconds=1))
        counts = scratch.counts(app_db.name)
        assert counts["public.users"] == 5 and counts["public.events"] == 50, counts
        assert scratch.name in _scratch_dirs(archiving)
    finally:
        scratch.remove()
    assert scratch.name not in _scratch_dirs(archiving)
    assert app_db.emails()[-2:] == ["t1@example.com", "t2@example.com"]


def test_a_target_past_the_newest_archived_change_is_refused_and_a_scratch_that_cannot_reach_it_leaves_nothing(archiving, app_db, tmp_path):
    base = take_base(archiving, tmp_path / "base.tar")
    switch_wal(archiving, archiving.pitr.archive_dir)
    later = base.ended_at + timedelta(hours=1)
    with pytest.raises(RecoveryError, match="is past the newest archived change"):
        reachable(archiving.pitr.archive_dir, base, later)
    scratch = Scratch(ComposeStack(archiving.stack.compose_project), archiving.database, archiving.pitr, 990002)
    with pytest.raises(RecoveryError, match="recovery ended before configured recovery target was reached"):
        scratch.recover(base, later)  # PostgreSQL's own word, when asked anyway
    assert scratch.name not in _scratch_dirs(archiving)
