"""The nightly backup and the weekly restore drill as scheduled duties, on a database of the live stack."""

from __future__ import annotations

from bot.backups.model import Backup
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from tests.conftest import grant
from tests.duties.conftest import scheduled, utc  # noqa: F401 (a fixture)


def test_the_nightly_backup_is_taken_and_posted_and_the_drill_verifies_it_by_a_test_restore(scheduled, app_db, tmp_path):
    duties = scheduled(
        utc(2026, 3, 28, 1, 0), stack=app_db.stack, backup_at="02:00", drill_at="sat 03:00", backup_dir=tmp_path / "backups"
    )
    (taken,) = duties.at(utc(2026, 3, 28, 1, 0))
    assert taken.startswith("✅ Backup #1 taken")
    with duties.rt.store.session() as session:
        backup = session.get(Backup, 1)
    assert (backup.state, backup.requested_by, backup.note) == ("ok", "scheduler", "nightly")
    (drill,) = duties.at(utc(2026, 3, 28, 2, 0))
    assert drill.startswith("✅ Backup #1 verified by a test restore")
    with duties.rt.store.session() as session:
        backup = session.get(Backup, 1)
    assert backup.verified_ok is True and backup.verification
    grant(duties.rt, "U0VIEWER", Role.viewer)
    shown = duties.rt.pipeline.dispatch(Invocation("U0VIEWER", "schedule", "", "C1")).text
    assert "last 🟢 succeeded for Sat 2026-03-28 02:00 CET: backup #1 taken" in shown
    assert "last 🟢 succeeded for Sat 2026-03-28 03:00 CET: backup #1 verified by a test restore" in shown
