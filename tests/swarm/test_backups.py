"""/backup and /restore on the Swarm test world: pg_dump and pg_restore run in the postgres service's task container;
the app services a restore stops are scaled to zero and back, each to the replica count it had."""

from __future__ import annotations

import re

import docker
import pytest

from bot.adapters.console import run_approved
from bot.frame.blocks import to_text
from bot.frame.roles import Role
from tests.backups.conftest import swarm_app_db  # noqa: F401 (a fixture)
from tests.conftest import grant, run

SERVICE = "python-worker"


def replicas(name: str) -> tuple[int, dict]:
    client = docker.DockerClient(base_url="unix:///run/fs-swarm/docker.sock")
    try:
        spec = client.services.get(f"fs_{name}").attrs["Spec"]
        return spec["Mode"]["Replicated"]["Replicas"], spec.get("Labels") or {}
    finally:
        client.close()


def test_backup_then_restore_on_swarm_scales_the_service_to_zero_and_back(make_runtime, tmp_path, swarm_app_db):
    swarm_app_db.add_events(500)
    runtime = make_runtime(swarm_app_db.stack, admins=["UADMIN"], backup_dir=tmp_path / "backups", restore_services=[SERVICE])
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    taken = run(runtime, "UOP", "/backup before the test")
    assert not taken.failed and taken.text.startswith("✅ Backup #1 taken"), taken.text
    swarm_app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve Intruder')")

    asked = run(runtime, "UOP", "/restore 1")
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert not reply.failed, reply.text
    text = to_text(reply)
    database = swarm_app_db.name
    for step in ("🟢 1. Verified backup #1", f"🟢 2. Restored backup #1 into {database}__restore_{number}", f"🟢 3. Stopped {SERVICE}",
                 f"🟢 4. Swapped: {database} is backup #1 now", f"🟢 5. Started {SERVICE}; healthy again",
                 f"kept as database {database}__before_{number}"):
        assert step in text, (step, text)
    assert "Safety backup" not in text, "a swap keeps the old database instead of a safety dump"
    assert "eve@example.com" not in swarm_app_db.emails()
    assert swarm_app_db.query("SELECT count(*) FROM events")[0][0] == 500
    count, labels = replicas(SERVICE)
    assert count == 1 and "flowstate.replicas-before-stop" not in labels, "back to the replica count it had"
