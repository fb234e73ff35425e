"""Several bot replicas on one PostgreSQL store: every command, click and job is handled exactly once.

Real `flowstate-bot run` processes, in HTTP mode behind a "load balancer" (the test sends each signed
request to a random replica, and retries to another one) and in Socket Mode (the double spreads
envelopes over the replicas' connections, as Slack does). The runs are counted where a user would
look: the replies at the response_urls, the channel's messages, the jobs and the audit log.
"""

from __future__ import annotations

import random
import secrets
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import func, select

from bot.approvals.service import APPROVE
from bot.frame.authz import Authorizer
from bot.jobs.model import Job
from bot.frame.roles import Role
from bot.store.engine import AuditEntry, Store
from tests.backups.conftest import SEED
from tests.loopback import SilentServer
from tests.replica import BOT, Replica, alive, parent_of, runner_pid
from tests.socket_mode_double import SocketModeDouble
from tests.waiting import eventually

CHANNEL = "C0OPS"
WAIT = 60  # seconds; generous, never a timing assertion


@pytest.fixture
def replicas(tmp_path, slack_double):
    """Starts replicas (all at once: they migrate the empty store together); kills whatever is left at the end."""
    started: list[Replica] = []

    def start(count: int, stack: str = "", *, socket_mode: bool = False, **env: str) -> list[Replica]:
        stack_file = tmp_path / "stack.toml"
        stack_file.write_text(stack)
        batch = [
            Replica(
                tmp_path, tmp_path / f"replica{len(started) + i}", slack_double, socket_mode=socket_mode, FLOWSTATE_STACK_FILE=str(stack_file), **env
            )
            for i in range(count)
        ]
        started.extend(batch)
        return batch

    yield start
    for replica in started:
        replica.kill()


@pytest.fixture
def store(postgres_url):
    store = Store(postgres_url)
    yield store
    store.dispose()


@pytest.fixture
def app_dsn(postgres_admin):
    """The Flowstate app's database (users, events) for /user-add, on the machine's PostgreSQL."""
    name = f"flowstate_app_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = psycopg.conninfo.make_conninfo(postgres_admin, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
    yield dsn
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _jobs(store: Store, command: str) -> list[Job]:
    with store.session() as session:
        return list(session.scalars(select(Job).where(Job.command == command).order_by(Job.id)))


def _audit(store: Store, command: str) -> dict[str, int]:
    with store.session() as session:
        rows = session.execute(
            select(AuditEntry.outcome, func.count()).where(AuditEntry.command == command).group_by(AuditEntry.outcome)
        )
        return dict(rows.all())


def _replies_once_each(slack_double, names: list[str]) -> None:
    for name in names:
        slack_double.wait_for_response(name, timeout=WAIT)
    time.sleep(2)  # a second run would answer again: give it the time to
    assert {name: len(slack_double.responses(name)) for name in names} == {name: 1 for name in names}


def _bot_processes(replicas: list[Replica], jobs: list[Job]) -> set[int]:
    """The replicas (bot pids) whose runner processes ran these jobs."""
    return {parent_of(runner_pid(job.holder)) for job in jobs} & {r.pid for r in replicas}


def test_a_burst_over_three_http_replicas_behind_a_load_balancer_runs_each_command_once(replicas, slack_double, postgres_url, store):
    bots = replicas(3, FLOWSTATE_DATABASE_URL=postgres_url)
    senders = [bot.sender() for bot in bots]  # all three migrated the same empty store at once, and serve
    balance = random.Random(4)
    plan = [balance.sample(range(3), 2) for _ in range(30)]
    names = [f"burst{i}" for i in range(30)]

    def ask(i: int) -> None:
        first, other = (senders[n] for n in plan[i])
        trigger, sent_at = f"burst.{i}.{secrets.token_hex(3)}", int(time.time())
        ask_once = dict(response_url=slack_double.response_url(names[i]), trigger_id=trigger)
        assert first.slash("/whoami", "", "U0ADMIN", CHANNEL, timestamp=sent_at, **ask_once).status == 200
        if i % 3 == 0:
            # The balancer sends the very same request again, to another replica: a replay, refused there.
            assert other.slash("/whoami", "", "U0ADMIN", CHANNEL, timestamp=sent_at, **ask_once).status == 401
            # Slack's own retry (signed anew, X-Slack-Retry-Num) to another replica: the same job, acked again.
            retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
            assert other.slash("/whoami", "", "U0ADMIN", CHANNEL, timestamp=sent_at + 1, headers=retry, **ask_once).status == 200

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(ask, range(30)))
    _replies_once_each(slack_double, names)
    jobs = _jobs(store, "whoami")
    assert [job.state for job in jobs] == ["succeeded"] * 30
    assert _audit(store, "whoami") == {"allowed": 30, "succeeded": 30}
    assert len(_bot_processes(bots, jobs)) >= 2, "the replicas shared the work"


