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
   project writes 1 GiB of access lines, then 20 lines a second, beside one that writes only the 20 a second;
   once the gigabyte is older than the window, the whole /health with the first as the edge is timed against
   the whole /health with the second (the same lines in the window, a small log) as the edge (target <= 1.2x:
   reading costs the window, not the log). One read with `since` alone (no tail) shows what the engine costs
   without the tail. The benchmark holds the tests' stack
   lock meanwhile, so no test session sees the extra container.
Prints a table; exits 0 whatever the verdict (a measurement, not a test).

    .venv/bin/python bench/health.py --runtime swarm [--rounds 10]
compares instead the whole /health on the Swarm test world (tests/swarm, brought up first if needed) with the same
checks on the Compose test stack: the same services, probes and edge, rounds alternating (target: Swarm within 1.2x
of Compose). Swarm's container checks cost three engine calls (services, tasks, containers) where Compose's cost one.
The Swarm stack's services listen inside network namespace fs-swarm; the tests reach them through tests/swarm/up's
forwarders (two socat processes forked per connection), which are the test world's cost, not the bot's. So the Swarm
side is measured twice: with its checks' threads inside the namespace (probes straight to the services, as a bot
beside a production swarm) and through the forwarders.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import docker
from common import STACK_FILE, USER, live_runtime, timed

from bot.stack.compose import PROJECT_LABEL, SERVICE_LABEL
from bot.stack.health import container_checks, edge_check
from bot.stack.probes import run_probe
from bot.stack.stack import CHECK_THREADS
from bot.frame.registry import Invocation
from bot.store.engine import utcnow
from tests.conftest import _hold_stack_for_this_session
from tests.loopback import SilentServer, StatusServer

HANG_TIMEOUT = 2.0
REMOTE_DELAY = 0.05  # a service on another host: 50 ms to answer
BIG_LOG = 1 << 30  # bytes of access lines written before the window
EDGE_WINDOW_MINUTES = 0.25
ACCESS_LINE = '127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /api/items HTTP/1.1" 200 12 "-" "bench/1.0" 0.001'


def big_log_edge(runtime, stack, rounds: int) -> dict:
    """Whole /health with the edge over a 1 GiB log vs over a small log with the same lines in its window."""
    client = docker.from_env(timeout=600)
    live = f"while true; do echo '{ACCESS_LINE}'; sleep 0.05; done"
    scripts = {"edge-big": f"yes '{ACCESS_LINE}' | head -c {BIG_LOG}; echo bulk-done; {live}", "edge-small": f"echo bulk-done; {live}"}
    containers = []
    try:
        for service, script in scripts.items():
            labels = {PROJECT_LABEL: stack.stack.compose_project, SERVICE_LABEL: service}
            containers.append(client.containers.run("localhost/flowstate-test/busybox:current", ["sh", "-c", script], detach=True,
                                                    network_mode="none", labels=labels, name=f"{stack.stack.compose_project}_{service}_1"))
        started = time.monotonic()
        waiting = list(containers)
        while waiting:  # the marker is soon out of the last lines of the small one: each is awaited once
            waiting = [c for c in waiting if b"bulk-done" not in c.logs(tail=100)]
            time.sleep(0.2)
        written = time.monotonic() - started
        time.sleep(EDGE_WINDOW_MINUTES * 60 + 5)  # the gigabyte is now older than the window
        containers[0].reload()
        log_bytes = Path(containers[0].attrs["LogPath"]).stat().st_size
        health = Invocation(USER, "health", "", "CBENCH")
        stacks = {
            service: stack.model_copy(update={"edge": stack.edge.model_copy(update={"compose_service": service, "window_minutes": EDGE_WINDOW_MINUTES})})
            for service in scripts
        }
        times: dict[str, list[float]] = {"whole edge-big": [], "whole edge-small": [], "check edge-big": [], "check edge-small": []}
        for _ in range(rounds):
            for service, edge_stack in stacks.items():
                runtime.stack.config = edge_stack
                times[f"whole {service}"].append(timed(lambda: runtime.pipeline.dispatch(health)))
                times[f"check {service}"].append(timed(lambda: edge_check(runtime.stack.compose, edge_stack)))
        runtime.stack.config = stack
        since = utcnow() - timedelta(minutes=EDGE_WINDOW_MINUTES)
        since_only = timed(lambda: sum(1 for _ in runtime.stack.compose.logs("edge-big", since=since)))
        return {"log_bytes": log_bytes, "written_s": written, "since_only": since_only, **times}
    finally:
        for container in containers:
            container.remove(force=True)
        client.close()


