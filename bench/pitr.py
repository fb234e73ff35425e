"""/restore --to from approval to healthy vs the same recovery done by hand, in the same run.

    FLOWSTATE_TEST_STACK=flowstate-test-N tests/stack/up
    FLOWSTATE_TEST_STACK=flowstate-test-N .venv/bin/python bench/pitr.py [--size-gb 1] [--services python-worker] [--rounds 1]

The database is one of the bench's own in the test stack's postgres (grown as bench/backup.py does), so flowstate_ai
is never replaced. Archiving is turned on for the run (ALTER SYSTEM, a restart of the postgres service) and off again
at the end; a base backup is taken with pg_basebackup, then a row is inserted, the moment T noted, more rows written
and the WAL switched into the archive.

By hand: `docker stop` the services, copy the base backup into the container, unpack it into a fresh data directory,
write restore_command and recovery_target_time = T with recovery_target_action = 'promote' and recovery.signal, start
that server and wait until it is promoted, `docker start` the services and wait until healthy. (By hand the recovered
server is a second cluster beside live; pointing the app at it is left out, which favours the baseline.)
Ours: `/restore --to T` asked by one user (its check recovers into the scratch instance: "request"), the new database
filled from the scratch in the background as a runner's sweep does while the request waits ("prefill"), then approved by
another and run (stop, swap by rename, start, health gate): from approval to healthy ("ours"). Then the honest worst
case, a second request approved the moment the background copy starts ("at once"): its run waits for the copy.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.backup import admin, bench_database, container_name, grow  # noqa: E402
from bot.adapters.console import run_approved  # noqa: E402
from bot.backups.recovery import AS_POSTGRES, SCRATCH_ROOT, postgres_time  # noqa: E402
from bot.frame.config import DatabaseSection, Settings, load_stack  # noqa: E402
from bot.frame.registry import Invocation  # noqa: E402
from bot.frame.roles import Role  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from tests.backups.pitr_world import archiving_off, archiving_on, switch_wal, take_base  # noqa: E402
from tests.stack_setting import STACK_FILE  # noqa: E402


def by_hand(runtime, base: Path, target: datetime, services: list[str]) -> float:
    container, where = container_name(runtime.stack.config), f"{SCRATCH_ROOT}/bench-by-hand"
    docker = runtime.stack.compose

    def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "exec", container, *argv], check=check, capture_output=True, text=True)

    conf = Path(tempfile.mkdtemp()) / "postgresql.auto.conf"
    conf.write_text(
        f"listen_addresses = ''\nunix_socket_directories = '{where}'\narchive_mode = 'off'\nshared_preload_libraries = ''\n"
        f"restore_command = 'cp /archive/%f %p'\nrecovery_target_time = '{postgres_time(target)}'\nrecovery_target_action = 'promote'\n"
    )
    started = time.perf_counter()
    docker.stop(services)
    sh("mkdir", "-p", f"{where}/data")
    subprocess.run(["docker", "cp", str(base), f"{container}:{where}/base.tar"], check=True)
    sh("tar", "-xf", f"{where}/base.tar", "-C", f"{where}/data")
    subprocess.run(["docker", "cp", str(conf), f"{container}:{where}/data/postgresql.auto.conf"], check=True)
    sh("touch", f"{where}/data/recovery.signal")
    sh("chown", "-R", "postgres:postgres", where)
    sh("chmod", "0700", f"{where}/data")
    sh(*AS_POSTGRES, "pg_ctl", "-D", f"{where}/data", "-l", f"{where}/log", "-w", "-t", "3600", "-s", "start")
    while sh("psql", "-XAtq", "-h", where, "-U", "flowstate", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()",
             check=False).stdout.strip() != "f":
        time.sleep(0.2)
    docker.start(services)
    for service in services:
        docker.wait_healthy(service, 120)
    seconds = time.perf_counter() - started
    sh(*AS_POSTGRES, "pg_ctl", "-D", f"{where}/data", "-m", "immediate", "-s", "stop", check=False)
    sh("rm", "-rf", where)
    return seconds


def ask(runtime, target: datetime) -> tuple[float, str]:
    """The request's seconds (its check recovers into the scratch instance) and its number."""
    started = time.perf_counter()
    asked = runtime.pipeline.dispatch(Invocation("UBENCH", "restore", f"--to {target.isoformat()}", "CBENCH"))
    if not asked.text.startswith("Request #"):
        raise SystemExit(asked.text)
    return time.perf_counter() - started, re.match(r"Request #(\d+)", asked.text).group(1)


