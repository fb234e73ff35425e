"""Time to the ack of N concurrent signed /health commands: our SlackAdapter against a bare Bolt app.

Run from the repository root:  .venv/bin/python bench/ack_latency.py [--requests 200] [--rounds 3]

Three child processes, so that nothing shares a GIL with the server under test or the load generator:
- fixtures: the Slack Web API double (API and response_urls) and three loopback StatusServers;
- ours: SlackAdapter (HTTP mode) with a stack file probing the StatusServers, client on the double;
- bare: a Bolt app whose /health listener only calls ack(), client on the same double.
Both servers are the same waitress server with the same thread count. Rounds alternate ours/bare; after
an ours round the next starts only once every /health reply reached its response_url. The machine is
shared and noisy, so the verdict is a ratio against bare Bolt measured in the same run.
Exit status: 0 whatever the verdict, non-zero only if something broke (a server, a non-200 answer).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.slack_signing import SlackSender  # noqa: E402

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench-token"
USER = "U0ONCALL"  # a fixed admin: /health is allowed without touching the role table
THREADS = 8  # waitress threads of both servers (SlackAdapter.http_server's default)
TARGET = 1.25  # our p99 within 1.25x of bare Bolt's
WARMUP = 20


class Broken(Exception):
    """The benchmark could not measure: a server did not start or a reply never arrived."""


@contextlib.contextmanager
def temporary_postgres():
    """A fresh database on the machine's PostgreSQL (FLOWSTATE_TEST_POSTGRES names the admin URL), dropped afterwards."""
    import psycopg

    admin = os.environ.get("FLOWSTATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"flowstate_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as error:
        raise Broken(f"PostgreSQL at {admin} is not usable: {error}") from None
    base = psycopg.conninfo.conninfo_to_dict(admin)
    try:
        yield f"postgresql://{base.get('user', 'postgres')}@{base.get('host', '127.0.0.1')}:{base.get('port', '5432')}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- child processes --------------------------------------------------------------------------


def publish(path: str, **info) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)


def serve_fixtures(port_file: str) -> None:
    """Serves the double and the probed services; on stdin "PREFIX N" waits for the replies to
    response_urls PREFIX0..PREFIX{N-1} and answers "ok" or "error ..." on stdout.

    The fixtures stand in for Slack and the operated services, which in production run on other
    machines; at the lowest CPU priority they take this machine's cores only when the server under
    test does not need them, for ours and bare alike."""
    os.nice(19)
    from tests.loopback import StatusServer
    from tests.slack_double import SlackDouble

    with contextlib.ExitStack() as stack:
        double = stack.enter_context(SlackDouble())
        probes = [stack.enter_context(StatusServer(200)).url for _ in range(3)]
        publish(port_file, api_url=double.api_url, response_url=double.response_url(""), probes=probes)
        for line in sys.stdin:
            prefix, count = line.split()
            deadline = time.monotonic() + 120
            try:
                for i in range(int(count)):
                    double.wait_for_response(f"{prefix}{i}", timeout=max(0.0, deadline - time.monotonic()))
                print("ok", flush=True)
            except AssertionError as error:
                print("error", " ".join(str(error).split())[:500], flush=True)


def ours_server(args):
    from bot.frame.config import Settings, load_stack
    from bot.runtime import Runtime
    from bot.adapters.slack.listeners import SlackAdapter
    from bot.adapters.slack.client import group_members, web_client

    settings = Settings(
        _env_file=None,
        home=args.home,
        database_url=getattr(args, "database_url", None) or "",  # answer_latency.py's PostgreSQL runs
        stack_file=args.stack,
        slack_api_url=args.api_url,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        admins=[USER],
    )
    client = web_client(settings)
    runtime = Runtime.build(settings, load_stack(settings.stack_file, required=True), group_members=group_members(client))
    return SlackAdapter(runtime, client, http_mode=True).http_server("127.0.0.1", 0, threads=THREADS)