def test_a_burst_over_three_socket_mode_replicas_runs_each_command_once(replicas, slack_double, postgres_url, store):
    with SocketModeDouble(slack_double, seed=3) as socket_mode:
        bots = replicas(3, socket_mode=True, FLOWSTATE_DATABASE_URL=postgres_url)
        socket_mode.wait_for_connection(3, timeout=WAIT)
        names = [f"sock{i}" for i in range(30)]
        sent = []
        for i, name in enumerate(names):
            trigger = f"sock.{i}.{secrets.token_hex(3)}"
            url = slack_double.response_url(name)
            envelope_id = socket_mode.send_slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=url, trigger_id=trigger)
            sent.append(envelope_id)
            if i % 5 == 0:  # Slack delivers the same command again, on another connection
                first = socket_mode.deliveries(envelope_id)[0]
                other = next(serial for serial in (1, 2, 3) if serial != first)
                again = socket_mode.send_slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=url, trigger_id=trigger, to=other)
                sent.append(again)
        for envelope_id in sent:
            socket_mode.wait_for_ack(envelope_id, timeout=WAIT)
        _replies_once_each(slack_double, names)
        assert all(len(socket_mode.acked_on(envelope_id)) == 1 for envelope_id in sent), "each envelope acked once"
        assert {socket_mode.acked_on(e)[0] for e in sent} == {1, 2, 3}, "every replica's connection got some"
        jobs = _jobs(store, "whoami")
        assert [job.state for job in jobs] == ["succeeded"] * 30
        assert _audit(store, "whoami") == {"allowed": 30, "succeeded": 30}
        for bot in bots:
            assert bot.stop() == 0 and "Traceback" not in bot.stderr, bot.stderr


