"""The world a point-in-time restore needs, made by archive's own parts (bot/backups/archive.py): archiving turned on
by `/backup setup-pitr`, asked and approved through a bot of its own (it takes the first base backup), and base
backups by `take_base_backup`. Archiving is turned off again at the module's end (tests/backups/archiving.py's
archiving_off: ALTER SYSTEM RESET and a restart), so the stack's other tests run against a server that does not archive.
"""

from __future__ import annotations

from pathlib import Path

from bot.backups.archive import take_base_backup
from bot.backups.recovery import BaseBackup
from bot.runtime import Runtime
from tests.backups.archiving import archiving_off, runtime_for, setting, setup_pitr, switch_and_wait  # noqa: F401 (re-exported)
from tests.conftest import make_settings


def archiving_on(live_stack, work: Path) -> None:
    """Archiving on, by archive's setup (a no-op when the server archives already)."""
    if setting(live_stack, "archive_mode") == "on":
        return
    runtime = runtime_for(lambda stack, **values: Runtime.build(make_settings(work, **values), stack), work, live_stack)
    try:
        _asked, reply = setup_pitr(runtime)
        assert not reply.failed, reply.text
    finally:
        runtime.close()


def take_base(runtime) -> BaseBackup:
    """A base backup of the runtime's database by archive's take_base_backup, as the scratch instance starts from it."""
    row = take_base_backup(runtime.backups, "UOP", note="a test's base backup")
    return BaseBackup(Path(row.path), row.wal_start_file, row.base_ended_at, row.id)


def switch_wal(stack) -> str:
    """Close the current WAL segment and wait until it is in the archive; its name."""
    return switch_and_wait(stack, stack.database.dsn)
