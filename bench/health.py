"""/health against the live test stack: total time vs the slowest single check, and with one service hung.

Run from the repository root (the stack must be up: tests/stack/up):
    .venv/bin/python bench/health.py [--rounds 5]

1. Each round times every check alone, one after another (each probe, and the container checks), then the
   whole /health; the ratio total / slowest single check is the cost of running them side by side
   (target <= 1.2x). Rounds alternate so the noisy machine weighs on both sides alike.
2. With one more probe pointing at a service that accepts and never answers (timeout T), the total must
   stay within T + 10%.
3. The same ratio with every probe pointing at a loopback service that takes 50 ms to answer, as a service
   on another host would: on this 2-core machine the test stack's services share the cores with the bot,
   so in (1) the checks wait on each other's server-side CPU (a PostgreSQL backend fork, nginx, httpd),
   not on the network; (3) shows what the parallel checks cost when the checks wait on I/O.
4. The edge check (nginx's 5xx rate over its window) with a 1 GiB access log: a container of the test stack's
   project writes 1 GiB of access lines, then a few lines a second; once the gigabyte is older than the window,
   the whole /health with that container as the edge is timed against the whole /health with the test stack's
   nginx (a small log) as the edge (target <= 1.2x: reading costs the window, not the log). One read with
   `since` alone (no tail) shows what the engine costs without the tail. The benchmark holds the tests' stack
   lock meanwhile, so no test session sees the extra container.
Prints a table; exits 0 whatever the verdict (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import docker
from common import USER, live_runtime, timed

from bot.docker_stack import PROJECT_LABEL, SERVICE_LABEL
from bot.health_eval import container_checks, edge_check
from bot.probes import run_probe
from bot.registry import Invocation
from bot.store import utcnow
from tests.conftest import _hold_stack_for_this_session
from tests.loopback import SilentServer, StatusServer

HANG_TIMEOUT = 2.0
REMOTE_DELAY = 0.05  # a service on another host: 50 ms to answer
BIG_LOG = 1 << 30  # bytes of access lines written before the window
EDGE_WINDOW_MINUTES = 0.25
ACCESS_LINE = '127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /api/items HTTP/1.1" 200 12 "-" "bench/1.0" 0.001'


def big_log_edge(runtime, stack, rounds: int) -> dict:
    """Whole /health with a 1 GiB-log edge vs with the stack's own nginx as the edge; and one `since`-only read."""
    client = docker.from_env(timeout=600)
    script = (
        f"yes '{ACCESS_LINE}' | head -c {BIG_LOG}; echo bulk-done; "
        f"while true; do echo '{ACCESS_LINE}'; sleep 0.05; done"
    )
    labels = {PROJECT_LABEL: stack.stack.compose_project, SERVICE_LABEL: "edge-bench"}
    container = client.containers.run("localhost/flowstate-test/busybox:current", ["sh", "-c", script], detach=True,
                                      network_mode="none", labels=labels, name="flowstate-test_edge-bench_1")
    try:
        started = time.monotonic()
        while "bulk-done" not in container.logs(tail=300).decode(errors="replace"):
            time.sleep(1)
        written = time.monotonic() - started
        time.sleep(EDGE_WINDOW_MINUTES * 60 + 5)  # the gigabyte is now older than the window
        container.reload()
        log_bytes = Path(container.attrs["LogPath"]).stat().st_size
        health = Invocation(USER, "health", "", "CBENCH")
        small = stack.edge.model_copy(update={"window_minutes": EDGE_WINDOW_MINUTES})
        big = small.model_copy(update={"compose_service": "edge-bench"})
        small_stack, big_stack = (stack.model_copy(update={"edge": edge}) for edge in (small, big))
        with_small, with_big, check_big = [], [], []
        for _ in range(rounds):
            runtime.stack = small_stack
            with_small.append(timed(lambda: runtime.dispatcher.dispatch(health)))
            runtime.stack = big_stack
            with_big.append(timed(lambda: runtime.dispatcher.dispatch(health)))
            check_big.append(timed(lambda: edge_check(runtime.docker, big_stack)))
        runtime.stack = stack
        since = utcnow() - timedelta(minutes=EDGE_WINDOW_MINUTES)
        since_only = timed(lambda: sum(1 for _ in runtime.docker.logs("edge-bench", since=since)))
        return {"log_bytes": log_bytes, "written_s": written, "with_small": with_small, "with_big": with_big,
                "check_big": check_big, "since_only": since_only}
    finally:
        container.remove(force=True)
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-big-log", action="store_true", help="skip the 1 GiB access log case")
    args = parser.parse_args()
    _hold_stack_for_this_session()  # the extra container must not meet a test session
    runtime, stack = live_runtime()
    # Tests put errors through the edge on purpose: a short window keeps theirs out of this healthy baseline.
    stack = stack.model_copy(update={"edge": stack.edge.model_copy(update={"window_minutes": EDGE_WINDOW_MINUTES})})
    runtime.stack = stack
    health = Invocation(USER, "health", "", "CBENCH")

    def whole() -> None:
        reply = runtime.dispatcher.dispatch(health)
        if "checks failing" in reply.text:
            raise SystemExit(f"the stack is not healthy; bring it up with tests/stack/up:\n{reply.text}")

    whole()  # warm-up: imports, connection pools, the Docker client
    totals, slowest, sums, ratios = [], [], [], []
    for _ in range(args.rounds):
        singles = [timed(lambda p=p: run_probe(p)) for p in stack.probes]
        singles.append(timed(lambda: container_checks(runtime.docker, stack)))
        total = timed(whole)
        totals.append(total)
        slowest.append(max(singles))
        sums.append(sum(singles))
        ratios.append(total / max(singles))

    with SilentServer() as hung:
        hung_probe = {"name": "hung", "kind": "http", "url": f"http://127.0.0.1:{hung.port}/health", "timeout": HANG_TIMEOUT}
        hung_stack = stack.model_copy(update={"probes": [*stack.probes, stack.probes[0].__class__(**hung_probe)]})
        runtime.stack = hung_stack
        hung_totals = [timed(lambda: runtime.dispatcher.dispatch(health)) for _ in range(max(2, args.rounds // 2))]
        runtime.stack = stack

        with contextlib.ExitStack() as servers:
            remote = [servers.enter_context(StatusServer(200, REMOTE_DELAY)) for _ in stack.probes]
            remote_probes = [
                stack.probes[0].__class__(kind="http", name=f"remote {i}", url=server.url) for i, server in enumerate(remote)
            ]
            runtime.stack = stack.model_copy(update={"probes": remote_probes})
            remote_single = statistics.median(timed(lambda p=p: run_probe(p)) for p in remote_probes)
            remote_totals = [timed(lambda: runtime.dispatcher.dispatch(health)) for _ in range(args.rounds)]
            runtime.stack = stack
    big = None if args.no_big_log else big_log_edge(runtime, stack, args.rounds)
    runtime.close()

    ratio = statistics.median(ratios)
    worst_hung = max(hung_totals)
    print(f"{'measure':<44}{'median':>10}{'max':>10}")
    print(f"{'slowest single check (s)':<44}{statistics.median(slowest):>10.3f}{max(slowest):>10.3f}")
    print(f"{'all single checks one after another (s)':<44}{statistics.median(sums):>10.3f}{max(sums):>10.3f}")
    print(f"{'whole /health, ' + str(len(stack.probes)) + ' probes + containers (s)':<44}{statistics.median(totals):>10.3f}{max(totals):>10.3f}")
    print(f"{'ratio whole / slowest':<44}{ratio:>10.2f}{max(ratios):>10.2f}")
    print(f"{'whole /health with one hung service (s)':<44}{statistics.median(hung_totals):>10.3f}{worst_hung:>10.3f}")
    remote_ratio = statistics.median(remote_totals) / remote_single
    print(f"{'one check of a service 50 ms away (s)':<44}{remote_single:>10.3f}")
    print(f"{'whole /health, 9 such + containers (s)':<44}{statistics.median(remote_totals):>10.3f}{max(remote_totals):>10.3f}")
    print(f"{'ratio whole / one such check':<44}{remote_ratio:>10.2f}")
    print()
    print(f"verdict: services 50 ms away: whole/slowest {remote_ratio:.2f}x (target <= 1.20x): {'met' if remote_ratio <= 1.2 else 'MISSED'}")
    print(f"verdict: whole/slowest median {ratio:.2f}x (target <= 1.20x): {'met' if ratio <= 1.2 else 'MISSED'}")
    limit = HANG_TIMEOUT * 1.1
    print(f"verdict: hung service worst {worst_hung:.2f} s (target <= {limit:.2f} s): {'met' if worst_hung <= limit else 'MISSED'}")
    if big is not None:
        big_ratio = statistics.median(big["with_big"]) / statistics.median(big["with_small"])
        print()
        print(f"edge over a 1 GiB access log ({big['log_bytes'] / (1 << 30):.2f} GiB json-file, written in {big['written_s']:.0f} s):")
        print(f"{'whole /health, edge = nginx (small log) (s)':<44}{statistics.median(big['with_small']):>10.3f}{max(big['with_small']):>10.3f}")
        print(f"{'whole /health, edge = 1 GiB log (s)':<44}{statistics.median(big['with_big']):>10.3f}{max(big['with_big']):>10.3f}")
        print(f"{'the edge check alone, 1 GiB log (s)':<44}{statistics.median(big['check_big']):>10.3f}{max(big['check_big']):>10.3f}")
        print(f"{'one read with since alone, no tail (s)':<44}{big['since_only']:>10.3f}")
        print(f"verdict: 1 GiB edge log whole/small-log whole {big_ratio:.2f}x (target <= 1.20x): {'met' if big_ratio <= 1.2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