def prefill(runtime, number: str) -> None:
    """The background copy, as a runner's sweep starts it while the request waits."""
    if runtime.scratches.prefill_in_background(runtime.at_fault) != int(number):
        raise SystemExit(f"the background copy of request #{number} did not start")


def approve(runtime, number: str, show: bool) -> float:
    """The seconds from approval to healthy."""
    started = time.perf_counter()
    runtime.pipeline.dispatch(Invocation("UAPPROVER", "approvals", f"approve {number}", "CBENCH"))
    (reply,) = list(run_approved(runtime, lambda _text: None))
    seconds = time.perf_counter() - started
    if reply.failed:
        raise SystemExit(reply.text)
    for line in reply.text.splitlines()[1:] if show else []:
        print(f"    {line}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the generated database (default 1 GB)")
    parser.add_argument("--services", default="python-worker", help="the services stopped and started (comma-separated)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    stack = load_stack(STACK_FILE, required=True)
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    work = Path(tempfile.mkdtemp(prefix="flowstate-bench-pitr-"))
    name, dsn = bench_database(stack, None)
    archiving_on(stack, work / "setup")
    try:
        grow(dsn, args.size_gb)
        with psycopg.connect(dsn) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        stack = stack.model_copy(update={"database": DatabaseSection(
            dsn=dsn, name=name, user=stack.database.user, compose_service=stack.database.compose_service)})
        settings = Settings(_env_file=None, home=work / "home", admins=["UBENCH"], restore_services=services, backup_dir=work / "backups")
        runtime = Runtime.build(settings, stack)
        from bot.frame.authz import Authorizer

        with runtime.store.session.begin() as session:
            Authorizer.grant(session, "UAPPROVER", Role.approver, "UBENCH")
        print(f"database {name}: {size / 1e9:.2f} GB on disk; services {', '.join(services)}")
        print(f"{'by hand s':>10} {'request s':>10} {'prefill s':>10} {'ours s':>8} {'ratio':>6} {'at once s':>10} {'ratio':>6}"
              "  (ours: approval to healthy, approved after the background copy; target <= 1.2x)")
        for _ in range(args.rounds):
            taken = time.perf_counter()
            base = take_base(runtime)
            base_seconds = time.perf_counter() - taken
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("INSERT INTO users (email, name) VALUES (%s, 'At T')", (f"t{time.time_ns()}@example.com",))
                time.sleep(1.0)
                target = datetime.now(timezone.utc)
                time.sleep(1.0)
                conn.execute("DELETE FROM events WHERE id IN (SELECT id FROM events LIMIT 1000)")
            switch_wal(stack)
            hand = by_hand(runtime, base.path, target, services)
            request, number = ask(runtime, target)
            started = time.perf_counter()
            prefill(runtime, number)
            runtime.scratches.wait_for_prefill()
            filled = time.perf_counter() - started
            mine = approve(runtime, number, show=True)
            _request, number = ask(runtime, target)
            prefill(runtime, number)
            at_once = approve(runtime, number, show=False)
            print(f"{hand:>10.1f} {request:>10.1f} {filled:>10.1f} {mine:>8.1f} {mine / hand:>5.2f}x {at_once:>10.1f} {at_once / hand:>5.2f}x"
                  f"   (base backup {base_seconds:.1f} s)", flush=True)
        runtime.close()
    finally:
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)
        with psycopg.connect(admin(stack), autocommit=True) as conn:  # and its kept copies and unfinished new ones
            for (database,) in conn.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s",
                                            (name, name.replace("_", "\\_") + "\\_\\_%")).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        archiving_off(stack)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
