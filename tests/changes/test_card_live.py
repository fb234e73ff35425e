"""The change card on the live engine: a release of the deploy tests' Compose project (tests/deploy/conftest.py), a
restarted service, an OOM kill (a container of the project over its memory limit) and an environment variable whose
secret value changes all appear with their times, and no value; the card's button in Slack asks for /rollback through
approvals, as the clicker."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import docker
import pytest

from bot.changes.service import ROLLBACK_LAST
from bot.stack.compose import PROJECT_LABEL, SERVICE_LABEL
from tests.bot.test_slack_approvals import CHANNEL, _job, _request_message
from tests.conftest import grant, run
from tests.deploy.conftest import IMAGE, PROJECT, deploy_project, world  # noqa: F401 (fixtures)
from tests.deploy.test_rollback_live import _deployed_v2_then_v3
from bot.frame.roles import Role

SECRET, NEW_SECRET = "s3cr3t-Api-Tok3n-Zq8xLmP4", "n3w-Api-Tok3n-9Kd2WqXy"


def hhmm(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%H:%M")


def _between(text: str, before: datetime, after: datetime, rest: str) -> bool:
    """The line `HH:MM rest` is on the card, at a minute between the two moments."""
    return any(f"{hhmm(at)} {rest}" in text for at in (before, after))


@pytest.fixture
def docker_client():
    client = docker.from_env(timeout=120)
    made: list = []
    yield client, made
    for container in made:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
    client.close()


def _service_container(client, made, service: str, env: dict[str, str] | None = None, command: str = "sleep 3600", memory: str | None = None):
    """A container of the deploy project, as Compose labels one, with no network at all."""
    container = client.containers.create(
        IMAGE, entrypoint=["sh", "-c", command], environment=env or {}, network_mode="none",
        labels={PROJECT_LABEL: PROJECT, SERVICE_LABEL: service}, name=f"{PROJECT}_{service}_1",
        **({"mem_limit": memory, "memswap_limit": memory} if memory else {}),
    )
    made.append(container)
    return container


def test_a_release_a_restart_an_oom_kill_and_a_changed_secret_appear_with_their_times_and_no_value(make_runtime, world, docker_client):
    client, made = docker_client
    runtime = _deployed_v2_then_v3(make_runtime, world)  # two releases through approvals: v2, then v3
    grant(runtime, "UVIEW", Role.viewer)
    cron = _service_container(client, made, "cron", {"API_TOKEN": SECRET, "LOG_LEVEL": "info"})
    baseline = run(runtime, "UVIEW", "/changes").text
    assert "No change of the stack file or of services' environment in the last 6 h." in baseline, baseline

    cron.remove(force=True)
    _service_container(client, made, "cron", {"API_TOKEN": NEW_SECRET, "LOG_LEVEL": "info"})
    world.stack_file.write_text(world.stack_file.read_text() + "\n# a comment: the file changed\n")
    before_restart = datetime.now(timezone.utc)
    (frontend,) = client.containers.list(filters={"label": [f"{PROJECT_LABEL}={PROJECT}", f"{SERVICE_LABEL}=frontend"]})
    frontend.restart(timeout=1)
    after_restart = datetime.now(timezone.utc)
    oom = _service_container(client, made, "oom-probe", command="tail /dev/zero", memory="16m")
    before_oom = datetime.now(timezone.utc)
    oom.start()
    assert oom.wait(timeout=60)["StatusCode"] == 137
    oom.reload()
    assert oom.attrs["State"]["OOMKilled"], "the engine says it killed the container for its memory"
    after_oom = datetime.now(timezone.utc)

    card = run(runtime, "UVIEW", "/changes 1h")
    text = card.text
    v2, v3 = world.commits["v2"][:10], world.commits["v3"][:10]
    assert re.search(rf"\d\d:\d\d 🟢 #\d+ deploy `{v2}\.\.{v3}` by <@UOP>, approved by <@UAPP>", text), text
    assert "Add user roles" in text, "the release's commit subjects"
    assert _between(text, before_restart, after_restart, "frontend restarted"), text
    assert _between(text, before_oom, after_oom, "oom-probe was killed for going over its memory limit (OOM kill), exit code 137"), text
    assert re.search(r"\d\d:\d\d cron: env API_TOKEN changed", text) and "LOG_LEVEL" not in text, text
    assert re.search(r"stack file changed at \d\d:\d\d", text), text
    assert re.search(r"\d\d:\d\d `/restart` by <@UOP> → succeeded \(request #\d+\)", text), text
    for value in (SECRET, NEW_SECRET, "s3cr3t", "Tok3n"):
        assert value not in text and value not in str(card.blocks)
    assert "could not be read" not in text


def test_the_button_asks_for_a_rollback_as_the_clicker_through_approvals(make_runtime, world, slack_bot, slack_double):
    _deployed_v2_then_v3(make_runtime, world)  # the ledger the Slack bot shares (the same home)
    sender, runtime = slack_bot(world.stack(), admins=["U0ADMIN"])
    grant(runtime, "U0OP", Role.operator)
    grant(runtime, "U0VIEW", Role.viewer)
    sender.slash("/changes", "", "U0VIEW", CHANNEL, response_url=slack_double.response_url("changes"))
    (card,) = slack_double.wait_for_response("changes", timeout=60)
    buttons = [(e["text"]["text"], e["action_id"], e["value"]) for b in card["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [("Roll back the last release", ROLLBACK_LAST, "last")], card["blocks"]
    ts = "1700000000.000200"

    sender.click(ROLLBACK_LAST, "last", "U0VIEW", CHANNEL, ts, slack_double.response_url("viewer"))
    assert "operator" in slack_double.wait_for_response("viewer", timeout=30)[0]["text"], "the clicker's role decides"

    sender.click(ROLLBACK_LAST, "last", "U0OP", CHANNEL, ts, slack_double.response_url("rollback"))
    (asked,) = slack_double.wait_for_response("rollback", timeout=30)
    match = re.match(rf"Request #(\d+): `/rollback {world.commits['v2']} [0-9a-f]{{40}}` needs a second person's approval", asked["text"])
    assert match, asked
    number = int(match.group(1))
    assert "Faster search" in str(_request_message(slack_double, number)["blocks"]), "the request shows the release it goes back to"
    assert _job(runtime, number).state == "pending_approval" and _job(runtime, number).requester == "U0OP"

    sender.click(ROLLBACK_LAST, "HEAD~2 --any-commit", "U0OP", CHANNEL, ts, slack_double.response_url("tampered"))
    assert slack_double.wait_for_response("tampered", timeout=30)[0]["text"] == (
        "That button does not belong to a change card of this bot; nothing changed."
    )


def test_an_engine_that_cannot_be_reached_is_named_and_the_other_sources_still_speak(make_runtime, world, tmp_path):
    runtime = make_runtime(world.stack(), admins=["UADMIN"], docker_url=f"unix://{tmp_path}/no-engine.sock")
    grant(runtime, "UVIEW", Role.viewer)
    text = run(runtime, "UVIEW", "/changes").text
    assert f"⚠️ Docker events could not be read: The Docker engine is not reachable at unix://{tmp_path}/no-engine.sock." in text, text
    assert "No restart, exit, OOM kill or health change" not in text
    assert f"⚠️ Services' environment could not be read: The Docker engine is not reachable at unix://{tmp_path}/no-engine.sock." in text
    assert "*Releases*\nNo release in the last 6 h." in text and "*Bot commands that changed something*\nNo command changed anything in the last 6 h." in text
    assert "Roll back" not in text, "no release in the ledger: nothing to roll back"
