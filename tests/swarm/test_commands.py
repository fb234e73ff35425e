"""/health, /restart SERVICE and /logs on the Swarm test world (tests/swarm): the same commands as on Compose, on a
real single-node swarm. A service a test adds to stack `fs` (a task that keeps failing, one whose restart cannot
converge) is removed after it; tests/swarm/up's `stack deploy --prune` would remove a leftover."""

from __future__ import annotations

import re

import docker
import pytest
from docker.types import RestartPolicy

from tests.commands.test_health_live import quiet_edge
from tests.commands.test_users_live import run_approved
from tests.conftest import run
from tests.deploy.conftest import wait_for

SOCKET = "unix:///run/fs-swarm/docker.sock"
BUSYBOX = "localhost/flowstate-test/busybox:current"


@pytest.fixture
def swarm_client(swarm_stack):
    client = docker.DockerClient(base_url=SOCKET, timeout=60)
    yield client
    client.close()


@pytest.fixture
def add_service(swarm_client):
    """A service of stack fs that the test makes (busybox, host network, restarted 1 s after it fails); removed after."""
    made = []

    def add(name: str, script: str, **options):
        service = swarm_client.services.create(
            BUSYBOX, ["sh", "-c", script], name=f"fs_{name}", labels={"com.docker.stack.namespace": "fs"}, networks=["host"],
            restart_policy=RestartPolicy(condition="any", delay=1_000_000_000), **options)
        made.append(service)
        return service

    yield add
    for service in made:
        service.remove()
    for service in made:  # until its tasks' containers are gone (api.containers: no inspect of one that goes meanwhile)
        wait_for(f"the containers of {service.name} removed",
                 lambda: not swarm_client.api.containers(all=True, filters={"label": f"com.docker.swarm.service.id={service.id}"}))


def updated(service, **changes) -> None:
    """service.update() at the service's current version: docker-py sends the version it read when it made the object,
    and the swarm moves it on after a create (its allocator), which the engine refuses as "update out of sequence"."""
    service.reload()
    service.update(**changes)


