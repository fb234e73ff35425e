"""Time to the answer of signed /whoami commands: our SlackAdapter against a bare Bolt app answering in its listener.

Run from the repository root:  .venv/bin/python bench/answer_latency.py [--lone 30] [--burst 100] [--rounds 2]

What an on-call engineer waits for is the reply, not the ack: each command is timed from sending its signed
request to its reply reaching its response_url (the Slack double records the arrival on CLOCK_MONOTONIC, which
every process on the machine shares). Targets, each in its own process as in ack_latency.py:
- ours: SlackAdapter (HTTP mode) and its runner, on the embedded SQLite store and on the machine's PostgreSQL
  (a fresh database, dropped afterwards; FLOWSTATE_TEST_POSTGRES names the admin URL as in the tests);
- bare: a Bolt app whose /whoami listener calls ack() and then respond(), on the same waitress server.
Lone: requests one at a time, each after the previous reply arrived. Burst: requests released together.
The machine is shared and noisy: read ours against bare from the same run.
Exit status: 0 whatever the verdict, 1 if a request failed, 2 if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ack_latency import (  # noqa: E402
    SECRET, THREADS, USER, Broken, Child, _Prepared, bare_app, bare_label, bare_option, ours_server, publish, summary,
    temporary_postgres,
)

LONE_MARGIN_MS = 10.0  # our lone p50 within bare's + 10 ms
BURST_TARGET = 2.0  # our burst p99 within 2x bare's
WARMUP = 10


# ---- child processes --------------------------------------------------------------------------


def serve_fixtures(port_file: str) -> None:
    """The Slack double, noting when each response_url post arrives; on stdin a line of response_url names, it waits
    for their replies and answers with their arrival times as JSON (or "error ...")."""
    os.nice(19)
    from tests.slack_double import SlackDouble

    arrived: dict[str, float] = {}
    with SlackDouble() as double:
        recorded = double._response_url_post

        def timed(req, name, body):
            arrived.setdefault(name, time.monotonic())
            recorded(req, name, body)

        double._response_url_post = timed
        publish(port_file, api_url=double.api_url, response_url=double.response_url(""))
        for line in sys.stdin:
            names = line.split()
            deadline = time.monotonic() + 120
            try:
                for name in names:
                    double.wait_for_response(name, timeout=max(0.0, deadline - time.monotonic()))
                print(json.dumps([arrived[name] for name in names]), flush=True)
            except AssertionError as error:
                print("error", " ".join(str(error).split())[:500], flush=True)


def bare_server(args):
    import waitress.server
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    app = bare_app(args.api_url)

    @app.command("/whoami")
    def whoami(ack, respond, command):
        ack()
        respond(f"<@{command['user_id']}>: admin (from FLOWSTATE_ADMINS).")

    return waitress.server.create_server(SlackRequestHandler(app), host="127.0.0.1", port=0, threads=THREADS, ident="bare-bolt")


def serve(args) -> None:
    if args.serve == "fixtures":
        return serve_fixtures(args.port_file)
    server = (ours_server if args.serve == "ours" else bare_server)(args)
    publish(args.port_file, port=server.effective_port)
    server.run()


class _Child(Child):
    script = __file__

    def arrivals(self, names: list[str], bot: Child) -> list[float]:
        try:
            self.proc.stdin.write(" ".join(names) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        except OSError as error:
            answer = f"fixtures process gone ({error})"
        if not answer.startswith("["):
            raise Broken(f"the /whoami replies did not all arrive: {answer or 'fixtures process gone'}\n{bot.mode} log:\n{bot.log_tail()}")
        return json.loads(answer)


# ---- load generator ---------------------------------------------------------------------------


def send(port: int, request: tuple[bytes, dict], sent: list, index: int, errors: list, barrier=None) -> None:
    body, headers = request
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if barrier is not None:
            barrier.wait(timeout=120)
        sent[index] = time.monotonic()
        connection.request("POST", "/slack/events", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            errors.append(f"HTTP {response.status}")
    except Exception as error:
        errors.append(f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def answer_times(fixtures: _Child, server: _Child, response_url: str, name: str, count: int, together: bool) -> tuple[list[float], list[str]]:
    """Seconds from sending each request to its reply's arrival; one at a time, or all released together."""
    sender = _Prepared(f"http://127.0.0.1:{server.info['port']}", SECRET)
    names = [f"{name}-{i}" for i in range(count)]
    requests = [sender.slash("/whoami", "", USER, response_url=f"{response_url}{each}") for each in names]
    sent: list[float] = [0.0] * count
    errors: list[str] = []
    if together:
        barrier = threading.Barrier(count)
        threads = [threading.Thread(target=send, args=(server.info["port"], r, sent, i, errors, barrier)) for i, r in enumerate(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            return [], errors
        arrived = fixtures.arrivals(names, server)
    else:
        arrived = []
        for i, request in enumerate(requests):
            send(server.info["port"], request, sent, i, errors)
            if errors:
                return [], errors
            arrived += fixtures.arrivals([names[i]], server)
    return [a - s for a, s in zip(arrived, sent)], errors


def measure(lone: int, burst: int, rounds: int, stores: list[str]) -> int:
    results: dict[tuple[str, str], list[float]] = {}
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="answer-bench-") as tmp, contextlib.ExitStack() as children:
        workdir = Path(tmp)

        def start(mode: str, *extra: str) -> _Child:
            child = _Child(mode, workdir, *extra)
            children.callback(child.stop)
            return child

        fixtures = start("fixtures")
        api_url, response_url = fixtures.info["api_url"], fixtures.info["response_url"]
        stack_file = workdir / "flowstate.toml"
        stack_file.write_text(f'[[probes]]\nname = "slack"\nkind = "http"\nurl = "{api_url}"\n')
        bare = start("bare", "--api-url", api_url)
        for store in stores:
            with contextlib.ExitStack() as per_store:
                if store == "postgresql":
                    url = per_store.enter_context(temporary_postgres())
                else:
                    url = f"sqlite:///{workdir / 'home' / 'bot.db'}"
                ours = _Child(f"ours-{store}", workdir, "--serve-mode", "ours", "--api-url", api_url, "--stack", str(stack_file),
                              "--home", str(workdir / "home"), "--database-url", url)
                per_store.callback(ours.stop)
                targets = {f"ours ({store})": ours, "bare": bare}
                for label, server in targets.items():
                    answer_times(fixtures, server, response_url, f"warm-{store}-{server.mode}", WARMUP, together=True)
                for label, server in targets.items():
                    took, failed = answer_times(fixtures, server, response_url, f"lone-{store}-{server.mode}", lone, together=False)
                    results.setdefault((label, "lone"), []).extend(took)
                    failures += failed
                for r in range(1, rounds + 1):
                    line = []
                    for label, server in targets.items():
                        took, failed = answer_times(fixtures, server, response_url, f"burst{r}-{store}-{server.mode}", burst, together=True)
                        results.setdefault((label, "burst"), []).extend(took)
                        failures += failed
                        p50, p99, _ = summary(took)
                        line.append(f"{label} p50 {p50:6.1f} p99 {p99:6.1f} ms")
                    print(f"burst round {r}/{rounds}: " + " | ".join(line), flush=True)

    print(f"\n/whoami: signed request -> reply at its response_url; lone: {lone} one at a time; burst: {burst} at once x {rounds}; against {bare_label()}; "
          f"waitress threads={THREADS}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'target':<20}{'mode':<7}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for (label, mode), took in results.items():
        p50, p99, top = summary(took)
        print(f"{label:<20}{mode:<7}{len(took):>5}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}")
    for store in stores:
        lone_ours, lone_bare = summary(results[(f"ours ({store})", "lone")])[0], summary(results[("bare", "lone")])[0]
        burst_ours, burst_bare = summary(results[(f"ours ({store})", "burst")])[1], summary(results[("bare", "burst")])[1]
        lone_ok = "MET" if lone_ours <= lone_bare + LONE_MARGIN_MS else "MISSED"
        burst_ok = "MET" if burst_ours <= BURST_TARGET * burst_bare else "MISSED"
        print(f"{store}: lone p50 ours - bare = {lone_ours - lone_bare:+.1f} ms (target <= +{LONE_MARGIN_MS:g}): {lone_ok}; "
              f"burst p99 ours/bare = {burst_ours / burst_bare:.2f}x (target <= {BURST_TARGET:g}x): {burst_ok}")
    for error in sorted(set(failures))[:10]:
        print(f"failure: {error} (x{failures.count(error)})", file=sys.stderr)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lone", type=int, default=30, help="requests one at a time (default 30)")
    parser.add_argument("--burst", type=int, default=100, help="requests released together per round (default 100)")
    parser.add_argument("--rounds", type=int, default=2, help="burst rounds per target, alternating (default 2)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="ours on these stores (default sqlite,postgresql)")
    bare_option(parser)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-mode", help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        args.serve = args.serve_mode or args.serve
        serve(args)
        return 0
    stores = [s for s in args.stores.split(",") if s]
    if args.lone < 1 or args.burst < 1 or args.rounds < 1 or not set(stores) <= {"sqlite", "postgresql"} or not stores:
        parser.error("--lone, --burst and --rounds must be at least 1; --stores is sqlite, postgresql or both")
    try:
        return measure(args.lone, args.burst, args.rounds, stores)
    except Broken as error:
        print(f"benchmark broken: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
