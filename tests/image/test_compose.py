"""deploy/docker-compose.yml, as an operator uses it: the bot from its image and its PostgreSQL store beside the stack."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import docker
import psycopg
import pytest
import yaml

from tests.conftest import ROOT, SIGNING_SECRET
from tests.image.conftest import SOCKET
from tests.slack_signing import SlackSender
from tests.stack_setting import STACK_FILE
from tests.waiting import eventually

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
            "FLOWSTATE_BOT_STACK_FILE": str(STACK_FILE),
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


PASSWORDS = {"postgres": "compose-test-superuser", "flowstate_owner": "compose-test-owner", "flowstate_bot": "compose-test-bot"}


@pytest.fixture
def deployment(tmp_path, bot_image):
    """The deploy folder as an operator fills it in: the env files from their examples, the roles' init script."""
    (tmp_path / "bot.env").write_text("SLACK_BOT_TOKEN=xoxb-compose-test\nSLACK_APP_TOKEN=xapp-1-compose-test\n")
    (tmp_path / "bot-db.env").write_text(
        f"POSTGRES_PASSWORD={PASSWORDS['postgres']}\nFLOWSTATE_OWNER_PASSWORD={PASSWORDS['flowstate_owner']}\n"
        f"FLOWSTATE_BOT_PASSWORD={PASSWORDS['flowstate_bot']}\n"
    )
    shutil.copytree(ROOT / "deploy" / "bot-db-init", tmp_path / "bot-db-init")
    made = []

    def make(*overrides: str) -> Deployment:
        made.append(Deployment(tmp_path, bot_image, _free_port(), list(overrides)))
        return made[-1]

    yield make
    for deployment in made:
        deployment.compose("down", "-v", "--remove-orphans", "-t", "10", check=False)


