"""Continuous archiving on the live stack's PostgreSQL, for the tests of bot/backups/archive.py.

ALTER SYSTEM persists in the stack's data volume, so a module that turns archiving on turns it off again at its end
(`archiving_off`): the stack's other tests run against a server that does not archive.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import docker
import psycopg

from bot.adapters.console import run_approved
from bot.backups.model import Backup
from bot.frame.roles import Role
from tests.conftest import grant, run

SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_timeout")


def admin(live_stack) -> psycopg.Connection:
    return psycopg.connect(psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname="postgres"), autocommit=True, connect_timeout=3)


def setting(live_stack, name: str) -> str:
    with admin(live_stack) as conn:
        return conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,)).fetchone()[0]


def in_auto_conf(live_stack) -> dict[str, str]:
    """Our settings as postgresql.auto.conf holds them (what the next restart would apply)."""
    with admin(live_stack) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE '%%/postgresql.auto.conf' AND name = ANY(%s)",
            (list(SETTINGS),),
        ).fetchall()
    return dict(rows)


def restart_postgres(live_stack, only_if_stopped: bool = False) -> None:
    client = docker.from_env(timeout=120)
    try:
        (container,) = client.containers.list(
            all=True, filters={"label": [f"com.docker.compose.project={live_stack.stack.compose_project}", "com.docker.compose.service=postgres"]}
        )
        if container.status != "running":
            container.start()
        elif not only_if_stopped:
            container.restart(timeout=30)
    finally:
        client.close()
    wait_for_postgres(live_stack)


def wait_for_postgres(live_stack, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with admin(live_stack) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def archiving_off(live_stack) -> None:
    """The stack's server as tests/stack/up made it: our settings reset, restarted if it archives."""
    restart_postgres(live_stack, only_if_stopped=True)
    with admin(live_stack) as conn:
        for name in SETTINGS:
            conn.execute(f"ALTER SYSTEM RESET {name}")
        conn.execute("SELECT pg_reload_conf()")
    if setting(live_stack, "archive_mode") != "off":
        restart_postgres(live_stack)


def runtime_for(make_runtime, tmp_path, stack, **settings):
    runtime = make_runtime(stack, admins=["UADMIN"], backup_dir=tmp_path / "backups", restore_services=["python-worker"], **settings)
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    return runtime


def setup_pitr(runtime):
    """/backup setup-pitr asked by an operator and approved by an approver; the run's reply."""
    asked = run(runtime, "UOP", "/backup setup-pitr")
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    return asked, reply


def bases(runtime) -> list[Backup]:
    with runtime.store.session() as session:
        return list(session.query(Backup).filter(Backup.kind == "base").order_by(Backup.id))


def archived(live_stack) -> list[str]:
    return sorted(p.name for p in Path(live_stack.pitr.archive_dir).iterdir() if re.fullmatch(r"[0-9A-F]{24}", p.name))


def switch_and_wait(live_stack, dsn: str, sql: str | None = None, seconds: float = 30) -> str:
    """Some writes (or a message in the WAL), a switch to a new segment, and the switched one in the archive: its name."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql or "SELECT pg_logical_emit_message(false, 'test', 'x')")
        name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + seconds
    while name not in archived(live_stack):
        assert time.monotonic() < deadline, f"{name} did not arrive in the archive"
        time.sleep(0.2)
    return name
