"""/postmortem over a big channel: 10,000 messages (500 threads) and 1,000 timeline events, served by the Slack double.

Run from the repository root (no live stack needed):
    .venv/bin/python bench/postmortem.py [--rounds 3]

The double runs in its own process (it stands in for Slack, on another machine in production), so its
work never shares our interpreter lock. Each round writes the post-mortem of a fresh incident on a fresh
SQLite store: read the channel's history and every thread, store the messages on the timeline, resolve
the names, render the Markdown, store it and upload it. Measured:
- our time: the whole, minus the wall time spent waiting in Web API calls and the file upload; and the CPU
  time of this process over the round (the double's work is in its own process), which a machine shared
  with other work disturbs less;
- the Web API calls, per method, against what the pages and threads require;
- peak memory of this process (ru_maxrss) and of Python's own allocations during the round (tracemalloc).
Targets: our time < 1 s, calls no more than needed, peak memory < 200 MB. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import resource
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slack_sdk import WebClient  # noqa: E402

from bot.frame.config import Settings, StackConfig  # noqa: E402
from bot.incidents.model import COMMAND, NOTE, STATUS  # noqa: E402
from bot.incidents.timeline import Event  # noqa: E402
from bot.runtime import Runtime  # noqa: E402

CHANNEL = "C0BENCH"
MESSAGES, THREADS, REPLIES_PER_THREAD, EVENTS, USERS = 10_000, 500, 4, 1_000, 25
PAGE = 999


def serve_double(ready, stop, start: float) -> None:
    """The double, seeded with the channel: 8,000 top-level messages, 500 of them with 4 replies."""
    from tests.slack_double import SlackDouble

    with SlackDouble() as double:
        for u in range(USERS):
            double.add_user(f"U{u:04d}", f"user{u}", display_name=f"User {u}")
        top_level = MESSAGES - THREADS * REPLIES_PER_THREAD
        step = 3600 * 6 / MESSAGES  # six hours of talk
        at = start
        for i in range(top_level):
            at += step
            ts = double.seed_message(CHANNEL, f"message {i}: <@U{(i * 7) % USERS:04d}> look at *this*", f"U{i % USERS:04d}", ts=f"{at:.6f}")
            if i % (top_level // THREADS) == 0 and i // (top_level // THREADS) < THREADS:
                for r in range(REPLIES_PER_THREAD):
                    double.seed_message(CHANNEL, f"reply {r} to {i}", f"U{(i + r) % USERS:04d}", ts=f"{at + (r + 1) * step / 10:.6f}", thread_ts=ts)
        ready.put(double.api_url)
        stop.wait()


class CallClock:
    """Counts Web API calls per method and the wall time spent waiting in them (the double's latency)."""

    def __init__(self):
        self.calls: Counter[str] = Counter()
        self.waited = 0.0
        self._api_call, self._upload = WebClient.api_call, WebClient._upload_file
        clock = self

        def api_call(client, api_method, *args, **kwargs):
            clock.calls[api_method] += 1
            started = time.perf_counter()
            try:
                return clock._api_call(client, api_method, *args, **kwargs)
            finally:
                clock.waited += time.perf_counter() - started

        def upload(client, *args, **kwargs):
            clock.calls["(upload to upload_url)"] += 1
            started = time.perf_counter()
            try:
                return clock._upload(client, *args, **kwargs)
            finally:
                clock.waited += time.perf_counter() - started

        WebClient.api_call, WebClient._upload_file = api_call, upload

    def reset(self) -> None:
        self.calls.clear()
        self.waited = 0.0


def one_round(api_url: str, start: datetime, clock: CallClock, *, trace_memory: bool = False) -> dict:
    home = Path(tempfile.mkdtemp(prefix="flowstate-bench-pm-"))
    client = WebClient(token="xoxb-bench", base_url=api_url)
    runtime = Runtime.build(Settings(_env_file=None, home=home, timezone="Europe/Berlin"), StackConfig(), slack=client)
    timeline = runtime.incidents.timeline
    incident = timeline.open(CHANNEL, "Bench incident", 2, "U0000", at=start)
    events = []
    for i in range(EVENTS):  # what the incident recorded while it happened
        at = start + timedelta(seconds=i * 6 * 3600 / EVENTS)
        kind = (COMMAND, NOTE, STATUS)[i % 3]
        details = {"outcome": "succeeded", "duration_ms": 1200, "command": "/health"} if kind == COMMAND else ({"change": "status"} if kind == STATUS else None)
        events.append(Event(kind, at, f"`/health` succeeded" if kind == COMMAND else f"update {i}", f"U{i % USERS:04d}", details, CHANNEL))
    timeline.add(incident.id, *events)
    timeline.resolve(incident.id, "U0000", "fixed", at=start + timedelta(hours=6, minutes=1))
    incident = timeline.get(incident.id)
    clock.reset()
    if trace_memory:  # tracing slows Python down several times: its round is not timed
        tracemalloc.start()
    started, cpu_started = time.perf_counter(), time.process_time()
    reply = runtime.incidents.postmortem(incident, CHANNEL, "U0000")
    whole, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    traced_peak = tracemalloc.get_traced_memory()[1] if trace_memory else 0
    tracemalloc.stop()
    if not reply.text.startswith("Post-mortem of incident"):
        raise SystemExit(f"the post-mortem failed: {reply.text[:300]}")
    stored = timeline.count(incident.id)
    runtime.close()
    return {"whole": whole, "ours": whole - clock.waited, "cpu": cpu, "waited": clock.waited, "calls": dict(clock.calls),
            "traced_peak_mb": traced_peak / 2**20, "stored": stored}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    start = datetime.now(timezone.utc) - timedelta(hours=7)
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    double = context.Process(target=serve_double, args=(ready, stop, start.timestamp() + 1), daemon=True)
    double.start()
    api_url = ready.get(timeout=300)
    clock = CallClock()
    try:
        results = [one_round(api_url, start, clock) for _ in range(args.rounds)]
        traced_peak_mb = one_round(api_url, start, clock, trace_memory=True)["traced_peak_mb"]
    finally:
        stop.set()
        double.join(timeout=10)
    top_level = MESSAGES - THREADS * REPLIES_PER_THREAD
    needed = {
        "conversations.history": math.ceil(top_level / PAGE), "conversations.replies": THREADS, "users.info": USERS,
        "auth.test": 1, "files.getUploadURLExternal": 1, "(upload to upload_url)": 1, "files.completeUploadExternal": 1,
    }
    print(f"{MESSAGES} messages ({top_level} top-level, {THREADS} threads of {REPLIES_PER_THREAD}), {EVENTS} timeline events, {args.rounds} rounds\n")
    print(f"{'round':<8}{'whole (s)':>11}{'in Web API (s)':>16}{'ours (s)':>10}{'our CPU (s)':>13}{'events stored':>15}")
    for i, r in enumerate(results, 1):
        print(f"{i:<8}{r['whole']:>11.3f}{r['waited']:>16.3f}{r['ours']:>10.3f}{r['cpu']:>13.3f}{r['stored']:>15}")
    calls = results[-1]["calls"]
    print(f"\n{'Web API method':<32}{'calls':>8}{'needed':>8}")
    for method in sorted(set(calls) | set(needed)):
        print(f"{method:<32}{calls.get(method, 0):>8}{needed.get(method, 0):>8}")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = min(r["ours"] for r in results)
    cpu = sorted(r["cpu"] for r in results)
    print(f"\npeak RSS of this process: {rss_mb:.0f} MB; Python's own allocations during a round (tracemalloc): {traced_peak_mb:.0f} MB")
    print(f"ours (wall minus Web API waits): best {best:.3f} s, worst {max(r['ours'] for r in results):.3f} s  (target < 1 s: {'met' if best < 1 else 'NOT met'})")
    print(f"our CPU time (this process, includes slack_sdk parsing the answers): median {cpu[len(cpu) // 2]:.3f} s, best {cpu[0]:.3f} s")
    extra = {m: calls.get(m, 0) - n for m, n in needed.items() if calls.get(m, 0) > n}
    print(f"Web API calls beyond what the pages and threads need: {extra or 'none'}")
    print(f"peak memory: {'met' if rss_mb < 200 else 'NOT met'} (target < 200 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
