"""/logs on a stack in memory (tests/fakes.py): which service, which lines, what is hidden; no Docker needed.
Reading a real container's log is tests/deploy/test_logs_live.py."""

from __future__ import annotations

import pytest

from bot.frame.roles import Role
from tests.conftest import grant, run
from tests.fakes import FakeStack


@pytest.fixture
def runtime(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    runtime.stack = FakeStack(["backend", "frontend"])
    grant(runtime, "UOP", Role.operator)
    yield runtime
    runtime.stack.pool.shutdown(wait=False)


def test_an_unknown_service_is_refused_with_the_known_ones(runtime):
    assert run(runtime, "UOP", "/logs wat").text == "wat is not a service of fake; the services are backend, frontend."


def test_a_services_lines_are_shown_with_secrets_redacted_and_grep_keeps_only_matching_lines(runtime):
    runtime.stack.fake.log_lines["backend"] = [
        "2026-12-05T10:00:00Z GET /api/items 200",
        "2026-12-05T10:00:01Z connecting with password=hunter2secret",
        "2026-12-05T10:00:02Z GET /api/items 500",
    ]
    shown = run(runtime, "UOP", "/logs backend").text
    assert shown.startswith("3 log lines of backend since 15m\n"), shown
    assert "hunter2secret" not in shown and "GET /api/items 500" in shown
    filtered = run(runtime, "UOP", "/logs backend --grep 500").text
    assert filtered == "1 log line of backend since 15m containing 500\n2026-12-05T10:00:02Z GET /api/items 500"
    assert run(runtime, "UOP", "/logs backend --grep nothing-like-it").text == (
        "No log lines of backend since 15m containing nothing-like-it (3 lines read)."
    )


def test_long_logs_go_to_the_requester_alone_as_a_file_in_a_direct_message(runtime, slack_double):
    """Through the frame's direct_file port (no Slack adapter in the command): the file, in the requester's direct
    message, redacted; and Slack's refusal said in one sentence, nothing uploaded."""
    from slack_sdk import WebClient

    from bot.frame.registry import Invocation

    runtime.slack = WebClient(token="xoxb-test-token", base_url=slack_double.api_url)
    runtime.stack.fake.log_lines["backend"] = [f"2026-12-05T10:00:{i % 60:02d}Z GET /api/items/{i} 200 password=hunter2secret" for i in range(120)]
    reply = runtime.pipeline.dispatch(Invocation("UOP", "logs", "backend", "C0OPS", "slack"))
    assert reply.text == "120 log lines of backend since 15m: sent to you alone in a direct message as backend-logs.txt.", reply.text
    (opened,) = slack_double.calls_to("conversations.open")
    assert opened.params["users"] == "UOP"
    (upload,) = [u for u in slack_double.uploads() if u.completed]
    assert upload.filename == "backend-logs.txt" and upload.channels == [slack_double.dm_channel("UOP")]
    content = upload.content.decode()
    assert len(content.splitlines()) == 120 and "GET /api/items/119 200" in content and "hunter2secret" not in content
    assert not slack_double.messages("C0OPS"), "nothing of the logs reaches the channel"

    slack_double.fail_next("conversations.open", "missing_scope")
    refused = runtime.pipeline.dispatch(Invocation("UOP", "logs", "backend", "C0OPS", "slack"))
    assert refused.text == ("The logs are too long for a message and sending them to you failed (missing_scope); "
                            "narrow them with --grep or --tail.")
    assert len([u for u in slack_double.uploads() if u.completed]) == 1, "nothing more was uploaded"
