"""500 concurrent signed clicks on 50 pending /restart requests: exactly 50 runs, none forbidden, acks as fast as bare Bolt.

Run from the repository root:  .venv/bin/python bench/approvals.py [--requests 50] [--rounds 3] [--postgres]

Three child processes, as in bench/ack_latency.py:
- fixtures: the Slack Web API double (API and response_urls) and a Docker Engine API double holding one
  Compose project ("flowstate-bench": frontend, backend), whose container restart takes --restart-seconds;
- ours: SlackAdapter (HTTP mode, default settings: one runner process of 8 threads) whose stack file names
  that project and whose docker_url is the engine double; roles granted in its database before it starts;
- bare: a Bolt app whose approve/deny/cancel listeners only call ack(); same waitress server and threads.
Per round: operators ask for N `/restart frontend` (real requests, posted to the channel); then 10 clicks
per request, shuffled and released at once (5 different approvers, a double click of one of them, Slack's
redelivery of another's click (same trigger_id, signed anew), the requester, a viewer, an operator); the acks are timed; once every reply
arrived and the runner is idle (the requests approved while another restart held the one-change lock waited
for it and ran after it), each request still pending is approved again, one at a time, as a person would. Then the same
number of clicks at bare Bolt. Rounds alternate ours/bare.
Counts come from the bot's database (jobs, audit rows linked by job_id) and, independently, from the
engine double (restarts, and how many ran at once).
Exit status: 0 whatever the latency verdict; 1 if a count is wrong (runs != requests, a forbidden run,
a non-200 ack); 2 if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import ack_latency  # noqa: E402
from bench.ack_latency import Broken, _Prepared, bare_app, bare_label, bare_option, publish, summary, temporary_postgres  # noqa: E402
from bench.ack_latency import fire_requests as fire  # noqa: E402

SECRET, TOKEN = ack_latency.SECRET, ack_latency.TOKEN
THREADS = 8  # waitress threads of both servers (SlackAdapter.http_server's default)
TARGET = 1.25
CLICKS_PER_REQUEST = 10
PROJECT = "flowstate-bench"
CHANNEL = "C0OPS"
WARMUP = 20

ADMIN = "U0ADMIN"  # FLOWSTATE_ADMINS: an admin may approve too
APPROVERS = [f"U0APP{i}" for i in range(8)]
OPERATORS = [f"U0OP{i}" for i in range(5)]  # the requesters; an operator may ask, not approve
VIEWERS = [f"U0VIEW{i}" for i in range(3)]
MAY_APPROVE = set(APPROVERS) | {ADMIN}

APPROVE, DENY, CANCEL = "approval_approve", "approval_deny", "approval_cancel"  # bot/approvals/service.py


# ---- the Docker Engine API double -------------------------------------------------------------


class Engine:
    """Just enough of the Engine API for ComposeStack: version, list, inspect, restart; counts restarts."""

    def __init__(self, restart_seconds: float):
        self.restart_seconds = restart_seconds
        self.lock = threading.Lock()
        self.restarts: Counter[str] = Counter()
        self.running = 0
        self.max_running = 0
        self.containers = {}
        for service in ("frontend", "backend"):
            cid = secrets.token_hex(32)
            self.containers[cid] = {
                "Id": cid,
                "Name": f"/{PROJECT}_{service}_1",
                "Config": {"Labels": {
                    "com.docker.compose.project": PROJECT,
                    "com.docker.compose.service": service,
                    "com.docker.compose.oneoff": "False",
                }},
                "State": {"Status": "running", "Health": {"Status": "healthy", "Log": []}, "ExitCode": 0,
                          "StartedAt": "2024-01-01T00:00:00.000000000Z", "FinishedAt": "0001-01-01T00:00:00Z"},
                "RestartCount": 0,
            }

    def summary(self, c: dict) -> dict:
        return {"Id": c["Id"], "Names": [c["Name"]], "Labels": c["Config"]["Labels"],
                "State": c["State"]["Status"], "Status": "Up 1 hour (healthy)"}

    def handle(self, method: str, path: str, query: str) -> tuple[int, object]:
        path = re.sub(r"^/v[0-9.]+", "", path)
        if path in ("/version", "/_ping"):
            return 200, {"ApiVersion": "1.43", "MinAPIVersion": "1.12", "Version": "24.0.0-double"}
        if path == "/containers/json":
            params = dict(parse_qsl(query))
            wanted = json.loads(params.get("filters") or "{}").get("label", [])
            if isinstance(wanted, dict):
                wanted = [k for k, v in wanted.items() if v]
            found = [c for c in self.containers.values()
                     if all(w in {f"{k}={v}" for k, v in c["Config"]["Labels"].items()} for w in wanted)]
            return 200, [self.summary(c) for c in found]
        match = re.fullmatch(r"/containers/([0-9a-f]+)/(json|restart)", path)
        if not match or match.group(1) not in self.containers:
            return 404, {"message": "No such container"}
        container = self.containers[match.group(1)]
        if match.group(2) == "json":
            return 200, container
        if method != "POST":
            return 405, {"message": "method not allowed"}
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        time.sleep(self.restart_seconds)
        with self.lock:
            self.running -= 1
            self.restarts[container["Config"]["Labels"]["com.docker.compose.service"]] += 1
            container["RestartCount"] += 1
        return 204, None


def engine_server(engine: Engine) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = urlsplit(self.path)
            status, payload = engine.handle(self.command, url.path, url.query)
            body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Api-Version", "1.43")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _any

        def log_message(self, *_args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


# ---- child processes --------------------------------------------------------------------------


def serve_fixtures(args) -> None:
    """Serves the doubles; on stdin a JSON line {"wait": [names]} or {"engine": true}, answers one JSON line."""
    os.nice(19)
    from tests.slack_double import SlackDouble

    engine = Engine(args.restart_seconds)
    with SlackDouble() as double, contextlib.closing(engine_server(engine)) as docker:
        publish(args.port_file, api_url=double.api_url, response_url=double.response_url(""),
                docker_url=f"tcp://127.0.0.1:{docker.server_address[1]}")
        for line in sys.stdin:
            order = json.loads(line)
            if "engine" in order:
                with engine.lock:
                    answer = {"restarts": dict(engine.restarts), "max_running": engine.max_running}
            else:
                deadline = time.monotonic() + order.get("timeout", 120)
                try:
                    for name in order["wait"]:
                        double.wait_for_response(name, timeout=max(0.0, deadline - time.monotonic()))
                    answer = {"ok": True}
                except AssertionError as error:
                    answer = {"ok": False, "error": " ".join(str(error).split())[:500]}
            print(json.dumps(answer), flush=True)


def ours_server(args):
    from bot.frame.authz import Authorizer
    from bot.frame.config import Settings, load_stack
    from bot.frame.roles import Role
    from bot.runtime import Runtime
    from bot.adapters.slack.listeners import SlackAdapter
    from bot.adapters.slack.client import group_members, web_client

    settings = Settings(
        _env_file=None,
        home=args.home,
        database_url=args.database_url or "",
        stack_file=args.stack,
        docker_url=args.docker_url,
        slack_api_url=args.api_url,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        admins=[ADMIN],
        approval_minutes=120,  # nothing expires during the benchmark
    )
    client = web_client(settings)
    runtime = Runtime.build(settings, load_stack(settings.stack_file, required=True), group_members=group_members(client))
    with runtime.store.session.begin() as session:  # the roles, in the bot's database, before it serves
        for users, role in ((APPROVERS, Role.approver), (OPERATORS, Role.operator), (VIEWERS, Role.viewer)):
            for user in users:
                Authorizer.grant(session, user, role, ADMIN)
    return SlackAdapter(runtime, client, http_mode=True).http_server("127.0.0.1", 0, threads=THREADS)


def bare_server(args):
    import waitress.server
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    app = bare_app(args.api_url)

    def only_ack(ack):
        ack()

    for action_id in (APPROVE, DENY, CANCEL):
        app.action(action_id)(only_ack)
    return waitress.server.create_server(
        SlackRequestHandler(app), host="127.0.0.1", port=0, threads=THREADS, ident="bare-bolt"
    )


def serve(args) -> None:
    if args.serve == "fixtures":
        return serve_fixtures(args)
    server = (ours_server if args.serve == "ours" else bare_server)(args)
    publish(args.port_file, port=server.effective_port)
    server.run()


class Child(ack_latency.Child):
    script = __file__
    start_seconds = 90

    def ask(self, order: dict) -> dict:
        try:
            self.proc.stdin.write(json.dumps(order) + "\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        except OSError as error:
            raise Broken(f"fixtures process gone ({error})") from None
        if not answer:
            raise Broken("fixtures process gone")
        return json.loads(answer)


# ---- load generator ---------------------------------------------------------------------------


def click_mix(sender: _Prepared, requests: dict[int, str], response_url: str, rng: random.Random):
    """10 clicks per request, shuffled: [(body, headers)], the response_url names a reply must reach, the kinds."""
    clicks, names, kinds = [], [], Counter()
    for n, (job_id, requester) in enumerate(sorted(requests.items())):
        approvers = rng.sample(APPROVERS, 4) + [ADMIN]  # 5 different people who may approve
        plan = [(user, "valid") for user in approvers]
        plan += [(approvers[0], "double click"), (requester, "self"), (VIEWERS[n % len(VIEWERS)], "viewer"),
                 (rng.choice([op for op in OPERATORS if op != requester]), "operator")]
        resent = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}.{secrets.token_hex(16)}"
        for k, (user, kind) in enumerate(plan):
            name = f"{response_url}{job_id}-{k}"
            trigger = resent if k == 1 else None
            clicks.append(sender.click(APPROVE, str(job_id), user, CHANNEL, "1700000000.000100", name, trigger_id=trigger))
            names.append(name.rsplit("/", 1)[1])
            kinds[kind] += 1
        # Slack delivering approvers[1]'s click a second time: the same trigger_id, signed anew (an identical
        # request, same signature, would be a replay, which the bot refuses with 401 before Bolt sees it)
        clicks.append(sender.click(APPROVE, str(job_id), approvers[1], CHANNEL, "1700000000.000100",
                                   f"{response_url}{job_id}-1", trigger_id=resent, timestamp=int(time.time()) - 1))
        kinds["redelivery"] += 1
    rng.shuffle(clicks)
    return clicks, names, kinds


# ---- counting in the bot's database -----------------------------------------------------------


class Books:
    def __init__(self, url: str):
        from bot.store.engine import Store

        self.store = Store(url)

    def jobs(self, ids=None, command: str | None = None):
        from sqlalchemy import select

        from bot.jobs.model import Job

        query = select(Job)
        if ids is not None:
            query = query.where(Job.id.in_(list(ids)))
        if command is not None:
            query = query.where(Job.command == command)
        with self.store.session() as session:
            return list(session.scalars(query.order_by(Job.id)))

    def audit(self, job_ids, outcome: str | None = None):
        from sqlalchemy import select

        from bot.store.engine import AuditEntry

        query = select(AuditEntry).where(AuditEntry.job_id.in_(list(job_ids)))
        if outcome:
            query = query.where(AuditEntry.outcome == outcome)
        with self.store.session() as session:
            return list(session.scalars(query.order_by(AuditEntry.id)))

    def busy(self) -> int:
        from sqlalchemy import func, select

        from bot.jobs.model import Job

        with self.store.session() as session:
            return session.scalar(select(func.count()).select_from(Job).where(Job.state.in_(["queued", "running", "waiting"])))

    def wait_idle(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() > deadline:
                raise Broken("the bot's jobs did not finish within %.0f s" % timeout)
            time.sleep(0.1)


def classify(entry) -> str:
    """A click's audit row, as what the clicker was told."""
    error = entry.error or ""
    if entry.outcome == "approved":
        return "approved (the one winner)"
    if "stack busy" in error:
        return "refused: busy (another restart held the lock)"
    if "requester may not" in error:
        return "refused: own request"
    if "needs approver" in error:
        return "refused: role (" + error.rsplit("has ", 1)[-1] + ")"
    if error.startswith("request is "):
        return "already decided (" + error.removeprefix("request is ") + ")"
    return f"{entry.outcome}: {error[:60]}"


