"""/restore from approval to healthy vs plain stop + `pg_restore` + start, in the same run; and the seconds the app
services were down (from their stop to healthy again): a swap restore against one in place.

    tests/stack/up && .venv/bin/python bench/restore.py [--size-gb 1 | --database NAME] [--services python-worker] [--rounds 1]

The database is one of the bench's own in the test stack's postgres (generated as bench/backup.py does,
or one it kept with --keep), so flowstate_ai is never replaced. Plain: `docker stop` the services,
`docker exec -i postgres pg_restore --single-transaction --clean --if-exists --no-owner --no-acl
--no-comments -d DB < file`, `docker start`, wait until healthy (its downtime is all of it). Ours in place: a
/restore request approved by a second user and run with the swap refused (the bench replaces the swap's check):
verify, safety backup, stop, restore, start, health gate; the safety backup's time is shown apart, and the ratio
is taken without it. Ours by swap: the same request as /restore runs it now: verify, fill a new database beside
live, stop, rename, start, health gate; the kept copy is dropped after each round. The downtime of ours is the
journal's (restore_runs.app_stopped_at to app_back_at: the stop began, the health gate passed). The services
default to python-worker alone, because other engineers' tests share this stack; name the operator guide's three
to measure them.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bench.backup import admin, bench_database, container_name, grow  # noqa: E402
from bot.frame.config import DatabaseSection, Settings, load_stack  # noqa: E402
from bot.adapters.console import run_approved  # noqa: E402
from bot.frame.registry import Invocation  # noqa: E402
from bot.frame.roles import Role  # noqa: E402
from tests.stack_setting import STACK_FILE  # noqa: E402
from bot.runtime import Runtime  # noqa: E402
from bot.backups.model import RestoreRun  # noqa: E402
from bot.backups.swap import Databases  # noqa: E402


def plain(runtime, name: str, dump: Path, services: list[str]) -> float:
    docker = runtime.stack.compose
    started = time.perf_counter()
    docker.stop(services)
    with dump.open("rb") as file:
        subprocess.run(
            ["docker", "exec", "-i", container_name(runtime.stack.config), "pg_restore", "-U", runtime.stack.config.database.user,
             "--single-transaction", "--clean", "--if-exists", "--no-owner", "--no-acl", "--no-comments", "-d", name],
            stdin=file, check=True,
        )
    docker.start(services)
    for service in services:
        docker.wait_healthy(service, 120)
    return time.perf_counter() - started


def ours(runtime, backup_id: int, in_place: bool) -> tuple[float, float, float, str]:
    """Seconds from approval to the reply, of the safety backup (0 for a swap), the app down, and the reply."""
    why_not = Databases.why_not
    if in_place:
        Databases.why_not = lambda *_args, **_named: "the bench measures the in-place path"
    try:
        asked = runtime.pipeline.dispatch(Invocation("UBENCH", "restore", str(backup_id), "CBENCH"))
        if not asked.text.startswith("Request #"):
            raise SystemExit(asked.text)
        number = int(re.match(r"Request #(\d+)", asked.text).group(1))
        started = time.perf_counter()
        runtime.pipeline.dispatch(Invocation("UAPPROVER", "approvals", f"approve {number}", "CBENCH"))
        (reply,) = list(run_approved(runtime, lambda _text: None))
        seconds = time.perf_counter() - started
    finally:
        Databases.why_not = why_not
    if reply.failed:
        raise SystemExit(reply.text)
    with runtime.store.session() as session:
        run = session.get(RestoreRun, number)
    down = (run.app_back_at - run.app_stopped_at).total_seconds()
    if in_place:
        safety = float(re.search(r"2\. Safety backup .*\((\d+\.\d) s\)", reply.text).group(1))
    else:
        safety = 0.0
        Databases(runtime.stack.config.database.dsn).drop(run.old_database)  # the kept copy: disk for the next round
    return seconds, safety, down, reply.text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the generated database (default 1 GB)")
    parser.add_argument("--database", help="use this database (e.g. one bench/backup.py --keep left) instead of generating one")
    parser.add_argument("--services", default="python-worker", help="the services stopped and started (comma-separated)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    stack = load_stack(STACK_FILE, required=True)
    name, dsn = bench_database(stack, args.database)
    work = Path(tempfile.mkdtemp(prefix="flowstate-bench-restore-"))
    services = [s.strip() for s in args.services.split(",") if s.strip()]
    try:
        if not args.database:
            grow(dsn, args.size_gb)
        with psycopg.connect(dsn) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        stack = stack.model_copy(update={"database": DatabaseSection(dsn=dsn, name=name, user=stack.database.user)})
        settings = Settings(_env_file=None, home=work / "home", admins=["UBENCH"], restore_services=services, backup_keep=50)
        runtime = Runtime.build(settings, stack)
        from bot.frame.authz import Authorizer

        with runtime.store.session.begin() as session:
            Authorizer.grant(session, "UAPPROVER", Role.approver, "UBENCH")
        taken = runtime.pipeline.dispatch(Invocation("UBENCH", "backup", "bench", "CBENCH"))
        if taken.failed:
            raise SystemExit(taken.text)
        backup_id = int(re.search(r"Backup #(\d+)", taken.text).group(1))
        dump = Path(runtime.backups.get(backup_id).path)
        print(f"database {name}: {size / 1e9:.2f} GB on disk, dump {dump.stat().st_size / 1e6:.0f} MB; services {', '.join(services)}")
        print(f"{'plain s':>8} {'in place s':>11} {'safety s':>9} {'ratio':>6} {'swap s':>7} | app down: {'plain':>6} "
              f"{'in place':>9} {'swap':>6} {'swap/in place':>14}  (targets: ratio <= 1.2x; swap down < 10 s at 1 GB)")
        for _ in range(args.rounds):
            bare = plain(runtime, name, dump, services)
            mine, safety, down_in_place, _text = ours(runtime, backup_id, in_place=True)
            swapped, _none, down_swap, _text = ours(runtime, backup_id, in_place=False)
            print(f"{bare:>8.1f} {mine:>11.1f} {safety:>9.1f} {(mine - safety) / bare:>5.2f}x {swapped:>7.1f} |           {bare:>6.1f} "
                  f"{down_in_place:>9.1f} {down_swap:>6.1f} {down_swap / down_in_place:>13.2f}x", flush=True)
        runtime.close()
    finally:
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)
        with psycopg.connect(admin(stack), autocommit=True) as conn:
            left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "\\_\\_%",)).fetchall()
            for database in [name, *(row[0] for row in left)]:  # and what a swap cut off may have left beside it
                conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
