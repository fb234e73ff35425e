"""The one request pipeline: a broken step refuses (never passes), and /help asks the very steps a run passes."""

import logging

from bot.frame.registry import Invocation, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry
from tests.bot.test_dispatcher import _with_command
from tests.conftest import grant, run


def _outcomes(runtime) -> list[tuple[str, str]]:
    with runtime.store.session() as session:
        return [(row.command, row.outcome) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


def test_a_step_that_breaks_refuses_with_an_error_id_and_nothing_runs(make_runtime, caplog):
    runtime = make_runtime(admins=["UA"])
    ran = []
    _with_command(runtime, "touch", lambda ctx, args: ran.append(ctx.invocation.user_id) or Reply("touched"))

    def broken_check(request, next):
        raise RuntimeError("the check's own bug")

    steps = runtime.pipeline.steps
    steps[steps.index(runtime.pipeline.check)] = broken_check
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UA", "/touch")
    assert reply.text.startswith("/touch failed inside the bot (error id ") and "RuntimeError" not in reply.text
    error_id = reply.text.split("error id ")[1].split(")")[0]
    assert error_id in caplog.text, "the same id is in the log"
    assert ran == [] and ("touch", "allowed") not in _outcomes(runtime), "a broken step is a refusal, never a pass"


def test_help_asks_the_authorize_step_in_a_dry_run_and_says_what_a_run_would_say(make_runtime):
    runtime = make_runtime(admins=["UA"])
    grant(runtime, "UV", Role.viewer)
    before = _outcomes(runtime)
    assert runtime.pipeline.may_run(Invocation("UV", "health"), Role.viewer) is None
    refusal = runtime.pipeline.may_run(Invocation("UV", "role"), Role.viewer)
    assert _outcomes(runtime) == before, "a dry run writes no audit row"
    assert refusal == run(runtime, "UV", "/role list").text == "/role needs the admin role and you have viewer."
    assert run(runtime, "UV", "/help role").text == refusal
    listed = run(runtime, "UV", "/help").text
    assert "`/health" in listed and "`/role" not in listed
    # /whoami lists what the same dry run allows, and nothing it refuses.
    allowed = run(runtime, "UV", "/whoami").text.removesuffix(".").split("; you may run ")[1].split(", ")
    assert "/health" in allowed and "/role" not in allowed, allowed
    assert all(runtime.pipeline.may_run(Invocation("UV", name.lstrip("/")), Role.viewer) is None for name in allowed)


def test_an_approved_change_run_by_a_runner_shows_its_outcome_on_its_message_redacted_once(make_runtime, slack_double):
    from bot.adapters.slack.client import SlackNotifier, web_client
    from bot.frame.registry import Command, NoArgs
    from bot.jobs.model import ChangeLock, Job
    from bot.jobs.runner import Runner

    runtime = make_runtime(admins=["UA"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test-token")
    client = web_client(runtime.settings)
    runtime.notifier = SlackNotifier(client)
    flip = Command("flip", "Flip.", "/flip", NoArgs, Role.operator, lambda ctx, args: Reply("flipped with xoxb-123-456-abc"), True, True)
    runtime.commands = {**runtime.commands, "flip": flip}
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    asked = runtime.pipeline.dispatch(Invocation("UOP", "flip", "", "C0OPS", "slack"))
    assert asked.text.startswith("Request #1: `/flip` needs a second person's approval")
    approved = runtime.pipeline.dispatch(Invocation("UAPP", "approvals", "approve 1", "C0OPS", "slack"))
    assert approved.text == "You approved request #1; it runs now."
    runner = Runner(runtime, client)
    runner.free.acquire()
    runner._process(runtime.jobs.claim_next(runtime.holder, source="slack"))
    (message,) = [m for m in slack_double.messages("C0OPS") if m["text"].startswith("Request #1: ")]
    assert "✅ Done (approved by <@UAPP>)" in str(message["blocks"]) and "flipped with" in str(message["blocks"])
    sent = str([call.params for call in slack_double.calls_to("chat.update") + slack_double.calls_to("chat.postMessage")])
    assert "xoxb-123-456-abc" not in sent, "what reaches Slack is redacted"
    with runtime.store.session() as session:
        assert session.get(Job, 1).state == "succeeded" and session.query(ChangeLock).count() == 0