# ---- the benchmark ----------------------------------------------------------------------------


def measure(args) -> int:
    rng = random.Random(args.seed)
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    errors: dict[str, list[str]] = {"ours": [], "bare": []}
    request_ids: list[int] = []
    requesters: dict[int, str] = {}
    kinds: Counter[str] = Counter()
    click_ids: list[int] = []
    again = 0
    with tempfile.TemporaryDirectory(prefix="approvals-bench-") as tmp, contextlib.ExitStack() as children:
        workdir = Path(tmp)
        database_url = args.database_url or f"sqlite:///{workdir / 'home' / 'bot.db'}"
        if args.postgres:
            database_url = children.enter_context(temporary_postgres())

        def start(mode: str, *extra: str) -> Child:
            child = Child(mode, workdir, *extra)
            children.callback(child.stop)
            return child

        fixtures = start("fixtures", "--restart-seconds", str(args.restart_seconds))
        api_url, response_url = fixtures.info["api_url"], fixtures.info["response_url"]
        stack_file = workdir / "flowstate.toml"
        # The clicks are measured, not the health gate: a restarted service that is healthy passes at once.
        stack_file.write_text(
            f'[stack]\ncompose_project = "{PROJECT}"\napp_services = ["frontend", "backend"]\nhealthy_timeout = 30\nstable_seconds = 0\n'
        )
        servers = {
            "ours": start("ours", "--api-url", api_url, "--stack", str(stack_file), "--home", str(workdir / "home"),
                          "--docker-url", fixtures.info["docker_url"], "--database-url", database_url),
            "bare": start("bare", "--api-url", api_url),
        }
        books = Books(database_url)
        children.callback(books.store.dispose)
        senders = {target: _Prepared(f"http://127.0.0.1:{servers[target].info['port']}", SECRET) for target in servers}

        def replies(names: list[str]) -> None:
            answer = fixtures.ask({"wait": names, "timeout": 180})
            if not answer.get("ok"):
                raise Broken(f"the bot's replies did not all arrive: {answer.get('error')}\nours log:\n{servers['ours'].log_tail()}")

        # warm-up: clicks on a request that does not exist (ours answers "There is no request")
        for target in servers:
            warm = [senders[target].click(APPROVE, "999999", APPROVERS[0], CHANNEL, "1.0", f"{response_url}warm-{target}-{i}")
                    for i in range(WARMUP)]
            fire(servers[target].info["port"], warm)
        replies([f"warm-ours-{i}" for i in range(WARMUP)])
        books.wait_idle()

        for r in range(1, args.rounds + 1):
            # the requests: real /restart frontend commands by operators, posted to the channel
            before = {job.id for job in books.jobs(command="restart")}
            asks = [senders["ours"].slash("/restart", "frontend", OPERATORS[i % len(OPERATORS)], CHANNEL,
                                          response_url=f"{response_url}r{r}-ask-{i}") for i in range(args.requests)]
            _, failed = fire(servers["ours"].info["port"], asks)
            if failed:
                raise Broken(f"asking for the requests failed: {failed[:3]}")
            replies([f"r{r}-ask-{i}" for i in range(args.requests)])
            books.wait_idle()
            pending = [job for job in books.jobs(command="restart") if job.id not in before]
            if len(pending) != args.requests or any(job.state != "pending_approval" for job in pending):
                states = Counter(job.state for job in pending)
                raise Broken(f"expected {args.requests} pending requests, the bot holds {dict(states)}\n{servers['ours'].log_tail()}")
            round_requests = {job.id: job.requester for job in pending}
            requesters.update(round_requests)
            request_ids += list(round_requests)
            before_clicks = {job.id for job in books.jobs(command="approvals")}

            line = []
            for target in servers:
                clicks, names, round_kinds = click_mix(senders[target], round_requests, f"{response_url}r{r}-{target}-", rng)
                elapsed, failed = fire(servers[target].info["port"], clicks)
                samples[target] += elapsed
                errors[target] += failed
                p50, p99, _ = summary(elapsed)
                line.append(f"{target} p50 {p50:6.1f} p99 {p99:6.1f} ms" + (f" ({len(failed)} failed)" if failed else ""))
                if target != "ours":
                    continue
                kinds += round_kinds
                replies(names)
                books.wait_idle()
                # still pending: refused as busy while another restart ran; approve again, one at a time
                for job_id in round_requests:
                    for attempt in range(40):
                        job = books.jobs([job_id])[0]
                        if job.state != "pending_approval":
                            break
                        again += 1
                        name = f"r{r}-again-{job_id}-{attempt}"
                        fire(servers["ours"].info["port"],
                             [senders["ours"].click(APPROVE, str(job_id), APPROVERS[attempt % len(APPROVERS)], CHANNEL, "1.0",
                                                    f"{response_url}{name}")], concurrent=False)
                        replies([name])
                        books.wait_idle()
                        if attempt >= 3:
                            time.sleep(1.0)  # a lock left behind expires with its lease
                click_ids += [job.id for job in books.jobs(command="approvals") if job.id not in before_clicks]
            print(f"round {r}/{args.rounds}: " + " | ".join(line), flush=True)

        books.wait_idle()
        engine = fixtures.ask({"engine": True})
        jobs = books.jobs(request_ids)
        allowed = Counter(entry.job_id for entry in books.audit(request_ids, "allowed") if entry.command == "restart")
        approved = books.audit(request_ids, "approved")
        outcomes = Counter(classify(entry) for entry in books.audit(request_ids) if entry.command == "approvals")
        click_jobs = len(click_ids)

    # ---- the books ----
    ran = [job for job in jobs if job.state in ("succeeded", "failed") and allowed[job.id] >= 1]
    twice = [job.id for job in jobs if allowed[job.id] > 1] + [j for j, n in Counter(e.job_id for e in approved).items() if n > 1]
    forbidden = [job for job in jobs if job.approver is not None and (job.approver == requesters[job.id] or job.approver not in MAY_APPROVE)]
    forbidden += [e for e in approved if e.user_id == requesters[e.job_id] or e.user_id not in MAY_APPROVE]
    expected = args.requests * args.rounds
    restarts = engine["restarts"].get("frontend", 0) + engine["restarts"].get("backend", 0)
    sent = sum(kinds.values())

    print(f"\nApproval clicks: {args.requests} pending /restart requests and {args.requests * CLICKS_PER_REQUEST} "
          f"concurrent signed clicks per round, {args.rounds} rounds; database {database_url.split(':')[0]}; "
          f"engine restart {args.restart_seconds:g} s; against {bare_label()}; waitress threads={THREADS}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"clicks sent to ours: {sent} ({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
          f"click jobs {click_jobs - again} (deduplicated: {sent - click_jobs + again}); approved again after 'busy', one at a time: {again}")
    for outcome, count in sorted(outcomes.items(), key=lambda item: -item[1]):
        print(f"  {count:>5}  {outcome}")
    print(f"{'target':<10}{'clicks':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    stats = {}
    for target in ("ours", "bare"):
        stats[target] = summary(samples[target])
        p50, p99, top = stats[target]
        print(f"{target:<10}{len(samples[target]) + len(errors[target]):>8}{p50:>9.1f}{p99:>9.1f}{top:>9.1f}{len(errors[target]):>8}")
    ratio50, ratio99 = (stats["ours"][i] / stats["bare"][i] for i in (0, 1))
    print(f"{'ours/bare':<27}{ratio50:>8.2f}x{ratio99:>8.2f}x")

    runs_ok = len(ran) == expected and not twice and restarts == expected and engine["max_running"] <= 1
    print(f"runs: {len(ran)} of {expected} requests ran (jobs succeeded/failed with an 'allowed' audit row); "
          f"'approved' rows {len(approved)}; engine restarts {restarts}, at most {engine['max_running']} at once; "
          f"ran twice: {len(set(twice))} -> {'OK' if runs_ok else 'WRONG'}")
    print(f"forbidden runs (approved by the requester or a non-approver): {len(forbidden)} -> {'OK' if not forbidden else 'WRONG'}")
    verdict = "MET" if ratio99 <= TARGET else "MISSED"
    print(f"target 'click-ack p99 within {TARGET}x of bare Bolt': {verdict} ({ratio99:.2f}x)")
    failures = errors["ours"] + errors["bare"]
    for error in sorted(set(failures))[:10]:
        print(f"failure: {error} (x{failures.count(error)})", file=sys.stderr)
    return 0 if runs_ok and not forbidden and not failures else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="pending requests per round (default 50; 10 clicks each)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per target, alternating (default 3)")
    parser.add_argument("--restart-seconds", type=float, default=0.2, help="how long the engine double takes to restart a container")
    parser.add_argument("--postgres", action="store_true", help="the bot's database on PostgreSQL (127.0.0.1:5432) instead of SQLite")
    parser.add_argument("--seed", type=int, default=1)
    bare_option(parser)
    parser.add_argument("--serve", choices=["fixtures", "ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port-file", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--docker-url", help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0
    if args.requests < 1 or args.rounds < 1:
        parser.error("--requests and --rounds must be at least 1")
    try:
        return measure(args)
    except Broken as error:
        print(f"benchmark broken: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