def test_approve_clicked_on_three_replicas_at_once_runs_the_request_once(replicas, slack_double, postgres_url, store, app_dsn):
    bots = replicas(3, stack=f'[database]\ndsn = "{app_dsn}"\n', FLOWSTATE_DATABASE_URL=postgres_url)
    senders = [bot.sender() for bot in bots]
    approvers = [f"U0APP{i}" for i in range(9)]
    with store.session.begin() as session:
        Authorizer.grant(session, "U0OP", Role.operator, "U0ADMIN")
        for user in approvers:
            Authorizer.grant(session, user, Role.approver, "U0ADMIN")
    ask = senders[0].slash("/user-add", 'carol@example.com "Carol Clark" admin', "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    assert ask.status == 200
    slack_double.wait_for("chat.postMessage", timeout=WAIT, predicate=lambda c: str(c.params.get("text")).startswith("Request #1: "))
    ts = next(m["ts"] for m in slack_double.messages(CHANNEL) if m["text"].startswith("Request #1: "))
    barrier = threading.Barrier(len(approvers))

    def click(i: int, user: str) -> None:
        barrier.wait()
        assert senders[i % 3].click(APPROVE, "1", user, CHANNEL, ts, slack_double.response_url(user)).status == 200

    threads = [threading.Thread(target=click, args=(i, user)) for i, user in enumerate(approvers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answers = [slack_double.wait_for_response(user, timeout=WAIT)[0]["text"] for user in approvers]
    assert answers.count("You approved request #1; it runs now.") == 1, answers
    eventually(lambda: _jobs(store, "user-add")[0].state in ("succeeded", "failed"), "the request to finish", timeout=WAIT)
    time.sleep(2)
    (job,) = _jobs(store, "user-add")
    assert job.state == "succeeded" and job.approver in approvers
    assert _audit(store, "user-add").get("succeeded") == 1 and "failed" not in _audit(store, "user-add")
    with psycopg.connect(app_dsn) as conn:
        assert conn.execute("SELECT role FROM users WHERE email = 'carol@example.com'").fetchall() == [("admin",)]


def test_a_replica_killed_mid_job_is_taken_over_as_interrupted_by_another_and_never_run_twice(replicas, slack_double, postgres_url, store):
    with SilentServer() as hung:
        stack = f'[[probes]]\nname = "hung"\nkind = "http"\nurl = "http://127.0.0.1:{hung.port}/"\ntimeout = 60\n'
        bots = replicas(3, stack=stack, FLOWSTATE_DATABASE_URL=postgres_url, FLOWSTATE_JOB_LEASE_SECONDS="5")
        senders = [bot.sender() for bot in bots]
        assert senders[1].slash("/health", "", "U0ADMIN", CHANNEL, response_url=slack_double.response_url("doomed")).status == 200
        job = eventually(lambda: next((j for j in _jobs(store, "health") if j.state == "running"), None), "the /health job to run", timeout=WAIT)
        eventually(lambda: hung.accepted == 1, "the probe to reach the hung service", timeout=WAIT)
        holder_bot = parent_of(runner_pid(job.holder))
        (doomed,) = [bot for bot in bots if bot.pid == holder_bot]
        doomed.kill()  # SIGKILL: no goodbye, its runner process goes with it
        eventually(lambda: not alive(runner_pid(job.holder)), "the runner to go with its bot", timeout=WAIT)

        told = slack_double.wait_for("chat.postMessage", timeout=WAIT, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        assert told[0].params["channel"] == CHANNEL and "/health" in told[0].params["text"]
        assert "It was not run again." in told[0].params["text"]
        time.sleep(6)  # more than a lease: no replica takes it up again
        (after,) = _jobs(store, "health")
        assert after.state == "interrupted"
        assert hung.accepted == 1, "the job ran once; nobody ran it again"
        assert len(slack_double.wait_for("chat.postMessage", predicate=lambda c: "was interrupted" in str(c.params.get("text")))) == 1
        assert slack_double.responses("doomed") == []
        survivors = [bot for bot in bots if bot is not doomed]
        for i, bot in enumerate(survivors):
            bot.sender().slash("/whoami", "", "U0ADMIN", CHANNEL, response_url=slack_double.response_url(f"after{i}"))
        _replies_once_each(slack_double, [f"after{i}" for i in range(len(survivors))])


@pytest.mark.process
def test_a_second_bot_on_the_same_sqlite_file_says_so_and_exits_while_the_console_still_works(replicas, tmp_path):
    (first,) = replicas(1)
    first.sender()
    home = tmp_path / "replica0"
    second = subprocess.run(
        [BOT, "run", "--http", "--port", "0"], cwd=tmp_path, env=first.env, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith(f"flowstate-bot: FLOWSTATE_DATABASE_URL: another flowstate-bot run (pid {first.pid}) already uses the SQLite database {home / 'bot.db'}")
    assert "use PostgreSQL to run several replicas" in line

    console = subprocess.run(
        [BOT, "console", "--stack", str(tmp_path / "stack.toml")], cwd=tmp_path, env=first.env, input="/whoami\n",
        capture_output=True, text=True, timeout=60,
    )
    assert console.returncode == 0 and "admin" in console.stdout, console.stderr

    first.kill()  # the lock dies with its holder, however it dies
    (again,) = replicas(1, FLOWSTATE_HOME=str(home))
    again.sender()



def test_a_holder_is_taken_for_dead_only_in_this_pid_namespace():
    """Replicas in containers with host networking share the host's name; a pid from another replica's PID
    namespace says nothing about this one's processes: the lease decides for them."""
    from bot.jobs.queue import holder_is_dead, new_holder

    gone = subprocess.Popen(["true"])
    gone.wait()
    host = new_holder().split("/")[0]
    assert holder_is_dead(f"{host}/{gone.pid}/abcd1234")
    name, _, namespace = host.rpartition("~")
    assert not holder_is_dead(f"{name}~{int(namespace) + 1}/{gone.pid}/abcd1234"), "another replica's namespace"
    assert not holder_is_dead(new_holder()), "this process is alive"
