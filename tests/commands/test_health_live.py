"""/health against the live Compose test stack: what an operator sees when a service is down."""

import re
import time
import urllib.error
import urllib.request

from bot.frame.blocks import to_text
from bot.frame.config import StackConfig, StackSection
from bot.stack.health import gate
from tests.conftest import run
from tests import stack_setting
from tests.stack_setting import port

EDGE = f"http://127.0.0.1:{port(58080)}"


def report(reply) -> str:
    """A /health report without the change card a failing one ends with (tests/changes)."""
    return reply.text.split("\n\nWhat changed in ", 1)[0]


def through_nginx(path: str, count: int, agent: str = "flowstate-tests") -> list[int]:
    """Requests as users make them, through the edge; their statuses."""
    statuses = []
    for _ in range(count):
        request = urllib.request.Request(f"{EDGE}{path}", headers={"User-Agent": agent})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
    return statuses


def quiet_edge(live_stack):
    """The stack with an edge window of a few seconds: other tests put errors through nginx on purpose, and a test
    that is not about the edge must not see them."""
    return live_stack.model_copy(update={"edge": live_stack.edge.model_copy(update={"window_minutes": 0.1})})


def test_a_healthy_stack_is_reported_healthy(make_runtime, stack_of_each_runtime):
    reply = run(make_runtime(quiet_edge(stack_of_each_runtime), admins=["UA"]), "UA", "/health")
    lines = reply.text.splitlines()
    assert re.fullmatch(r"🟢 All \d+ checks healthy", lines[-1]), reply.text
    containers = next(line for line in lines if line.startswith("🟢 Containers: "))
    # Compose: the container's `docker ps` status; Swarm: the service's tasks running against desired.
    running = r"1/1 task running" if stack_of_each_runtime.stack.runtime == "swarm" else r"up [\w ]+"
    for service in ("backend", "frontend", "nginx", "postgres", "python-worker", "redis"):
        assert re.search(rf"\b{service} {running} \(healthy\)", containers), containers
    checks = next(line for line in lines if line.startswith("🟢 Checks: "))
    assert re.search(r"postgres \d+ ms \(SELECT 1 ok, \d+ of 50 connections in use \(max_connections\), PostgreSQL 15\)", checks)
    assert re.search(r"redis \d+ ms \(PONG, [\d.]+[KM] used\)", checks)
    assert "backend via nginx" in checks


def test_a_stopped_service_is_named_first_with_its_state_and_exit_code(make_runtime, live_stack, stack_container):
    worker = stack_container("python-worker")
    worker.stop(timeout=1)
    reply = run(make_runtime(quiet_edge(live_stack), admins=["UA"]), "UA", "/health")
    lines = report(reply).splitlines()
    assert re.match(r"🔴 \*python-worker\*: exited with code \d+, \d+ s ago", lines[0]), reply.text
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
    assert '" 500 ' in line.split("last error line:")[1], "the last error log line is the evidence"


def test_without_a_docker_engine_the_bot_says_so_and_keeps_serving(make_runtime, live_stack):
    runtime = make_runtime(live_stack, admins=["UA"], docker_url="unix:///tmp/no-docker-here.sock")
    reply = run(runtime, "UA", "/health")
    lines = reply.text.splitlines()
    assert lines[0] == "🔴 *nginx 5xx rate*: its access log could not be read: The Docker engine is not reachable at unix:///tmp/no-docker-here.sock."
    assert "🔴 *docker*: The Docker engine is not reachable at unix:///tmp/no-docker-here.sock. Container checks were skipped." in lines
    assert "🟢 Checks: frontend" in reply.text
    assert "Commands you may run" in run(runtime, "UA", "/help").text
    stats = run(runtime, "UA", "/stats").text
    assert "🔴 Could not read it: The Docker engine is not reachable at unix:///tmp/no-docker-here.sock." in stats
    assert "flowstate:ai:jobs (list):" in stats, "metrics that need no Docker still answer"


def test_a_service_whose_health_check_is_still_starting_is_a_warning_not_a_failure(make_runtime, live_stack, stack_container):
    frontend = stack_container("frontend")
    frontend.restart(timeout=1)  # its first health check runs 2 s after the start
    reply = run(make_runtime(quiet_edge(live_stack), admins=["UA"]), "UA", "/health")
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


