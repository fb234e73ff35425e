"""The world a point-in-time restore needs, set up by the tests themselves until archive's part is merged: WAL
archiving on in the test stack's PostgreSQL (into its /archive mount), and a base backup taken with pg_basebackup.

LEAD: at merge, `archiving_on` becomes archive's setup and `take_base` its take_base_backup; both are kept small.
Archiving is turned on for a test module and off again at its end (ALTER SYSTEM RESET, restart). The one pg_hba.conf
line that lets pg_basebackup connect over the socket (`local replication all trust`) is left in place: harmless on a
trust-auth test server.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from bot.backups.model import OK, Backup
from bot.backups.recovery import BaseBackup, start_segment_of
from bot.backups.tools import ContainerTools
from bot.stack.compose import ComposeStack

HBA = "/var/lib/postgresql/data/pgdata/pg_hba.conf"
SERVICE = "postgres"


def _admin(stack) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(stack.database.dsn, dbname="postgres"), autocommit=True)


def _tools(stack) -> tuple[ComposeStack, ContainerTools]:
    compose = ComposeStack(stack.stack.compose_project)
    return compose, ContainerTools(compose, stack.database)


def _restart(compose: ComposeStack) -> None:
    compose.restart([SERVICE])
    compose.wait_healthy(SERVICE, 120)


def archiving_on(stack) -> None:
    compose, tools = _tools(stack)
    tools.check(["sh", "-c", f"grep -q '^local replication' {HBA} || echo 'local replication all trust' >> {HBA}"], "pg_hba.conf")
    with _admin(stack) as conn:
        conn.execute("ALTER SYSTEM SET wal_level = 'replica'")
        conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
        conn.execute("ALTER SYSTEM SET archive_command = 'test ! -f /archive/%f && cp %p /archive/%f'")
    _restart(compose)


def archiving_off(stack) -> None:
    compose, _tools_ = _tools(stack)
    with _admin(stack) as conn:
        for setting in ("archive_command", "archive_mode", "wal_level"):
            conn.execute(f"ALTER SYSTEM RESET {setting}")
    _restart(compose)


def take_base(stack, path: Path) -> BaseBackup:
    """pg_basebackup -D - -Ft -X fetch, streamed out of the container into PATH."""
    _compose, tools = _tools(stack)
    with path.open("wb") as file:
        outcome = tools.stream(["pg_basebackup", "-U", stack.database.user, "-D", "-", "-Ft", "-X", "fetch", "--checkpoint=fast"], file.write)
    assert outcome.exit_code == 0, outcome.stderr
    return BaseBackup(path, start_segment_of(path), datetime.now(timezone.utc))


def catalogue(runtime, base: BaseBackup, database: str, store=None) -> BaseBackup:
    """The base backup as a Backup row of kind "base", as archive's catalogue will hold it."""
    digest = hashlib.sha256(base.path.read_bytes()).hexdigest()
    with (store or runtime.store).session.begin() as session:
        row = Backup(stack=runtime.stack.name if runtime else "", database=database, state=OK, kind="base", requested_by="UTEST",
                     started_at=base.ended_at, finished_at=base.ended_at, path=str(base.path), size=base.path.stat().st_size,
                     sha256=digest)
        session.add(row)
        session.flush()
        backup_id = row.id
    return BaseBackup(base.path, base.start_segment, base.ended_at, backup_id)


def switch_wal(stack, archive_dir: Path, timeout: float = 60.0) -> str:
    """Close the current WAL segment and wait until it is in the archive; its name."""
    with _admin(stack) as conn:
        (name,) = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
    deadline = time.monotonic() + timeout
    while not (archive_dir / name).exists():
        assert time.monotonic() < deadline, f"{name} never reached the archive"
        time.sleep(0.2)
    return name
