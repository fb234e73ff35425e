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
