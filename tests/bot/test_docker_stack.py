"""The Compose stack behind one interface, against the live test stack's Docker engine."""

import pytest

from bot.stack.compose import ComposeStack, DockerUnavailable, ServiceNotFound, cpu_percent, memory_used
from tests.stack_setting import port


def test_services_are_found_by_compose_labels(live_stack):
    stack = ComposeStack(live_stack.stack.compose_project)
    services = [service for service, _container in stack.containers()]
    assert services == ["backend", "frontend", "nginx", "postgres", "python-worker", "redis"]
    assert all(state.ok and state.health == "healthy" for state in stack.states())
    assert ComposeStack("no-such-project").states() == []


def test_stop_start_and_restart_a_service(live_stack, stack_container):
    stack = ComposeStack(live_stack.stack.compose_project)
    worker = stack_container("python-worker")
    assert stack.stop(["python-worker"], timeout=1) == [worker.name]
    (state,) = [s for s in stack.states() if s.service == "python-worker"]
    assert (state.ok, state.status) == (False, "exited") and state.finished_at is not None
    assert stack.start(["python-worker"]) == [worker.name]
    assert stack.restart(["python-worker"], timeout=1) == [worker.name]
    worker.reload()
    assert worker.status == "running"


def test_an_unknown_service_changes_nothing(live_stack):
    stack = ComposeStack(live_stack.stack.compose_project)
    with pytest.raises(ServiceNotFound, match=f"No container of api-gateway in Compose project {live_stack.stack.compose_project}."):
        stack.stop(["backend", "api-gateway"])
    assert all(state.status == "running" for state in stack.states())


def test_an_unreachable_engine_is_one_sentence():
    with pytest.raises(DockerUnavailable, match=r"^The Docker engine is not reachable at unix:///tmp/nothing\.sock\.$"):
        ComposeStack("flowstate-test", "unix:///tmp/nothing.sock").states()


def test_recent_logs_of_a_service(live_stack):
    import urllib.request

    for _ in range(6):
        urllib.request.urlopen(f"http://127.0.0.1:{port(58002)}/api/logged-by-test", timeout=5).read()
    lines = list(ComposeStack(live_stack.stack.compose_project).logs("backend", tail=5))
    assert len(lines) == 5
    assert all('"GET /api/logged-by-test HTTP/1.1" 200' in line for line in lines), lines


def test_cpu_and_memory_are_computed_as_docker_stats_does():
    sample = {
        "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000}, "system_cpu_usage": 20_000_000, "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 10_000_000},
        "memory_stats": {"usage": 300, "limit": 1000, "stats": {"inactive_file": 100}},
    }
    assert cpu_percent(sample) == pytest.approx(20.0)  # 1e6 / 1e7 * 2 cpus * 100
    assert memory_used(sample) == (200, 1000)
    v1 = {"memory_stats": {"usage": 300, "limit": 1000, "stats": {"total_inactive_file": 50}}}
    assert memory_used(v1) == (250, 1000)
