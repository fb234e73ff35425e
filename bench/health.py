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
Prints a table; exits 0 whatever the verdict (a measurement, not a test).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys

from common import USER, live_runtime, timed

from bot.probes import run_probe
from bot.registry import Invocation
from commands.health import container_checks
from tests.loopback import SilentServer, StatusServer

HANG_TIMEOUT = 2.0
REMOTE_DELAY = 0.05  # a service on another host: 50 ms to answer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    runtime, stack = live_runtime()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
