"""/backup of a generated app database vs plain `docker exec ... pg_dump -Fc > file`, and the bot's peak memory.

    tests/stack/up && .venv/bin/python bench/backup.py [--sizes 1,2] [--rounds 2]

For each size (GB on disk, grown in place) a database `flowstate_bench_*` in the test stack's postgres
gets `users` and a large `events` table; rounds alternate plain / ours. Ours runs in a child process
(the whole /backup through the dispatcher: job row, lock, audit, snapshot row counts, file, checksum), which
reports its peak RSS. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from bot.frame.config import load_stack  # noqa: E402
from tests.stack_setting import STACK_FILE  # noqa: E402

SEED = """
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL,
    role text NOT NULL DEFAULT 'user', created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', 'User ' || i FROM generate_series(1, 200000) i;
CREATE TABLE events (id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), kind text NOT NULL,
    payload jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX events_user_at ON events (user_id, at);
"""
BATCH = """
INSERT INTO events (user_id, kind, payload, at)
SELECT 1 + (random() * 199999)::int, (ARRAY['page_view','click','login','search','upload'])[1 + i % 5],
       jsonb_build_object('path', '/app/' || md5(i::text), 'ms', (random() * 900)::int, 'agent', 'Mozilla/5.0 (X11; Linux x86_64)',
                          'session', md5((i * 7)::text)),
       now() - make_interval(secs => i)
FROM generate_series(1, 500000) i
"""


def admin(stack, database="postgres") -> str:
    return psycopg.conninfo.make_conninfo(stack.database.dsn, dbname=database)


def bench_database(stack, existing: str | None) -> tuple[str, str]:
    """(name, dsn) of the given database, or of a new one seeded with users and an empty events table."""
    name = existing or f"flowstate_bench_{secrets.token_hex(4)}"
    dsn = admin(stack, name)
    if not existing:
        with psycopg.connect(admin(stack), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SEED)
    return name, dsn


def grow(dsn: str, gigabytes: float) -> int:
    """Adds batches of events until the database is that large; a restart of the shared test stack only pauses it."""
    while True:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                while (size := conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]) < gigabytes * 1e9:
                    conn.execute(BATCH)
                conn.execute("ANALYZE")
                return size
        except psycopg.OperationalError as error:
            if error.sqlstate not in (None, "57P01", "57P03"):  # lost connection, admin shutdown, starting up
                raise
            print(f"  (the server went away: {str(error).splitlines()[0]}; continuing)", flush=True)
            time.sleep(5)


def container_name(stack) -> str:
    import docker

    client = docker.from_env()
    try:
        (container,) = client.containers.list(
            filters={"label": [f"com.docker.compose.project={stack.stack.compose_project}", "com.docker.compose.service=postgres"]}
        )
        return container.name
    finally:
        client.close()


def plain(stack, name: str, out: Path) -> float:
    started = time.perf_counter()
    with out.open("wb") as file:
        subprocess.run(["docker", "exec", container_name(stack), "pg_dump", "-U", stack.database.user, "-Fc", "-d", name],
                       stdout=file, check=True)
    return time.perf_counter() - started


def ours(name: str, dsn: str, home: Path) -> dict:
    """The bot's /backup in a child process: its wall time and peak RSS."""
    result = subprocess.run([sys.executable, __file__, "--child", name, dsn, str(home)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"/backup failed in the child process:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def child(name: str, dsn: str, home: str) -> None:
    from bot.frame.config import DatabaseSection, Settings
    from bot.frame.registry import Invocation
    from bot.runtime import Runtime

    stack = load_stack(STACK_FILE, required=True)
    stack = stack.model_copy(update={"database": DatabaseSection(dsn=dsn, name=name, user=stack.database.user)})
    runtime = Runtime.build(Settings(_env_file=None, home=Path(home), admins=["UBENCH"], backup_keep=1, backup_keep_days=0), stack)
    started = time.perf_counter()
    reply = runtime.pipeline.dispatch(Invocation("UBENCH", "backup", "bench", "CBENCH"))
    seconds = time.perf_counter() - started
    if reply.failed:
        raise SystemExit(reply.text)
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "text": reply.text.splitlines()[1]}))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,2", help="database sizes in GB on disk, grown in turn (default 1,2)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the generated database (bench/restore.py --database NAME)")
    parser.add_argument("--database", help="grow this database (one a run kept) instead of a new one")
    args = parser.parse_args()
    stack = load_stack(STACK_FILE, required=True)
    name, dsn = bench_database(stack, args.database)
    work = Path(tempfile.mkdtemp(prefix="flowstate-bench-backup-"))
    try:
        print(f"{'size':>8} {'plain s':>8} {'ours s':>8} {'ratio':>6} {'peak RSS':>9}  (target: ratio <= 1.10x, RSS < 150 MB)")
        for gigabytes in [float(s) for s in args.sizes.split(",")]:
            started = time.perf_counter()
            size = grow(dsn, gigabytes)
            print(f"  generated {name}: {size / 1e9:.2f} GB in {time.perf_counter() - started:.0f} s", flush=True)
            for _ in range(args.rounds):
                bare = plain(stack, name, work / "plain.dump")
                mine = ours(name, dsn, work / "home")
                print(f"{size / 1e9:>6.2f}GB {bare:>8.1f} {mine['seconds']:>8.1f} {mine['seconds'] / bare:>5.2f}x {mine['peak_mb']:>6.0f} MB"
                      f"   dump {(work / 'plain.dump').stat().st_size / 1e6:.0f} MB", flush=True)
    finally:
        subprocess.run(["rm", "-rf", "--", str(work)], check=False)
        if not args.keep:
            with psycopg.connect(admin(stack), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            print(f"kept database {name}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(*sys.argv[2:])
        raise SystemExit(0)
    raise SystemExit(main())