def bare_server(args):
    import waitress.server
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    app = bare_app(args.api_url)

    @app.command("/health")
    def health(ack):
        ack()

    return waitress.server.create_server(
        SlackRequestHandler(app), host="127.0.0.1", port=0, threads=THREADS, ident="bare-bolt"
    )


def serve(args) -> None:
    if args.serve == "fixtures":
        return serve_fixtures(args.port_file)
    server = (ours_server if args.serve == "ours" else bare_server)(args)
    publish(args.port_file, port=server.effective_port)
    server.run()


# ---- load generator ---------------------------------------------------------------------------


class _Prepared(SlackSender):
    """Builds the Slack-shaped, Slack-signed request SlackSender would send, without sending it."""

    def _send(self, body: bytes, headers: dict[str, str]):
        return body, headers


def fire(port: int, count: int, response_url: str) -> tuple[list[float], list[str]]:
    """`count` /health commands released together, one connection each (see fire_requests)."""
    sender = _Prepared(f"http://127.0.0.1:{port}", SECRET)
    return fire_requests(port, [sender.slash("/health", "", USER, response_url=f"{response_url}{i}") for i in range(count)])


def fire_requests(port: int, prepared: list[tuple[bytes, dict]], concurrent: bool = True) -> tuple[list[float], list[str]]:
    """Every prepared request, released together by a barrier (or one after another), one connection each;
    returns the seconds from sending (connect included) to reading the status line, and the failures."""
    barrier = threading.Barrier(len(prepared)) if concurrent else None
    elapsed: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(body: bytes, headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            if barrier is not None:
                barrier.wait(timeout=120)
            started = time.perf_counter()
            connection.request("POST", "/slack/events", body=body, headers=headers)
            response = connection.getresponse()
            took = time.perf_counter() - started
            response.read()
            with lock:
                (elapsed.append(took) if response.status == 200 else errors.append(f"HTTP {response.status}"))
        except Exception as error:
            with lock:
                errors.append(f"{type(error).__name__}: {error}")
        finally:
            connection.close()

    if not concurrent:
        for request in prepared:
            one(*request)
        return elapsed, errors
    threads = [threading.Thread(target=one, args=request) for request in prepared]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return elapsed, errors


BARE_SYNC = "BENCH_BARE_SYNC"  # set by --bare-sync; the children inherit it


def bare_app(api_url: str):
    """The bare Bolt app: Bolt's defaults (its listener runs on Bolt's executor while the request's thread polls
    for the ack every 10 ms), or with --bare-sync its listener run on the request's thread
    (process_before_response=True), as ours runs: the stricter baseline."""
    from slack_bolt import App
    from slack_sdk import WebClient

    return App(client=WebClient(token=TOKEN, base_url=api_url), signing_secret=SECRET,
               process_before_response=os.environ.get(BARE_SYNC) == "1")


class _BareSync(argparse.Action):
    """--bare-sync: noted in the environment, which the bare child inherits."""

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[BARE_SYNC] = "1"


def bare_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bare-sync", action=_BareSync, nargs=0,
                        help="the bare app runs its listener on the request's thread (process_before_response), as ours does")


def bare_label() -> str:
    return "bare Bolt (listener on the request's thread)" if os.environ.get(BARE_SYNC) == "1" else "bare Bolt (Bolt's defaults)"


