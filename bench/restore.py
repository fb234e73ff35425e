"""/restore from approval to healthy vs plain stop + `pg_restore` + start, in the same run.

    tests/stack/up && .venv/bin/python bench/restore.py [--size-gb 1 | --database NAME] [--services python-worker] [--rounds 1]

The database is one of the bench's own in the test stack's postgres (generated as bench/backup.py does,
or one it kept with --keep), so flowstate_ai is never replaced. Plain: `docker stop` the services,
`docker exec -i postgres pg_restore --single-transaction --clean --if-exists --no-owner --no-acl
--no-comments -d DB < file`, `docker start`, wait until healthy. Ours: a /restore request approved by a
second user and run (verify, safety backup, stop, restore, start, health gate); the safety backup's
time is shown apart, and the ratio is taken without it. The services default to python-worker alone,
because other engineers' tests share this stack; name the operator guide's three to measure them.
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


def ours(runtime, backup_id: int) -> tuple[float, float, str]:
    asked = runtime.pipeline.dispatch(Invocation("UBENCH", "restore", str(backup_id), "CBENCH"))
    if not asked.text.startswith("Request #"):
        raise SystemExit(asked.text)
    number = re.match(r"Request #(\d+)", asked.text).group(1)
    started = time.perf_counter()
    runtime.pipeline.dispatch(Invocation("UAPPROVER", "approvals", f"approve {number}", "CBENCH"))
    (reply,) = list(run_approved(runtime, lambda _text: None))
    seconds = time.perf_counter() - started
    if reply.failed:
        raise SystemExit(reply.text)
    safety = float(re.search(r"2\. Safety backup .*\((\d+\.\d) s\)", reply.text).group(1))
    return seconds, safety, reply.text


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
        print(f"{'plain s':>8} {'ours s':>8} {'safety s':>9} {'ours-safety':>12} {'ratio':>6} {'with safety':>12}  (target: ratio <= 1.2x)")
        for _ in range(args.rounds):
            bare = plain(runtime, name, dump, services)
            mine, safety, _text = ours(runtime, backup_id)
            print(f"{bare:>8.1f} {mine:>8.1f} {safety:>9.1f} {mine - safety:>12.1f} {(mine - safety) / bare:>5.2f}x {mine / bare:>11.2f}x", flush=True)
        runtime.close()
    finally:
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)
        with psycopg.connect(admin(stack), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
