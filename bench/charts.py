"""A chart of 7 days of per-minute samples: six services' CPU and memory, the two 5xx rates, database connections
and the AI worker queue (16 series, 10,080 minutes each: 60,480 points in each of the CPU and memory panels).

Run from the repository root (no live stack needed):
    .venv/bin/python bench/charts.py [--rounds 5]

A fresh SQLite store gets the samples (noise: every minute differs, the worst case for drawing) and a release a
day. Measured, warm (after one untimed chart: matplotlib's import and font cache are a process's once):
- read: the samples of the week from the store, as each pixel column's minimum and maximum (bot/stack/trends.py);
- render: the figure drawn and encoded as PNG (bot/stack/chart.py);
- whole: what /stats 7d adds, read + marks + render (bot/deploy/marks.py trend_chart), and its CPU time (which a
  machine shared with other work disturbs less than the wall time);
and the cold first chart of a new process, and peak memory: the child process's ru_maxrss (the interpreter,
matplotlib and numpy included) and Python's allocations during one render (tracemalloc, not timed).
Budget: whole < 1 s, peak < 200 MB. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVICES = ("frontend", "backend", "python-worker", "postgres", "redis", "nginx")
DAYS = 7
BUDGET_SECONDS, BUDGET_MB = 1.0, 200


def fill(database_url: str, end: datetime) -> None:
    """The week's samples and a release a day, written straight into a migrated store."""
    import numpy as np
    from sqlalchemy import insert

    from bot.deploy.model import Release
    from bot.stack.trends import MetricSample, minute_number
    from bot.store.engine import Store

    store = Store(database_url)
    store.migrate()
    minutes = [end - timedelta(minutes=m) for m in range(DAYS * 1440, 0, -1)]
    series = [f"{kind}:{service}" for kind in ("cpu", "mem") for service in SERVICES]
    series += ["edge_error_rate", "backend_error_rate", "db_connections", "queue_length"]
    rng = np.random.default_rng(22)
    with store.engine.begin() as connection:
        for name in series:
            values = rng.random(len(minutes)) * 80
            connection.execute(insert(MetricSample.__table__), [
                dict(series=name, minute=minute_number(minute), value=float(value)) for minute, value in zip(minutes, values)
            ])
        connection.execute(insert(Release.__table__), [
            dict(stack="flowstate", commit=f"{day:02d}" + "ab" * 19, kind="deploy", started_at=end - timedelta(days=day, hours=3),
                 finished_at=end - timedelta(days=day, hours=3), health="good")
            for day in range(DAYS)
        ])
    store.dispose()


def child(database_url: str, end: datetime) -> dict:
    """One cold chart in this new process, then the warm rounds; the figures as JSON."""
    started = time.perf_counter()
    from bot.deploy.marks import marks, trend_chart
    from bot.stack.chart import COLUMNS, render
    from bot.stack.trends import read
    from bot.store.engine import Store

    store = Store(database_url)
    start = end - timedelta(days=DAYS)
    chart = trend_chart(store, "flowstate", start, end, timezone.utc, "Key metrics, last 7d")
    cold = time.perf_counter() - started
    reads, renders, wholes, cpu = [], [], [], []
    for _ in range(ARGS.rounds):
        began = time.perf_counter()
        series = read(store, start, end, COLUMNS)
        reads.append(time.perf_counter() - began)
        lines = marks(store, "flowstate", start, end)
        began = time.perf_counter()
        render(series, start, end, lines, timezone.utc, "Key metrics, last 7d")
        renders.append(time.perf_counter() - began)
        began, began_cpu = time.perf_counter(), time.process_time()
        trend_chart(store, "flowstate", start, end, timezone.utc, "Key metrics, last 7d")
        wholes.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
    tracemalloc.start()
    render(series, start, end, lines, timezone.utc, "Key metrics, last 7d")
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    store.dispose()
    return dict(
        points=chart.points, png_bytes=len(chart.png), marks=len(chart.marks), cold=cold,
        read=statistics.median(reads), render=statistics.median(renders), whole=statistics.median(wholes),
        whole_max=max(wholes), whole_cpu=statistics.median(cpu), traced_mb=traced / 2**20, maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def main() -> None:
    end = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    if ARGS.child:
        print(json.dumps(child(ARGS.child, datetime.fromisoformat(ARGS.end))))
        return
    with tempfile.TemporaryDirectory(prefix="flowstate-bench-charts-") as home:
        url = f"sqlite:///{home}/bot.db"
        began = time.perf_counter()
        fill(url, end)
        print(f"stored {DAYS} days of 16 series ({16 * DAYS * 1440:,} samples) in {time.perf_counter() - began:.1f} s")
        result = subprocess.run([sys.executable, __file__, "--child", url, "--end", end.isoformat(), "--rounds", str(ARGS.rounds)],
                                capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    f = figures
    print(f"{f['points']:,} points read (each pixel column's minimum and maximum of each series), {f['marks']} releases marked, "
          f"PNG {f['png_bytes'] / 1024:.0f} KiB")
    print(f"warm, median of {ARGS.rounds}: read {f['read']:.3f} s, render {f['render']:.3f} s, "
          f"whole (read + marks + render) {f['whole']:.3f} s (slowest {f['whole_max']:.3f} s; CPU time {f['whole_cpu']:.3f} s)")
    print(f"cold (a new process: imports, font cache, first chart): {f['cold']:.3f} s")
    print(f"peak memory: process {f['maxrss_mb']:.0f} MB (ru_maxrss), Python's allocations in one render {f['traced_mb']:.0f} MB")
    ok = f["whole"] < BUDGET_SECONDS and f["maxrss_mb"] < BUDGET_MB
    print(f"budget: whole < {BUDGET_SECONDS:g} s and peak < {BUDGET_MB} MB: {'met' if ok else 'NOT met'}")


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--child", help=argparse.SUPPRESS)
parser.add_argument("--end", help=argparse.SUPPRESS)
ARGS = parser.parse_args()

if __name__ == "__main__":
    main()