def in_time_order(stamp: str) -> str:
    """An engine's RFC 3339 time, its fraction padded to nanoseconds (the engine trims its zeros): sortable as text."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{whole}.{fraction.ljust(9, '0')}"


def running(client, name: str) -> int:
    return sum(1 for t in client.services.get(f"fs_{name}").tasks() if t["Status"]["State"] == "running" and t["DesiredState"] == "running")


def test_health_of_a_healthy_swarm_stack(make_runtime, swarm_stack):
    # A short edge window: a restore's or a restart's 502s at nginx (other tests') are not this test's.
    reply = run(make_runtime(quiet_edge(swarm_stack), admins=["UA"]), "UA", "/health")
    lines = reply.text.splitlines()
    assert re.fullmatch(r"🟢 All \d+ checks healthy", lines[-1]), reply.text
    containers = next(line for line in lines if line.startswith("🟢 Containers: "))
    for service in ("backend", "frontend", "nginx", "postgres", "python-worker", "redis"):
        assert f"{service} 1/1 task running (healthy)" in containers, containers
    checks = next(line for line in lines if line.startswith("🟢 Checks: "))
    assert re.search(r"postgres \d+ ms \(SELECT 1 ok, \d+ of 50 connections in use", checks), checks


def test_a_task_that_keeps_failing_is_reported_with_its_error_and_last_log_line(make_runtime, swarm_stack, add_service, swarm_client):
    service = add_service("broken", "echo 'broken: cannot open /etc/flowstate/app.conf: no such file' >&2; exit 3")
    wait_for("a failed task of fs_broken", lambda: any(t["Status"]["State"] == "failed" for t in service.tasks()))
    reply = run(make_runtime(swarm_stack, admins=["UA"]), "UA", "/health")
    line = next((line for line in reply.text.splitlines() if line.startswith("🔴 *broken*: ")), None)
    assert line is not None, reply.text
    assert re.match(r"🔴 \*broken\*: 0/1 task running; (1 starting; )?task fs_broken\.1 failed \d+ s ago: task: non-zero exit \(3\)", line), line
    assert "cannot open /etc/flowstate/app.conf" in line, "the task's last log line is the evidence"
    healthy = next(line for line in reply.text.splitlines() if line.startswith("🟢 Containers: "))
    assert "backend 1/1 task running (healthy)" in healthy


def test_restart_of_a_service_replaces_its_task_and_waits_until_converged(make_runtime, swarm_stack, swarm_client):
    before = {t["ID"] for t in swarm_client.services.get("fs_frontend").tasks() if t["DesiredState"] == "running"}
    said = run_approved(make_runtime(swarm_stack, admins=["UADMIN"]), "/restart frontend")
    assert re.search(r"🟢 \*frontend\* is healthy again after [\d.]+ s; every check held for 2 s", said), said
    after = [t for t in swarm_client.services.get("fs_frontend").tasks() if t["DesiredState"] == "running"]
    assert len(after) == 1 and after[0]["ID"] not in before, "a new task runs in place of the old one"
    assert after[0]["Status"]["State"] == "running"


def test_a_restart_that_cannot_converge_is_reported_with_the_failed_task_not_waited_out(make_runtime, swarm_stack, add_service,
                                                                                         swarm_client, tmp_path):
    flag = tmp_path / "flag"
    flag.mkdir()
    (flag / "ok").write_text("")
    from docker.types import Mount

    add_service("flaky", "test -e /flag/ok || { echo 'flaky: /flag/ok is gone' >&2; exit 4; }; exec sleep 100000",
                mounts=[Mount("/flag", str(flag), type="bind", read_only=True)])
    wait_for("fs_flaky running", lambda: running(swarm_client, "flaky") == 1)
    (flag / "ok").unlink()  # the next task of the service fails at once
    runtime = make_runtime(swarm_stack.model_copy(update={"stack": swarm_stack.stack.model_copy(update={"healthy_timeout": 600.0})}),
                           admins=["UADMIN"])
    said = run_approved(runtime, "/restart flaky")
    assert said.startswith("Restart failed\n🔴 *flaky*: fs_flaky did not converge (Swarm: update paused"), said
    assert re.search(r"task fs_flaky\.1 failed \d+ s ago: task: non-zero exit \(4\)", said), said
    assert "within 600 s" not in said, "reported as soon as Swarm gave up, not after the timeout"


def test_logs_of_a_service_come_from_its_tasks_merged_by_time(make_runtime, swarm_stack, swarm_client):
    runtime = make_runtime(swarm_stack, admins=["UADMIN"])
    said = run_approved(runtime, "/restart python-worker")  # a second task: the old one's lines and the new one's
    assert "is healthy again" in said, said
    reply = run(runtime, "UOP", "/logs python-worker --since 1h")
    lines = [line for line in reply.text.splitlines() if "python-worker: listening on 127.0.0.1:57003" in line]
    assert len(lines) >= 2, reply.text
    stamps = [in_time_order(line.split(" ", 1)[0]) for line in reply.text.splitlines()[1:] if line[:1].isdigit()]
    assert stamps == sorted(stamps), "merged by time"


def test_an_unknown_service_is_refused_with_the_stacks_services(make_runtime, swarm_stack):
    reply = run(make_runtime(swarm_stack, admins=["UADMIN"]), "UADMIN", "/logs nosuch")
    assert reply.text == "nosuch is not a service of fs; the services are backend, frontend, nginx, postgres, python-worker, redis."


def test_stats_samples_the_tasks_containers(make_runtime, swarm_stack):
    reply = run(make_runtime(swarm_stack, admins=["UADMIN"]), "UADMIN", "/stats")
    text = reply.text
    for service in ("backend", "frontend", "nginx", "postgres", "python-worker", "redis"):
        limit = "1.0 GiB" if service == "postgres" else "256.0 MiB"  # the stack file's deploy limits
        assert re.search(rf"^{service}: CPU [\d.]+%, memory [\d.]+ [KMG]iB / {limit} \([\d.]+%\)$", text, re.M), (service, text)
    assert "not sampled" not in text, "one node: every task's container is on the engine the bot reaches"


def test_the_spec_swarm_kept_before_the_last_update_is_told_without_values(swarm_stack, add_service, swarm_client):
    from bot.stack.swarm import SwarmStack

    service = add_service("specs", "exec sleep 100000", env=["MODE=one", "TOKEN=first-secret"])
    wait_for("fs_specs running", lambda: running(swarm_client, "specs") == 1)
    updated(service, env=["MODE=two", "TOKEN=second-secret"])
    runtime = SwarmStack("fs", SOCKET)
    try:
        kept = runtime.previous_specs()
    finally:
        runtime.close()
    assert kept["specs"] == "other values of 2 environment variables (MODE, TOKEN)"


def test_a_services_environment_is_read_from_its_spec(swarm_stack, add_service, swarm_client):
    from bot.stack.swarm import SwarmStack

    service = add_service("envs", "exec sleep 100000", env=["MODE=one"])
    wait_for("fs_envs running", lambda: running(swarm_client, "envs") == 1)
    updated(service, env=["MODE=two"])
    wait_for("fs_envs updated", lambda: running(swarm_client, "envs") == 1
             and all(t["Spec"]["ContainerSpec"].get("Env") == ["MODE=two"] for t in service.tasks() if t["DesiredState"] == "running"))
    runtime = SwarmStack("fs", SOCKET)
    try:
        environments = runtime.environments()
    finally:
        runtime.close()
    assert environments["envs"] == {"MODE": "two"}, "the spec's, not the old task container's"
    assert environments["frontend"]["SERVICE_NAME"] == "frontend"


def test_logs_of_two_replicas_are_merged_by_time_bounded_and_redacted(make_runtime, swarm_stack, add_service, swarm_client):
    from docker.types import ServiceMode

    add_service("noisy", 'i=0; while true; do i=$((i+1)); echo "slot $SLOT GET /api/items/$i password=hunter2"; sleep 0.05; done',
                env=["SLOT={{.Task.Slot}}"], mode=ServiceMode("replicated", replicas=2))
    wait_for("both replicas of fs_noisy running", lambda: running(swarm_client, "noisy") == 2)
    runtime = make_runtime(swarm_stack, admins=["UADMIN"])
    from bot.frame.roles import Role
    from tests.conftest import grant

    grant(runtime, "UOP", Role.operator)
    stamped = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) slot ([12]) GET /api/items/\d+ password=\*\*\*$")
    wait_for("40 lines of fs_noisy", lambda: len([line for line in run(runtime, "UOP", "/logs noisy --tail 40").text.splitlines()
                                                   if stamped.match(line)]) == 40)
    reply = run(runtime, "UOP", "/logs noisy --tail 40")
    assert reply.text.startswith("40 log lines of noisy since 15m (the last 40)"), reply.text[:200]
    matches = [stamped.match(line) for line in reply.text.splitlines()[1:] if line.strip()]
    assert all(matches), reply.text
    assert {m.group(2) for m in matches} == {"1", "2"}, "the lines of both tasks"
    stamps = [in_time_order(m.group(1)) for m in matches]
    assert stamps == sorted(stamps), "merged by time"
    assert "hunter2" not in reply.text
