"""The edge's access log read through the real Docker engine: the whole window however many lines it holds,
and nothing from before it."""

import time
from datetime import timedelta

import docker
import pytest

from bot.stack.compose import PROJECT_LABEL, SERVICE_LABEL, ComposeStack
from bot.stack.health import EDGE_FIRST_TAIL, read_access_log
from bot.store.engine import utcnow

PROJECT = "flowstate-edgetest"
LINE = '127.0.0.1 - - [05/Dec/2026:08:00:00 +0000] "GET /api/items HTTP/1.1" {} 3 "-" "t"'


@pytest.fixture
def edge_container(live_stack):
    """A container of its own project that logs access lines, 1 of 5 a 502: before a pause, then after it."""
    client = docker.from_env(timeout=120)
    script = (
        f"i=0; while [ $i -lt 500 ]; do echo '{LINE.format(502)}'; i=$((i+1)); done; echo old-done; sleep 3; "
        f"i=0; while [ $i -lt 2600 ]; do echo '{LINE.format(200)}'; echo '{LINE.format(200)}'; echo '{LINE.format(200)}'; "
        f"echo '{LINE.format(200)}'; echo '{LINE.format(502)}'; i=$((i+5)); done; echo new-done; sleep 600"
    )
    container = client.containers.run("localhost/flowstate-test/busybox:current", ["sh", "-c", script], detach=True,
                                      network_mode="none", labels={PROJECT_LABEL: PROJECT, SERVICE_LABEL: "edge"})
    try:
        yield container
    finally:
        container.remove(force=True)
        client.close()


def test_a_window_busier_than_the_first_tail_is_read_whole_and_older_lines_are_not(edge_container):
    deadline = time.monotonic() + 30
    while b"old-done" not in edge_container.logs(tail=5):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.5)
    since = utcnow()
    while b"new-done" not in edge_container.logs(tail=5):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    stack = ComposeStack(PROJECT)
    try:
        count = read_access_log(stack, "edge", since - timedelta(milliseconds=200))
    finally:
        stack.close()
    assert 2600 > EDGE_FIRST_TAIL
    assert (count.total, count.errors, count.capped) == (2600, 520, False), "every line of the window, none of the 500 before it"
