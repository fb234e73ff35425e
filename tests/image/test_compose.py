"""deploy/docker-compose.yml, as an operator uses it: the bot from its image and its PostgreSQL store beside the stack."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import time

import psycopg
import pytest
import yaml

from tests.conftest import ROOT, SIGNING_SECRET, STACK_DIR
from tests.image.conftest import SOCKET
from tests.slack_signing import SlackSender

pytestmark = pytest.mark.stack

COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Deployment:
    """The compose file in a project of its own, its env files and stack file in a folder of the test's."""

    def __init__(self, folder, bot_image: str, db_port: int, overrides: list[str] = ()):
        self.project = f"flowstate-bot-test-{secrets.token_hex(4)}"
        self.folder = folder
        self.files = [COMPOSE_FILE, *overrides]
        self.env = {
            **os.environ,
            "DOCKER_GID": str(os.stat(SOCKET).st_gid),
            "FLOWSTATE_BOT_IMAGE": bot_image,
            "FLOWSTATE_BOT_STACK_FILE": str(STACK_DIR / "flowstate.toml"),
            "FLOWSTATE_BOT_DB_PORT": str(db_port),
        }

    def compose(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        command = ["docker-compose", "--project-directory", str(self.folder), "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        result = subprocess.run([*command, *args], env=env or self.env, capture_output=True, text=True, timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result


@pytest.fixture
def deployment(tmp_path, bot_image):
    (tmp_path / "bot.env").write_text("SLACK_BOT_TOKEN=xoxb-compose-test\nSLACK_APP_TOKEN=xapp-1-compose-test\n")
    (tmp_path / "bot-db.env").write_text("POSTGRES_PASSWORD=compose-test-password\n")
    made = []

    def make(*overrides: str) -> Deployment:
        made.append(Deployment(tmp_path, bot_image, _free_port(), list(overrides)))
        return made[-1]

    yield make
    for deployment in made:
        deployment.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)


def test_the_compose_file_runs_the_bot_beside_the_stack_with_the_socket_the_stack_file_and_its_store(deployment):
    config = yaml.safe_load(deployment().compose("config").stdout)
    bot, store = config["services"]["bot"], config["services"]["bot-db"]
    assert bot["restart"] == store["restart"] == "unless-stopped"
    assert bot["network_mode"] == store["network_mode"] == "host"
    assert bot["command"] == ["run"]
    assert bot["group_add"] == [str(os.stat(SOCKET).st_gid)]
    assert f"{SOCKET}:{SOCKET}:rw" in bot["volumes"]
    assert f"{STACK_DIR / 'flowstate.toml'}:/home/flowstate/flowstate.toml:ro" in bot["volumes"]
    assert bot["environment"] == {"SLACK_BOT_TOKEN": "xoxb-compose-test", "SLACK_APP_TOKEN": "xapp-1-compose-test"}
    assert bot["depends_on"] == {"bot-db": {"condition": "service_healthy"}}
    assert "user" not in bot, "the image's own non-root user"
    assert store["volumes"] == ["bot-db:/var/lib/postgresql/data:rw"] and "bot-db" in config["volumes"]
    assert "listen_addresses=127.0.0.1" in store["command"]
    assert store["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_without_the_socket_group_the_compose_file_says_what_to_set(deployment):
    setup = deployment()
    result = setup.compose("config", check=False, env={k: v for k, v in setup.env.items() if k != "DOCKER_GID"})
    assert result.returncode != 0
    assert "set DOCKER_GID to the group of /var/run/docker.sock" in result.stderr


def test_the_bot_comes_up_with_its_postgresql_store_and_answers_a_signed_health(deployment, tmp_path, slack_double, live_stack):
    port = _free_port()
    # This machine has no registry: the store runs the test stack's Debian PostgreSQL 15 (superuser flowstate, trust).
    (tmp_path / "local.yml").write_text(
        yaml.safe_dump({
            "version": "2.4",
            "services": {
                "bot": {"command": ["run", "--http", "--host", "127.0.0.1", "--port", str(port)]},
                "bot-db": {
                    "image": "localhost/flowstate-test/debian:current",
                    "entrypoint": ["/bin/sh", "/stack/postgres/entrypoint.sh"],
                    "environment": {"PATH": "/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                    "volumes": [f"{STACK_DIR / 'services'}:/stack:ro"],
                },
            },
        })
    )
    setup = deployment(str(tmp_path / "local.yml"))
    store_url = f"postgresql://flowstate@127.0.0.1:{setup.env['FLOWSTATE_BOT_DB_PORT']}/flowstate_ai"
    (tmp_path / "bot.env").write_text(
        f"SLACK_BOT_TOKEN=xoxb-compose-test\nSLACK_SIGNING_SECRET={SIGNING_SECRET}\nFLOWSTATE_ADMINS=U0ONCALL\n"
        f"FLOWSTATE_SLACK_API_URL={slack_double.api_url}\nFLOWSTATE_DATABASE_URL={store_url}\n"
    )
    setup.compose("up", "-d", "--no-build")

    deadline = time.monotonic() + 120
    while not re.search(rf"serving Slack requests on http://127\.0\.0\.1:{port}/", logs := setup.compose("logs", "--no-color", "bot").stdout):
        assert time.monotonic() < deadline, f"the bot did not serve:\n{logs[-3000:]}"
        time.sleep(0.5)
    sender = SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)
    assert sender.slash("/health", "", "U0ONCALL", response_url=slack_double.response_url("health")).status == 200
    (reply,) = slack_double.wait_for_response("health", timeout=60)
    assert "Containers: " in reply["text"] and "postgres" in reply["text"]
    with psycopg.connect(store_url) as store:  # the bot keeps its audit in its own PostgreSQL, not on SQLite
        rows = store.execute("SELECT command, outcome FROM audit_log ORDER BY id").fetchall()
    assert rows == [("health", "allowed"), ("health", "succeeded")]