def test_the_compose_file_runs_the_bot_beside_the_stack_with_the_socket_the_stack_file_and_its_store(deployment, tmp_path):
    (tmp_path / "bot-owner.env").write_text("FLOWSTATE_DATABASE_URL=postgresql://flowstate_owner:x@127.0.0.1:5433/flowstate_bot\n")
    config = yaml.safe_load(deployment().compose("config").stdout)
    bot, migrate, store = config["services"]["bot"], config["services"]["migrate"], config["services"]["bot-db"]
    assert bot["restart"] == store["restart"] == "unless-stopped"
    assert bot["network_mode"] == migrate["network_mode"] == store["network_mode"] == "host"
    assert bot["command"] == ["run"]
    assert bot["group_add"] == [str(os.stat(SOCKET).st_gid)]
    assert f"{SOCKET}:{SOCKET}:rw" in bot["volumes"]
    assert f"{STACK_FILE}:/home/flowstate/flowstate.toml:ro" in bot["volumes"]
    assert bot["environment"] == {"SLACK_BOT_TOKEN": "xoxb-compose-test", "SLACK_APP_TOKEN": "xapp-1-compose-test"}
    assert "user" not in bot, "the image's own non-root user"
    # The bot and the migration: no capability, no privilege gained, nothing written but the volume and /tmp.
    for service in (bot, migrate):
        assert (service["cap_drop"], service["security_opt"], service["read_only"]) == (["ALL"], ["no-new-privileges:true"], True)
        assert service["tmpfs"] == ["/tmp:size=64m,mode=1777"] and service["image"] == bot["image"]
    # The owner migrates and grants before the bot starts; the bot never sees the owner's URL.
    assert migrate["command"] == ["migrate", "--grant-to", "flowstate_bot"] and migrate["restart"] == "no"
    assert migrate["environment"] == {"FLOWSTATE_DATABASE_URL": "postgresql://flowstate_owner:x@127.0.0.1:5433/flowstate_bot"}
    assert migrate["depends_on"] == {"bot-db": {"condition": "service_healthy"}}
    assert bot["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert store["volumes"] == ["bot-db:/var/lib/postgresql/data:rw", f"{tmp_path / 'bot-db-init'}:/docker-entrypoint-initdb.d:ro"]
    assert "bot-db" in config["volumes"]
    assert "listen_addresses=127.0.0.1" in store["command"]
    assert store["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]


def test_without_the_socket_group_the_compose_file_says_what_to_set(deployment):
    setup = deployment()
    result = setup.compose("config", check=False, env={k: v for k, v in setup.env.items() if k != "DOCKER_GID"})
    assert result.returncode != 0
    assert "set DOCKER_GID to the group of /var/run/docker.sock" in result.stderr


def test_the_bot_comes_up_as_its_store_role_with_its_limits_and_answers_a_signed_health(deployment, tmp_path, slack_double, live_stack):
    port = _free_port()
    # This machine has no registry: the store runs the test stack's Debian PostgreSQL 15, started as the official
    # image starts (tests/image/bot-db-entrypoint.sh), so deploy/bot-db-init makes the roles exactly as it would there.
    (tmp_path / "local.yml").write_text(
        yaml.safe_dump({
            "version": "2.4",
            "services": {
                "bot": {"command": ["run", "--http", "--host", "127.0.0.1", "--port", str(port)]},
                "bot-db": {
                    "image": "localhost/flowstate-test/debian:current",
                    "entrypoint": ["/bin/sh", "/entrypoint.sh"],
                    "environment": {"PATH": "/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                    "volumes": [f"{Path(__file__).with_name('bot-db-entrypoint.sh')}:/entrypoint.sh:ro"],
                },
            },
        })
    )
    setup = deployment(str(tmp_path / "local.yml"))

    def store_url(role: str) -> str:
        return f"postgresql://{role}:{PASSWORDS[role]}@127.0.0.1:{setup.env['FLOWSTATE_BOT_DB_PORT']}/flowstate_bot"

    (tmp_path / "bot-owner.env").write_text(f"FLOWSTATE_DATABASE_URL={store_url('flowstate_owner')}\n")
    (tmp_path / "bot.env").write_text(
        f"SLACK_BOT_TOKEN=xoxb-compose-test\nSLACK_SIGNING_SECRET={SIGNING_SECRET}\nFLOWSTATE_ADMINS=U0ONCALL\n"
        f"FLOWSTATE_SLACK_API_URL={slack_double.api_url}\nFLOWSTATE_DATABASE_URL={store_url('flowstate_bot')}\n"
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
    with psycopg.connect(store_url("flowstate_bot"), autocommit=True) as store:  # the bot keeps its audit in its own PostgreSQL, not on SQLite
        rows = eventually(lambda: (found := store.execute("SELECT command, outcome FROM audit_log ORDER BY id").fetchall())[1:] and found,
                          "the outcome row, written just after the reply went out")
        assert store.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert store.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_log'").fetchone() == ("flowstate_owner",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            store.execute("UPDATE audit_log SET outcome = 'x'")
    assert rows == [("health", "allowed"), ("health", "succeeded")]
    assert "database role:" not in logs, "no warning: the bot is neither a superuser nor the owner"
    with psycopg.connect(store_url("postgres")) as superuser:  # passwords are required: the init script set them
        assert superuser.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'flowstate%' ORDER BY 1").fetchall() == [
            ("flowstate_bot",), ("flowstate_owner",),
        ]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(store_url("flowstate_bot").replace(PASSWORDS["flowstate_bot"], "wrong"))
    bot = docker.from_env().containers.get(setup.compose("ps", "-q", "bot").stdout.strip())
    written = bot.exec_run(["sh", "-c", "touch /home/flowstate/x; touch /tmp/x && touch /home/flowstate/.flowstate-bot/x"])
    assert (written.exit_code, written.output.decode()) == (0, "touch: cannot touch '/home/flowstate/x': Read-only file system\n")
    assert bot.exec_run(["grep", "^CapBnd", "/proc/1/status"]).output.decode().split() == ["CapBnd:", "0000000000000000"]
    assert bot.exec_run(["grep", "^NoNewPrivs", "/proc/1/status"]).output.decode().split() == ["NoNewPrivs:", "1"]
