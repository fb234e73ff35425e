"""Shared fixtures: real PostgreSQL and Redis from this machine, a fresh bot database per test."""

from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path

import psycopg
import pytest
import redis

from bot.frame.config import Settings, StackConfig
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.runtime import Runtime
from bot.frame.authz import Authorizer
from tests import stack_setting

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_ADMIN = os.environ.get("FLOWSTATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("FLOWSTATE_TEST_REDIS", "redis://127.0.0.1:6379/15")


def bot_env(**values: str) -> dict[str, str]:
    """The environment of a bot started by a test: this one's, less the developer's bot settings, plus `values`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTATE_", "SLACK_"))}
    return {**clean, **values}


def need(service: str, check, how: str) -> None:
    """A missing service fails the test with what to do; it never skips."""
    try:
        check()
    except Exception as error:
        pytest.fail(f"{service} is not reachable ({error}); {how}", pytrace=False)


# The fixtures that reach a service or start processes, and the marker a test that uses one gets (directly or
# through other fixtures). `make test-unit` leaves out these markers: it needs no service and stays in-process.
# (A test that starts a bot process without a fixture carries `process` itself.)
TIER_MARKERS = {"postgres_admin": "postgres", "redis_url": "redis", "live_stack": "stack", "slack_bot": "process", "swarm_stack": "swarm"}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if getattr(item, "callspec", None) and item.callspec.params.get("database_url") == "postgresql":
            used.add("postgres_admin")  # database_url asks for it only when it runs
        if getattr(item, "callspec", None) and "stack_of_each_runtime" in item.callspec.params:
            used.add("swarm_stack" if item.callspec.params["stack_of_each_runtime"] == "swarm" else "live_stack")
        for fixture, marker in TIER_MARKERS.items():
            if fixture in used:
                item.add_marker(marker)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Tests see only the settings they give: nothing from the developer's shell or .env."""
    for name in list(os.environ):
        if name.startswith(("FLOWSTATE_", "SLACK_")) and not name.startswith("FLOWSTATE_TEST_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_admin() -> str:
    def check():
        with psycopg.connect(POSTGRES_ADMIN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")

    need("PostgreSQL", check, "start it with tests/services (or set FLOWSTATE_TEST_POSTGRES)")
    return POSTGRES_ADMIN


@pytest.fixture
def postgres_url(postgres_admin) -> str:
    """A new, empty database on the machine's PostgreSQL, dropped afterwards."""
    name = f"flowstate_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = psycopg.conninfo.conninfo_to_dict(postgres_admin)
    user = base.get("user", "postgres")
    host = base.get("host", "127.0.0.1")
    port = base.get("port", "5432")
    yield f"postgresql://{user}@{host}:{port}/{name}"
    with psycopg.connect(postgres_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    need("Redis", lambda: redis.Redis.from_url(REDIS_URL, socket_timeout=3).ping(), "start it with tests/services")
    return REDIS_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The store's tests run on both the embedded default and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bot.db'}"
    return request.getfixturevalue("postgres_url")


def make_settings(tmp_path: Path, **values) -> Settings:
    values.setdefault("home", tmp_path / ".flowstate-bot")
    return Settings(_env_file=None, **values)


@pytest.fixture
def make_runtime(tmp_path):
    """Builds a migrated runtime; closes every one it built."""
    built: list[Runtime] = []

    def build(stack: StackConfig | None = None, **settings) -> Runtime:
        runtime = Runtime.build(make_settings(tmp_path, **settings), stack or StackConfig())
        built.append(runtime)
        return runtime

    yield build
    for runtime in built:
        runtime.close()


def grant(runtime: Runtime, user_id: str, role: Role) -> None:
    with runtime.store.session.begin() as session:
        Authorizer.grant(session, user_id, role, "UADMIN")


def run(runtime: Runtime, user_id: str, line: str, channel: str = "C1"):
    name, _, text = line.lstrip("/").partition(" ")
    return runtime.pipeline.dispatch(Invocation(user_id, name, text.strip(), channel, "console"))


SIGNING_SECRET = "test-signing-secret"


@pytest.fixture
def slack_double():
    from tests.slack_double import SlackDouble

    with SlackDouble() as double:
        yield double


def _serve_until_closed(server) -> None:
    # Closing a waitress server from another thread can pull its socket out from under select().
    try:
        server.run()
    except OSError:
        socket = server.socket  # None once close() has finished
        if socket is not None and socket.fileno() != -1:
            raise


class SlackBot(tuple):
    """(sender, runtime), with the adapter at hand and `stop()` to take this bot down as a restart would."""

    def __new__(cls, sender, runtime, adapter, stop):
        bot = super().__new__(cls, (sender, runtime))
        bot.adapter = adapter
        bot.stop = stop
        return bot


@pytest.fixture
def slack_bot(tmp_path, slack_double):
    """The bot in HTTP mode on 127.0.0.1, wired to the Web API double; yields (sender, runtime)."""
    import threading

    from bot.adapters.slack.listeners import SlackAdapter
    from bot.adapters.slack.client import group_members, web_client
    from tests.slack_signing import SlackSender

    running = []

    def stop_one(parts) -> None:
        if parts not in running:
            return
        running.remove(parts)
        server, thread, adapter, runtime = parts
        server.close()
        thread.join(timeout=5)
        adapter.shutdown()
        runtime.close()

    def start(stack: StackConfig | None = None, **values):
        values.setdefault("runner_threads", 4)
        settings = make_settings(
            tmp_path,
            slack_api_url=slack_double.api_url,
            slack_bot_token="xoxb-test-token",
            slack_signing_secret=SIGNING_SECRET,
            **values,
        )
        client = web_client(settings)
        runtime = Runtime.build(settings, stack or StackConfig(), group_members=group_members(client))
        adapter = SlackAdapter(runtime, client, http_mode=True)
        server = adapter.http_server("127.0.0.1", 0)
        thread = threading.Thread(target=_serve_until_closed, args=(server,), daemon=True)
        thread.start()
        parts = (server, thread, adapter, runtime)
        running.append(parts)
        sender = SlackSender(f"http://127.0.0.1:{server.effective_port}", SIGNING_SECRET)
        return SlackBot(sender, runtime, adapter, lambda: stop_one(parts))

    yield start
    for parts in list(running):
        stop_one(parts)


class BotProcess:
    """`flowstate-bot run --http` in a process of its own, as production runs it: killed and started again by tests."""

    def __init__(self, cwd: Path, slack_double, home: Path, stack_file: str, *, user: str | None = None, python: str | None = None,
                 database_url: str | None = None, signing_secret: str = SIGNING_SECRET, **env: str):
        """`user`: the OS user the bot runs as (the test runs as root), with `python` (one that user may run);
        `signing_secret`: what Slack's requests are signed with (the test gives the bot the same one, in its
        environment or a file)."""
        self._cwd = cwd
        self._user = user
        self._python = python
        self.signing_secret = signing_secret
        database_url = database_url or f"sqlite:///{home / 'bot.db'}"
        defaults = dict(
            PYTHONPATH=str(ROOT),
            SLACK_BOT_TOKEN="xoxb-kill-test",
            SLACK_SIGNING_SECRET=signing_secret,
            FLOWSTATE_SLACK_API_URL=slack_double.api_url,
            FLOWSTATE_HOME=str(home),
            FLOWSTATE_STACK_FILE=stack_file,
            FLOWSTATE_ADMINS="U0ADMIN",
            FLOWSTATE_DATABASE_URL=database_url,
        )
        self.env = {k: v for k, v in bot_env(**{**defaults, **env}).items() if v is not None}  # a test's own values win; None unsets
        self.process = None
        from bot.store.engine import Store

        self.store = Store(database_url)  # the bot's own database, read by the test

    def grant(self, user_id: str, role: Role) -> None:
        with self.store.session.begin() as session:
            Authorizer.grant(session, user_id, role, "U0ADMIN")

    def start(self):
        """Starts the bot; its SlackSender once it serves."""
        import re
        import subprocess
        import sys
        import threading
        import time

        from tests.slack_signing import SlackSender

        self.process = subprocess.Popen(
            [self._python or sys.executable, "-m", "bot.adapters.cli", "run", "--http", "--port", "0"], cwd=self._cwd, env=self.env, stderr=subprocess.PIPE, text=True,
            user=self._user, group=self._user and pwd.getpwnam(self._user).pw_gid, extra_groups=[] if self._user else None,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if match := re.search(r"serving Slack requests on http://127\.0\.0\.1:(\d+)/", self.process.stderr.readline()):
                # Keep reading its log, or a full pipe would stop the bot mid-command.
                threading.Thread(target=self.process.stderr.read, daemon=True).start()
                return SlackSender(f"http://127.0.0.1:{match.group(1)}", self.signing_secret)
        self.kill()
        raise AssertionError("the bot did not start")

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self.store.dispose()


STACK_DIR = stack_setting.STACK_DIR


_STACK_HOLD: list = []


def _hold_stack_for_this_session() -> None:
    """One test session at a time uses a live stack (fixed ports; another checkout's `up` recreates it): take its
    lock (one per stack, tests/stack_setting.py) that this process holds until it exits, and wait for it if
    another session has it."""
    import fcntl
    import sys

    stack_setting.LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    handle = open(stack_setting.LOCK_FILE, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"\n[live_stack] another test session uses the stack {stack_setting.NAME}; waiting for it", file=sys.stderr, flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
    _STACK_HOLD.append(handle)


@pytest.fixture(scope="session")
def live_stack() -> StackConfig:
    """The Compose test stack FLOWSTATE_TEST_STACK names, up and healthy (tests/stack/up starts the engine and builds
    images if needed)."""
    import subprocess

    from bot.frame.config import load_stack

    _hold_stack_for_this_session()
    result = subprocess.run([str(STACK_DIR / "up")], capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        pytest.fail(f"the live test stack {stack_setting.NAME} did not come up (tests/stack/up):\n{result.stderr[-4000:]}", pytrace=False)
    return load_stack(stack_setting.STACK_FILE, required=True)


SWARM_DIR = ROOT / "tests" / "swarm"


@pytest.fixture(scope="session")
def swarm_stack():
    """The Swarm test world (tests/swarm/README.md): a second engine in network namespace fs-swarm, a single-node swarm,
    the test stack deployed as Swarm stack `fs`; its stack file's configuration. Up once per session (one session at a
    time: one swarm per machine), down at the end: engine stopped, mounts and namespace removed."""
    import fcntl
    import subprocess

    from bot.frame.config import load_stack

    stack_setting.CACHE.mkdir(parents=True, exist_ok=True)
    hold = open(stack_setting.CACHE / "tests-swarm.lock", "w")
    fcntl.flock(hold, fcntl.LOCK_EX)
    result = subprocess.run([str(SWARM_DIR / "up")], capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        subprocess.run([str(SWARM_DIR / "down")], capture_output=True, timeout=300)
        hold.close()
        pytest.fail(f"the swarm test world did not come up (tests/swarm/up):\n{result.stderr[-4000:]}", pytrace=False)
    try:
        yield load_stack(SWARM_DIR / "flowstate.toml", required=True)
    finally:
        down = subprocess.run([str(SWARM_DIR / "down")], capture_output=True, text=True, timeout=300)
        hold.close()
        if down.returncode != 0:
            pytest.fail(f"the swarm test world did not come down (tests/swarm/down):\n{down.stderr[-4000:]}", pytrace=False)


@pytest.fixture(params=["compose", "swarm"])
def stack_of_each_runtime(request):
    """The live test stack's configuration on each runtime: the Compose stack (live_stack), the Swarm one (swarm_stack)."""
    return request.getfixturevalue("live_stack" if request.param == "compose" else "swarm_stack")


@pytest.fixture
def stack_container(live_stack):
    """The docker SDK's container of a service of the live stack; puts every container it handed out back to healthy."""
    import time

    import docker

    client = docker.from_env(timeout=120)
    handed_out = []

    def get(service: str):
        (container,) = client.containers.list(
            all=True,
            filters={"label": [f"com.docker.compose.project={live_stack.stack.compose_project}", f"com.docker.compose.service={service}"]},
        )
        handed_out.append(container)
        return container

    yield get
    for container in handed_out:
        container.reload()
        if container.status == "running":
            container.exec_run("rm -f /tmp/fail /tmp/fail-api")
        else:
            container.start()
    deadline = time.monotonic() + 90
    for container in handed_out:
        while True:
            container.reload()
            if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{container.name} did not become healthy again after the test", pytrace=False)
            time.sleep(0.5)
    client.close()
