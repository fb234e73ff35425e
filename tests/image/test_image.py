"""The bot's Docker image, built here from Debian's packages (tests/image/build) and run as an operator runs it:
host networking, the non-root user, the stack file mounted read-only and the Docker socket of the engine."""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

import docker
import pytest

from tests.conftest import SIGNING_SECRET
from tests.image.conftest import SOCKET
from tests import stack_setting
from tests.slack_signing import SlackSender

pytestmark = pytest.mark.stack

STACK_FILE = "/home/flowstate/flowstate.toml"  # where the README mounts it: the image's default FLOWSTATE_STACK_FILE
SERVICES = ("frontend", "backend", "python-worker", "postgres", "redis", "nginx")


@pytest.fixture
def run_bot(bot_image, slack_double):
    """Starts the image on the host's network with a stack file and Slack env; removes every container it started."""
    client = docker.from_env(timeout=120)
    started = []

    def run(*command: str, detach: bool = True, **env: str):
        container = client.containers.create(
            bot_image,
            list(command),
            name=f"flowstate-bot-image-test-{secrets.token_hex(4)}",
            network_mode="host",
            # The socket belongs to root and the engine's group: the bot's user joins that group, as the README says.
            group_add=[str(os.stat(SOCKET).st_gid)],
            volumes={
                SOCKET: {"bind": SOCKET, "mode": "rw"},
                str(stack_setting.STACK_FILE): {"bind": STACK_FILE, "mode": "ro"},
            },
            environment={
                "SLACK_BOT_TOKEN": "xoxb-image-test",
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "FLOWSTATE_SLACK_API_URL": slack_double.api_url,
                **env,
            },
        )
        started.append(container)
        container.start()
        return container

    yield run
    for container in started:
        container.remove(force=True)
    client.close()


def _serving_port(container) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = container.logs().decode()
        if match := re.search(r"serving Slack requests on http://127\.0\.0\.1:(\d+)/slack/events", logs):
            return int(match.group(1))
        container.reload()
        assert container.status == "running", f"the bot stopped before it served:\n{logs[-2000:]}"
        time.sleep(0.2)
    raise AssertionError(f"the bot did not say where it listens:\n{container.logs().decode()[-2000:]}")


def test_check_in_the_image_reaches_the_store_slack_and_every_probe_of_the_mounted_stack_file(run_bot):
    container = run_bot("check")
    assert container.wait(timeout=120)["StatusCode"] == 0, container.logs().decode()
    output = container.logs(stderr=False).decode()
    assert "ok   database: sqlite:////home/flowstate/.flowstate-bot/bot.db" in output
    assert "ok   slack: team " in output
    assert "ok   stack file: flowstate.toml (9 probes)" in output  # the image's default, found in its working directory
    for service in SERVICES:
        assert re.search(rf"^ok   probe {service}: ", output, re.M), output
    assert "FAIL" not in output


def test_the_image_in_http_mode_answers_a_signed_health_as_a_non_root_user(run_bot, slack_double):
    container = run_bot("run", "--http", "--host", "127.0.0.1", "--port", "0", FLOWSTATE_ADMINS="U0ONCALL")
    sender = SlackSender(f"http://127.0.0.1:{_serving_port(container)}", SIGNING_SECRET)

    ack = sender.slash("/health", "", "U0ONCALL", response_url=slack_double.response_url("health"))
    assert ack.status == 200
    (reply,) = slack_double.wait_for_response("health", timeout=60)
    assert "Containers: " in reply["text"], f"{reply['text']}\n{container.logs().decode()[-3000:]}"
    containers = re.search(r"Containers: (.*)", reply["text"]).group(1)  # read through the mounted Docker socket
    for service in SERVICES:
        assert re.search(rf"\b{service} (up|exited|restarting|paused|created)", containers), containers
    assert "postgres" in reply["text"] and "SELECT 1" in reply["text"]

    container.reload()
    host_pid = container.attrs["State"]["Pid"]
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", Path(f"/proc/{host_pid}/status").read_text(), re.M)
    assert uids.groups() == ("10001", "10001"), "the bot runs as the image's user flowstate, not root"
    assert "Traceback" not in container.logs().decode()