def test_api_errors_behind_a_healthy_backend_turn_health_red_naming_the_edge_rate_first(make_runtime, live_stack, stack_container):
    stack_container("backend").exec_run("touch /tmp/fail-api")  # every API call answers 500; the container stays healthy
    # Enough failing calls to pass the critical rate whatever else the window holds (earlier tests' requests).
    assert through_nginx("/api/items", 400) == [500] * 400
    edge = live_stack.edge.model_copy(update={"runbook": "https://wiki.example/runbooks/edge-errors"})
    reply = run(make_runtime(live_stack.model_copy(update={"edge": edge}), admins=["UA"]), "UA", "/health")
    lines = report(reply).splitlines()
    assert re.match(
        r"🔴 \*nginx 5xx rate\*: [\d,]+ of [\d,]+ requests answered 5xx over 5 min: \d+\.\d% \(warning 5%, critical 25%\) "
        r"<https://wiki\.example/runbooks/edge-errors\|runbook>$", lines[0]), reply.text
    assert "critical 25%) runbook (https://wiki.example/runbooks/edge-errors)" in to_text(reply), "a link the console shows as text"
    assert lines[1] == "→ next: /logs nginx --since 15m · /restart nginx"
    assert re.fullmatch(r"🔴 1 of \d+ checks failing", lines[-1]) and reply.healthy is False
    assert re.search(r"\bbackend up [\w ]+ \(healthy\)", reply.text), "the backend's container is healthy: only the edge tells"


def test_a_mistyped_compose_project_is_red_and_lists_the_projects_the_engine_has(make_runtime, live_stack):
    typo = StackConfig(stack=StackSection(compose_project="flowstate-tset"))
    reply = run(make_runtime(typo, admins=["UA"]), "UA", "/health")
    first, *_rest, verdict = report(reply).splitlines()
    assert first.startswith("🔴 *compose project*: no container at all in Compose project flowstate-tset; the engine has these projects: ")
    assert stack_setting.NAME in first.split("these projects: ")[1].split(", ")
    assert verdict == "🔴 1 of 1 checks failing" and reply.healthy is False


def test_a_stack_file_with_nothing_to_check_is_never_all_healthy(make_runtime, live_stack):
    reply = run(make_runtime(StackConfig(), admins=["UA"]), "UA", "/health")
    assert reply.text.startswith("No services to check:") and reply.healthy is None


def test_a_hostile_user_agent_in_a_failing_services_log_stays_text(make_runtime, live_stack, stack_container):
    hostile = "`<!channel> <https://evil.example|the on-call console>`"
    stack_container("backend").exec_run("touch /tmp/fail-api")
    assert through_nginx("/api/items", 1, agent=hostile) == [500]
    stack_container("nginx").stop(timeout=2)  # the edge itself is down: its last error line is the evidence
    reply = run(make_runtime(live_stack, admins=["UA"]), "UA", "/health")
    line = next(line for line in reply.text.splitlines() if line.startswith("🔴 *nginx*: exited"))
    evidence = line.split("last error line: ")[1]
    assert evidence.startswith("`") and evidence.endswith("`") and evidence.count("`") == 2, "one code span that nothing closes"
    assert "ʼ&lt;!channel&gt; &lt;https://evil.example|the on-call console&gt;ʼ" in evidence
    posted = str(reply.blocks)
    assert "<!channel>" not in posted and "<https://evil" not in posted
    assert hostile.replace("`", "ʼ") in to_text(reply), "the console shows the line as it was, backticks aside"


def test_the_gate_fails_as_soon_as_a_service_exits_naming_it(make_runtime, live_stack, stack_container):
    import threading

    patient = live_stack.model_copy(update={"stack": live_stack.stack.model_copy(update={"stable_seconds": 60, "healthy_timeout": 300})})
    runtime = make_runtime(patient, admins=["UA"])
    said: list[str] = []
    outcome = []
    gating = threading.Thread(target=lambda: outcome.append(gate(runtime.stack, said.append)))
    gating.start()
    time.sleep(3)
    stack_container("python-worker").stop(timeout=1)
    gating.join(timeout=120)
    (result,) = outcome
    assert not result.ok
    assert result.failing[0].name == "python-worker" and result.failing[0].fatal, result.line
    assert re.match(r"🔴 Not healthy after \d+ s: python-worker: exited with code \d+", result.line), result.line


def test_a_restart_is_judged_on_what_it_touches_not_failed_by_a_service_down_before_it(make_runtime, live_stack, stack_container):
    from tests.commands.test_users_live import run_approved

    stack_container("python-worker").stop(timeout=1)  # down before the request, and not part of it
    text = run_approved(make_runtime(live_stack, admins=["UA"]), "/restart frontend")
    assert text.startswith("Restarted\n🟢 *frontend* is healthy again after"), text
    assert re.search(r"\(failing before and not counted: [^)]*\bpython-worker\b", text), text


def test_several_services_restart_in_turn_each_not_failed_by_the_ones_still_to_come(make_runtime, live_stack, stack_container):
    from tests.commands.test_users_live import run_approved

    stack_container("frontend").stop(timeout=1)
    stack_container("python-worker").stop(timeout=1)
    text = run_approved(make_runtime(live_stack, admins=["UA"]), "/restart frontend python-worker")
    lines = text.splitlines()
    assert lines[0] == "Restarted", text
    assert lines[1].startswith("🟢 *frontend* is healthy again") and lines[2].startswith("🟢 *python-worker* is healthy again"), text
