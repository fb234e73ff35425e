"""/logs SERVICE on a noisy service of the tests' own Compose project: bounded, filtered by plain text, redacted;
long output goes to the requester alone, as a file in a direct message (Slack's external upload flow)."""

import re
import subprocess

import pytest

from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.runtime import Runtime
from bot.adapters.slack.client import web_client
from tests.conftest import grant, make_settings, run
from tests.deploy.conftest import PROJECT, wait_for

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z ")


@pytest.fixture
def noisy(world):
    subprocess.run(["docker-compose", "-p", PROJECT, "-f", "docker-compose.yml", "up", "-d", "noisy"], cwd=world.repo,
                   check=True, capture_output=True)
    return world


def _runtime(make_runtime, world):
    runtime = make_runtime(world.stack())
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UVIEW", Role.viewer)
    return runtime


def _lines(reply) -> list[str]:
    return [line for line in reply.text.splitlines() if LINE.match(line)]


def _written(runtime, count: int) -> None:
    """Until the noisy service has written at least `count` lines (it writes about 20 a second)."""
    wait_for(f"the noisy service has not written {count} lines", lambda: len(_lines(run(runtime, "UOP", f"/logs noisy --tail {count}", None))) == count, 60)


def test_logs_are_the_last_lines_with_timestamps_bounded_and_redacted(make_runtime, noisy):
    runtime = _runtime(make_runtime, noisy)
    _written(runtime, 50)
    reply = run(runtime, "UOP", "/logs noisy --tail 50")
    lines = _lines(reply)
    assert reply.text.startswith("50 log lines of noisy since 15m (the last 50)"), reply.text[:200]
    assert len(lines) == 50 and any("GET /api/items/" in line for line in lines)
    assert "hunter2" not in reply.text and "password=***" in reply.text
    denied = run(runtime, "UVIEW", "/logs noisy")
    assert "operator" in denied.text and not _lines(denied), denied.text


def test_grep_keeps_only_the_lines_containing_the_text(make_runtime, noisy):
    runtime = _runtime(make_runtime, noisy)
    _written(runtime, 50)  # an ERROR line every ten
    reply = run(runtime, "UOP", '/logs noisy --grep "ERROR request" --tail 5 --since 10m')
    lines = _lines(reply)
    assert 1 <= len(lines) <= 5 and all("ERROR request" in line and "password=***" in line for line in lines), reply.text
    assert "GET /api" not in reply.text
    plural = "" if len(lines) == 1 else "s"  # 1 log line, 5 log lines
    assert reply.text.startswith(f"{len(lines)} log line{plural} of noisy since 10m containing ERROR request")
    # Filtering sees the redacted text: the secret cannot be probed for.
    assert run(runtime, "UOP", "/logs noisy --grep hunter2").text.startswith("No log lines of noisy since 15m containing hunter2")
    # A regex is plain text here, matching nothing.
    assert run(runtime, "UOP", "/logs noisy --grep (a+)+$").text.startswith("No log lines")


@pytest.mark.parametrize(
    "text, said",
    [
        ("nosuch", f"nosuch is not a service of {PROJECT}; the services are "),
        ("noisy --tail 0", "--tail is a number of lines from 1 to 2000"),
        ("noisy --tail 99999999999999999999", "--tail is a number of lines from 1 to 2000"),
        ("noisy --since yesterday", "'yesterday' is not a time"),
        ("noisy --follow 1", "'--follow' is not an option"),
        ("noisy --grep", "--grep takes one value, once"),
        ("noisy --tail 5 --tail 6", "--tail takes one value, once"),
    ],
)
def test_bad_log_requests_are_refused_in_one_sentence(make_runtime, noisy, text, said):
    reply = run(_runtime(make_runtime, noisy), "UOP", f"/logs {text}")
    assert said in reply.text and "Traceback" not in reply.text, reply.text


def test_long_logs_go_to_the_requester_alone_in_a_direct_message(tmp_path, slack_double, noisy):
    """Logs can hold what no redactor knows: a file in the channel would show them to everyone in it."""
    settings = make_settings(tmp_path, slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test-token")
    runtime = Runtime.build(settings, noisy.stack(), slack=web_client(settings))
    try:
        grant(runtime, "UOP", Role.operator)
        _written(runtime, 300)
        reply = runtime.pipeline.dispatch(Invocation("UOP", "logs", "noisy --tail 300", "C0OPS", "slack"))
        assert reply.text == "300 log lines of noisy since 15m (the last 300): sent to you alone in a direct message as noisy-logs.txt."
        assert not reply.in_channel
        (opened,) = slack_double.calls_to("conversations.open")
        assert opened.params["users"] == "UOP"
        (upload,) = [u for u in slack_double.uploads() if u.completed]
        content = upload.content.decode()
        assert upload.filename == "noisy-logs.txt" and upload.channels == [slack_double.dm_channel("UOP")]
        assert not slack_double.messages("C0OPS"), "nothing of the logs reaches the channel"
        assert len(content.splitlines()) == 300 and all(LINE.match(line) for line in content.splitlines())
        assert "hunter2" not in content
        slack_double.fail_next("conversations.open", "missing_scope")  # installed before /logs needed im:write
        refused = runtime.pipeline.dispatch(Invocation("UOP", "logs", "noisy --tail 300", "C0OPS", "slack"))
        assert refused.text == ("The logs are too long for a message and sending them to you failed (missing_scope); "
                                "narrow them with --grep or --tail.")
        assert len([u for u in slack_double.uploads() if u.completed]) == 1, "nothing was uploaded anywhere"
    finally:
        runtime.close()