class Child:
    """A benchmark script run again as `--serve MODE`: it publishes its port in a file, logs to MODE.log."""

    script = __file__
    start_seconds = 60

    def __init__(self, mode: str, workdir: Path, *extra: str):
        self.mode, self.log = mode, workdir / f"{mode}.log"
        port_file = workdir / f"{mode}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTATE_", "SLACK_"))}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, self.script, "--serve", mode, "--port-file", str(port_file), *extra],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            )
        deadline = time.monotonic() + self.start_seconds
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Broken(f"the {mode} process did not start:\n{self.log_tail()}")
            time.sleep(0.05)
        self.info = json.loads(port_file.read_text())

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_for_replies(self, prefix: str, count: int, bot: Child) -> None:
        try:
            self.proc.stdin.write(f"{prefix} {count}\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        except OSError as error:
            answer = f"fixtures process gone ({error})"
        if answer != "ok":
            answer = answer or "fixtures process gone"
            raise Broken(f"the bot's /health replies did not all arrive: {answer}\nbot log:\n{bot.log_tail()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summary(seconds: list[float]) -> tuple[float, float, float]:
    ms = sorted(s * 1000 for s in seconds)
    return (percentile(ms, 0.50), percentile(ms, 0.99), ms[-1]) if ms else (math.nan,) * 3


def measure(requests: int, rounds: int) -> int:
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    errors: dict[str, list[str]] = {"ours": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="ack-bench-") as tmp, contextlib.ExitStack() as children:
        workdir = Path(tmp)

        def start(mode: str, *extra: str) -> Child:
            child = Child(mode, workdir, *extra)
            children.callback(child.stop)
            return child

        fixtures = start("fixtures")
        api_url, response_url = fixtures.info["api_url"], fixtures.info["response_url"]
        stack_file = workdir / "flowstate.toml"
        stack_file.write_text("".join(
            f'[[probes]]\nname = "service{i}"\nkind = "http"\nurl = "{url}"\n\n' for i, url in enumerate(fixtures.info["probes"])
        ))
        servers = {
            "ours": start("ours", "--api-url", api_url, "--stack", str(stack_file), "--home", str(workdir / "home")),
            "bare": start("bare", "--api-url", api_url),
        }

        def run(target: str, name: str, count: int) -> tuple[list[float], list[str]]:
            result = fire(servers[target].info["port"], count, f"{response_url}{name}-")
            if target == "ours":  # the background jobs of this round end before the next round starts
                fixtures.wait_for_replies(f"{name}-", count - len(result[1]), servers["ours"])
            return result

        for target in servers:
            run(target, f"warmup-{target}", WARMUP)
        for r in range(1, rounds + 1):
            line = []
            for target in servers:
                elapsed, failed = run(target, f"r{r}-{target}", requests)
                samples[target] += elapsed
                errors[target] += failed
                p50, p99, _ = summary(elapsed)
                line.append(f"{target} p50 {p50:6.1f} p99 {p99:6.1f} ms" + (f" ({len(failed)} failed)" if failed else ""))
            print(f"round {r}/{rounds}: " + " | ".join(line), flush=True)

    print(f"\n/health ack latency, {requests} concurrent signed requests per round, against {bare_label()}, "
          f"waitress threads={THREADS}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'target':<10}{'rounds':>7}{'requests':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    stats = {}
    for target in ("ours", "bare"):
        stats[target] = summary(samples[target])
        p50, p99, top = stats[target]
        print(f"{target:<10}{rounds:>7}{requests:>9}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}{len(errors[target]):>8}")
    ratio50, ratio99 = (stats["ours"][i] / stats["bare"][i] for i in (0, 1))
    print(f"{'ours/bare':<26}{ratio50:>8.2f}x{ratio99:>8.2f}x")
    verdict = "MET" if ratio99 <= TARGET else "MISSED"
    print(f"target 'our p99 within {TARGET}x of bare Bolt': {verdict} ({ratio99:.2f}x)")
    failures = errors["ours"] + errors["bare"]
    for error in sorted(set(failures))[:10]:
        print(f"failure: {error} (x{failures.count(error)})", file=sys.stderr)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="concurrent requests per round (default 200)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target, alternating (default 3)")
    bare_option(parser)
    parser.add_argument("--serve", choices=["fixtures", "ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    try:
        return measure(args.requests, args.rounds)
    except Broken as error:
        print(f"benchmark broken: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
