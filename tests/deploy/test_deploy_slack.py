"""/rollback from Slack with the bot in a process of its own: the deploy script's output in the request's message,
updated in place; then the bot killed mid-deploy and started again: interrupted, and the channel told which
commit the repository was left on and what became of the script."""

from sqlalchemy import select

from bot.approvals.service import APPROVE
from bot.deploy.model import Release
from bot.jobs.model import Job
from bot.frame.roles import Role
from tests.bot.test_slack_approvals import CHANNEL, _request_message, _wait_message
from tests.conftest import BotProcess
from tests.deploy.conftest import wait_for


def _releases(store) -> list[Release]:
    with store.session() as session:
        return list(session.scalars(select(Release).order_by(Release.id)))


def test_the_bot_killed_mid_deploy_marks_it_interrupted_and_says_which_commit_is_checked_out(tmp_path, slack_double, world):
    world.checkout("v2")
    world.hold.write_text("20")  # the script holds this long before it recreates the frontend
    v1 = world.commits["v1"]
    # A short lease: where PID 1 reaps orphans late, the killed runner lingers as a zombie and only its lease tells it is gone.
    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", str(world.stack_file), FLOWSTATE_JOB_LEASE_SECONDS="5")
    sender = bot.start()
    store = bot.store
    try:
        bot.grant("U0OP", Role.operator)
        wait_for("the checked-out commit was not recorded at start", lambda: [r.kind for r in _releases(store)] == ["recorded-at-start"], 30)
        sender.slash("/rollback", "v1", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
        request = _request_message(slack_double)
        assert f"*To* `{v1[:10]}` First release" in str(request["blocks"])
        sender.click(APPROVE, "1", "U0ADMIN", CHANNEL, request["ts"], slack_double.response_url("approve"))
        # The script's output streams into the request's message, in place.
        message = _wait_message(slack_double, request["ts"], "holding for 20 s")
        assert "📜 deploy-production.sh output (last lines):" in str(message["blocks"])
        assert str(message["blocks"]).count("📜") == 1
        running = wait_for("the deploy never started", lambda: [r for r in _releases(store) if r.kind == "rollback" and r.pid])[0]
        bot.kill()

        sender = bot.start()
        told = slack_double.wait_for("chat.postMessage", timeout=90, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        text = told[0].params["text"]
        assert f"`/rollback {v1} {world.commits['v2']}`" in text, text
        assert f"The repository {world.repo} has {v1[:10]} (First release) checked out." in text, text
        # Where the script outlives the bot (its own session), the new bot waits for it; where the service manager or
        # the sandbox kills the orphan, it has ended. Either way the message says which.
        assert (f"Its deploy script (pid {running.pid}) was still running and has ended." in text
                or f"Its deploy script (pid {running.pid}) had ended." in text), text
        release = _releases(store)[-1]
        assert f"Release #{running.id} (rollback of {v1[:10]}) is marked interrupted, health {release.health}." in text, text
        _wait_message(slack_double, request["ts"], "⚠️ Interrupted")
        with store.session() as session:
            assert session.get(Job, 1).state == "interrupted"
        assert (release.id, release.finished_at is not None, release.note) == (running.id, True, "interrupted: the bot stopped during this deploy")
        assert "holding for 20 s" in release.output and "bot settings seen: ." in release.output, "its output, read from its file"
        assert not list((tmp_path / "home" / "deploys").iterdir()), "the output file went into the ledger"
    finally:
        bot.close()
