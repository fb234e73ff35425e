"""/health against the live Compose test stack: what an operator sees when a service is down."""

import re

from tests.conftest import run


def test_a_healthy_stack_is_reported_healthy(make_runtime, live_stack):
    reply = run(make_runtime(live_stack, admins=["UA"]), "UA", "/health")
    lines = reply.text.splitlines()
    assert re.fullmatch(r"🟢 All \d+ checks healthy", lines[-1]), reply.text
    containers = next(line for line in lines if line.startswith("🟢 Containers: "))
    for service in ("backend", "frontend", "nginx", "postgres", "python-worker", "redis"):
        assert re.search(rf"\b{service} up [\w ]+ \(healthy\)", containers), containers
    checks = next(line for line in lines if line.startswith("🟢 Checks: "))
    assert re.search(r"postgres \d+ ms \(SELECT 1 ok, \d+/50 connections \(server 15\)\)", checks)
    assert re.search(r"redis \d+ ms \(PONG, [\d.]+[KM] used\)", checks)
    assert "backend via nginx" in checks


def test_a_stopped_service_is_named_first_with_its_state_and_exit_code(make_runtime, live_stack, stack_container):
    worker = stack_container("python-worker")
    worker.stop(timeout=1)
    reply = run(make_runtime(live_stack, admins=["UA"]), "UA", "/health")
    lines = reply.text.splitlines()
    assert re.match(r"🔴 \*python-worker\*: exited with code \d+ \d+ s ago", lines[0]), reply.text
    assert any(line.startswith("🔴 *python-worker via nginx*: answered HTTP 502") for line in lines)
    assert any(line.startswith("🔴 *python-worker*: connection refused") for line in lines)
    assert re.fullmatch(r"🔴 3 of \d+ checks failing", lines[-1])
    healthy = next(line for line in lines if line.startswith("🟢 Containers: "))
    assert "python-worker" not in healthy and "backend up " in healthy


def test_an_unhealthy_service_shows_its_healthcheck_and_last_error_line(make_runtime, live_stack, stack_container):
    import time

    backend = stack_container("backend")
    backend.exec_run("touch /tmp/fail")
    runtime = make_runtime(live_stack, admins=["UA"])
    deadline = time.monotonic() + 30
    while "running but unhealthy" not in (text := run(runtime, "UA", "/health").text):
        assert time.monotonic() < deadline, text
        time.sleep(1)
    line = next(line for line in text.splitlines() if line.startswith("🔴 *backend*: running but unhealthy"))
    assert '" 500 ' in line.split("last log:")[1], "the last error log line is the evidence"


def test_without_a_docker_engine_the_bot_says_so_and_keeps_serving(make_runtime, live_stack):
    runtime = make_runtime(live_stack, admins=["UA"], docker_url="unix:///tmp/no-docker-here.sock")
    reply = run(runtime, "UA", "/health")
    assert reply.text.splitlines()[0] == (
        "🔴 *docker*: The Docker engine is not reachable at unix:///tmp/no-docker-here.sock. Container checks were skipped."
    )
    assert "🟢 Checks: frontend" in reply.text
    assert "Commands you may run" in run(runtime, "UA", "/help").text
    stats = run(runtime, "UA", "/stats").text
    assert "🔴 Could not read it: The Docker engine is not reachable at unix:///tmp/no-docker-here.sock." in stats
    assert "flowstate:ai:jobs (list):" in stats, "metrics that need no Docker still answer"


def test_a_service_whose_health_check_is_still_starting_is_a_warning_not_a_failure(make_runtime, live_stack, stack_container):
    frontend = stack_container("frontend")
    frontend.restart(timeout=1)  # its first health check runs 2 s after the start
    reply = run(make_runtime(live_stack, admins=["UA"]), "UA", "/health")
    lines = reply.text.splitlines()
    assert any(re.fullmatch(r"🟠 \*frontend\*: up [\w ]+ \(health: starting\): its health check has not passed yet", line) for line in lines), reply.text
    assert not any(line.startswith("🔴 *frontend*:") for line in lines)


def test_a_post_mortem_says_which_service_was_down_and_from_when_to_when(make_runtime, live_stack, stack_container):
    import time

    runtime = make_runtime(live_stack, admins=["UA"])
    run(runtime, "UA", "/incident start Worker down", channel="C0OPS")
    worker = stack_container("python-worker")
    worker.stop(timeout=1)
    assert run(runtime, "UA", "/health", channel="C0OPS").healthy is False
    worker.start()
    deadline = time.monotonic() + 60
    while not (reply := run(runtime, "UA", "/health", channel="C0OPS")).healthy:
        assert time.monotonic() < deadline, reply.text
        time.sleep(1)
    run(runtime, "UA", "/incident resolve worker started again", channel="C0OPS")
    markdown = runtime.incidents.report(runtime.incidents.timeline.get(1), {})
    impact = markdown.split("## Impact\n\n")[1].split("\n\n")[0]
    assert re.search(r"^- Services down \(.*\): python-worker from \d\d:\d\d to \d\d:\d\d \(\d+ s\)$", impact, re.M), impact
    assert re.search(r"🔧 \*\*UA\*\* `/health` found [23] failing checks", markdown), "the look that found it is a key action"
    assert re.search(r"\d\d:\d\d UA `/health` succeeded", markdown), "the one that found all well is on the timeline, unmarked"