def _enter_namespace() -> None:
    """This thread into network namespace fs-swarm (setns(2): Python 3.11 has no os.setns); unix sockets still reach
    the engines."""
    import ctypes
    import os

    fd = os.open("/var/run/netns/fs-swarm", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns into fs-swarm failed")
    finally:
        os.close(fd)


def swarm_vs_compose(rounds: int) -> int:
    """The whole /health on the Swarm stack against the same checks on the Compose stack, rounds alternating."""
    import subprocess
    import tempfile

    from bot.frame.config import Settings, load_stack
    from bot.runtime import Runtime

    swarm_dir = Path(__file__).resolve().parent.parent / "tests" / "swarm"
    subprocess.run([str(swarm_dir / "up")], check=True, capture_output=True)
    runtimes = {}
    for name, file in (("compose", STACK_FILE), ("swarm", swarm_dir / "flowstate.toml")):
        stack = load_stack(file, required=True)
        stack = stack.model_copy(update={"edge": stack.edge.model_copy(update={"window_minutes": EDGE_WINDOW_MINUTES})})
        home = Path(tempfile.mkdtemp(prefix="flowstate-bench-"))
        runtimes[name] = Runtime.build(Settings(_env_file=None, home=home, admins=[USER]), stack)
    runtimes["swarm via forwarders"] = runtimes["swarm"]
    swarm_stack = runtimes["swarm"].stack
    runtimes["swarm"] = Runtime.build(Settings(_env_file=None, home=Path(tempfile.mkdtemp(prefix="flowstate-bench-")), admins=[USER]),
                                      swarm_stack.config)
    runtimes["swarm"].stack.pool.shutdown()
    runtimes["swarm"].stack.pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="check-fs-swarm", initializer=_enter_namespace)
    health = Invocation(USER, "health", "", "CBENCH")
    for name, runtime in runtimes.items():  # warm-up, and both must be healthy for the comparison to mean anything
        reply = runtime.pipeline.dispatch(health)
        if "checks failing" in reply.text:
            raise SystemExit(f"the {name} stack is not healthy:\n{reply.text}")
    times: dict[str, list[float]] = {name: [] for name in runtimes} | {f"{name} containers": [] for name in ("compose", "swarm")}
    for round_ in range(rounds):
        for name in (list(runtimes) if round_ % 2 == 0 else list(runtimes)[::-1]):
            runtime = runtimes[name]
            times[name].append(timed(lambda: runtime.pipeline.dispatch(health)))
            if f"{name} containers" in times:
                times[f"{name} containers"].append(timed(lambda: container_checks(runtime.stack.compose, runtime.stack.config)))
    for runtime in runtimes.values():
        runtime.close()
    print(f"{'measure':<44}{'median':>10}{'max':>10}")
    for key, values in times.items():
        print(f"{key + ' (s)':<44}{statistics.median(values):>10.3f}{max(values):>10.3f}")
    ratio = statistics.median(times["swarm"]) / statistics.median(times["compose"])
    forwarded = statistics.median(times["swarm via forwarders"]) / statistics.median(times["compose"])
    print(f"(through the test world's forwarders: {forwarded:.2f}x)")
    print(f"verdict: whole /health on Swarm / on Compose {ratio:.2f}x (target <= 1.20x): {'met' if ratio <= 1.2 else 'MISSED'}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-big-log", action="store_true", help="skip the 1 GiB access log case")
    parser.add_argument("--runtime", choices=["compose", "swarm"], default="compose",
                        help="swarm: /health on the Swarm test world against the same checks on the Compose stack")
    args = parser.parse_args()
    if args.runtime == "swarm":
        _hold_stack_for_this_session()
        return swarm_vs_compose(args.rounds)
    _hold_stack_for_this_session()  # the extra container must not meet a test session
    runtime, stack = live_runtime()
    # Tests put errors through the edge on purpose: a short window keeps theirs out of this healthy baseline.
    stack = stack.model_copy(update={"edge": stack.edge.model_copy(update={"window_minutes": EDGE_WINDOW_MINUTES})})
    runtime.stack.config = stack
    health = Invocation(USER, "health", "", "CBENCH")

    def whole() -> None:
        reply = runtime.pipeline.dispatch(health)
        if "checks failing" in reply.text:
            raise SystemExit(f"the stack is not healthy; bring it up with tests/stack/up:\n{reply.text}")

    whole()  # warm-up: imports, connection pools, the Docker client
    totals, slowest, sums, ratios = [], [], [], []
    for _ in range(args.rounds):
        singles = [timed(lambda p=p: run_probe(p)) for p in stack.probes]
        singles.append(timed(lambda: container_checks(runtime.stack.compose, stack)))
        total = timed(whole)
        totals.append(total)
        slowest.append(max(singles))
        sums.append(sum(singles))
        ratios.append(total / max(singles))

    with SilentServer() as hung:
        hung_probe = {"name": "hung", "kind": "http", "url": f"http://127.0.0.1:{hung.port}/health", "timeout": HANG_TIMEOUT}
        hung_stack = stack.model_copy(update={"probes": [*stack.probes, stack.probes[0].__class__(**hung_probe)]})
        runtime.stack.config = hung_stack
        hung_totals = [timed(lambda: runtime.pipeline.dispatch(health)) for _ in range(max(2, args.rounds // 2))]
        runtime.stack.config = stack

        with contextlib.ExitStack() as servers:
            remote = [servers.enter_context(StatusServer(200, REMOTE_DELAY)) for _ in stack.probes]
            remote_probes = [
                stack.probes[0].__class__(kind="http", name=f"remote {i}", url=server.url) for i, server in enumerate(remote)
            ]
            runtime.stack.config = stack.model_copy(update={"probes": remote_probes})
            remote_single = statistics.median(timed(lambda p=p: run_probe(p)) for p in remote_probes)
            remote_totals = [timed(lambda: runtime.pipeline.dispatch(health)) for _ in range(args.rounds)]
            runtime.stack.config = stack
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
        big_ratio = statistics.median(big["whole edge-big"]) / statistics.median(big["whole edge-small"])
        print()
        print(f"edge over a 1 GiB access log ({big['log_bytes'] / (1 << 30):.2f} GiB json-file, written in {big['written_s']:.0f} s)")
        print("vs a small log with the same lines in its window:")
        for key in ("whole edge-small", "whole edge-big", "check edge-small", "check edge-big"):
            print(f"{key + ' (s)':<44}{statistics.median(big[key]):>10.3f}{max(big[key]):>10.3f}")
        print(f"{'one read of the 1 GiB log, since alone (s)':<44}{big['since_only']:>10.3f}")
        print(f"verdict: whole /health, 1 GiB edge log / small edge log {big_ratio:.2f}x (target <= 1.20x): {'met' if big_ratio <= 1.2 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
