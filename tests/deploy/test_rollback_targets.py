"""Where /rollback REF may go: a commit released on this stack before, or an ancestor of the commit checked out.
Anything else (a feature branch nobody released, a commit off to the side) is refused in one sentence with no request
made, unless asked for with --any-commit; then the request says so in red, in its Slack message too."""

import re

from sqlalchemy import select

from bot.frame.blocks import to_text
from bot.adapters.console import run_approved
from bot.jobs.model import Job
from bot.frame.roles import Role
from tests.bot.test_slack_approvals import CHANNEL, _request_message
from tests.conftest import grant, run
from tests.deploy.conftest import commit, git


def _runtime(make_runtime, world):
    runtime = make_runtime(world.stack())
    grant(runtime, "UOP", Role.operator)
    return runtime


def _jobs(runtime) -> list[Job]:
    with runtime.store.session() as session:
        return list(session.scalars(select(Job)))


def _refusal(target: str, head: str, ref: str) -> str:
    return (
        f"{target[:10]} has never been released on this stack and is not an ancestor of {head[:10]}, the commit checked out; "
        f"/releases lists the released ones, and /rollback {ref} --any-commit asks for it anyway."
    )


def _request(runtime, number: int) -> str:
    return to_text(runtime.approvals.render(runtime.jobs.get(number), "waiting"))


def test_an_unreleased_feature_branch_is_refused_in_one_sentence_and_nothing_is_asked(make_runtime, repo_world):
    repo_world.checkout("v3")
    runtime = _runtime(make_runtime, repo_world)
    reply = run(runtime, "UOP", "/rollback broken")
    assert reply.text == _refusal(repo_world.commits["broken"], repo_world.commits["v3"], "broken"), reply.text
    assert _jobs(runtime) == []


def test_a_commit_that_is_not_an_ancestor_of_the_checkout_is_refused(make_runtime, repo_world):
    repo = repo_world.repo
    git(repo, "checkout", "-q", "-b", "cache-experiment", repo_world.commits["v1"])
    side = commit(repo, "Try a cache", {"www/health": "version cache\n"})
    repo_world.checkout("v3")
    runtime = _runtime(make_runtime, repo_world)
    reply = run(runtime, "UOP", f"/rollback {side}")
    assert reply.text == _refusal(side, repo_world.commits["v3"], side), reply.text
    assert _jobs(runtime) == []


def test_a_commit_released_before_and_an_ancestor_are_asked_for_without_a_warning(make_runtime, repo_world):
    v1, v2, v3 = (repo_world.commits[name] for name in ("v1", "v2", "v3"))
    repo_world.checkout("v3")
    runtime = _runtime(make_runtime, repo_world)
    assert run(runtime, "UOP", "/releases").text.count("recorded-at-start") == 1, "v3 is in the ledger"
    repo_world.checkout("v2")  # moved by hand: v3 is no ancestor of v2, but it was released here
    asked = run(runtime, "UOP", f"/rollback {v3}")
    assert asked.text.startswith(f"Request #1: `/rollback {v3} {v2}` needs"), asked.text
    # --any-commit where it is not needed is dropped: what is approved is what would have been asked without it.
    asked = run(runtime, "UOP", "/rollback v1 --any-commit")
    assert asked.text.startswith(f"Request #2: `/rollback {v1} {v2}` needs"), asked.text
    for number in (1, 2):
        assert "🔴" not in _request(runtime, number)


def test_any_commit_asks_for_an_unreleased_commit_and_the_request_says_so_in_red(slack_bot, slack_double, repo_world):
    repo_world.checkout("v3")
    broken, v3 = repo_world.commits["broken"], repo_world.commits["v3"]
    sender, runtime = slack_bot(repo_world.stack())
    grant(runtime, "U0OP", Role.operator)
    sender.slash("/rollback", "--any-commit broken", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
    (told,) = slack_double.wait_for_response("ask", timeout=20)
    assert told["text"].startswith(f"Request #1: `/rollback {broken} {v3} --any-commit` needs a second person's approval"), told
    shown = str(_request_message(slack_double)["blocks"])
    assert (
        f"🔴 *Not a release*: `{broken[:10]}` has never been released on this stack and is not an ancestor of `{v3[:10]}`; "
        "it is asked for with --any-commit: check what it holds before approving."
    ) in shown, shown
    assert runtime.jobs.get(1).state == "pending_approval"


def test_a_commit_whose_deploy_failed_was_never_released(make_runtime, repo_world):
    broken = repo_world.commits["broken"]
    stack_text = repo_world.stack_file.read_text()
    repo_world.checkout("v3")
    run(_runtime(make_runtime, repo_world), "UOP", "/releases")  # the ledger starts with v3, found checked out
    for command, counts in (('["sh", "-c", "exit 3"]', False), ('["true"]', True)):
        repo_world.stack_file.write_text(stack_text.replace("timeout = 120", f"timeout = 120\ncommand = {command}"))
        runtime = _runtime(make_runtime, repo_world)
        grant(runtime, "UAPP", Role.approver)
        repo_world.checkout("broken")  # deployed by hand as it is checked out: /restart with no service
        asked = run(runtime, "UOP", "/restart")
        number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
        run(runtime, "UAPP", f"/approvals approve {number}")
        (reply,) = list(run_approved(runtime, lambda _text: None))
        assert ("exited with code 0" in reply.text) is counts, reply.text
        repo_world.checkout("v3")
        asked = run(runtime, "UOP", "/rollback broken")
        assert asked.text.startswith("Request #") is counts, asked.text
        if not counts:
            assert asked.text == _refusal(broken, repo_world.commits["v3"], "broken")


def _ledger_of(runtime, world, *entries: tuple[str, str]) -> None:
    """Releases as the bot records them, oldest first: (kind, commit name), each finished with good health."""
    from bot.deploy.model import Release
    from bot.store.engine import utcnow

    with runtime.store.session.begin() as session:
        for kind, name in entries:
            now = utcnow()
            session.add(Release(stack=runtime.stack_name, commit=world.commits[name], kind=kind, started_at=now, finished_at=now,
                                health="good", exit_code=0))


def test_a_second_rollback_with_no_ref_goes_further_back_never_forward_to_the_release_it_left(make_runtime, repo_world):
    v1, v2, v3 = (repo_world.commits[name] for name in ("v1", "v2", "v3"))
    runtime = _runtime(make_runtime, repo_world)
    _ledger_of(runtime, repo_world, ("deploy", "v1"), ("deploy", "v2"), ("deploy", "v3"), ("rollback", "v2"))
    repo_world.checkout("v2")
    asked = run(runtime, "UOP", "/rollback")
    assert asked.text.startswith(f"Request #1: `/rollback {v1} {v2}` needs"), asked.text


def test_after_rolling_back_to_the_oldest_release_a_rollback_with_no_ref_asks_for_a_ref(make_runtime, repo_world):
    v1, v3 = repo_world.commits["v1"], repo_world.commits["v3"]
    runtime = _runtime(make_runtime, repo_world)
    _ledger_of(runtime, repo_world, ("deploy", "v1"), ("deploy", "v2"), ("deploy", "v3"), ("rollback", "v1"))
    repo_world.checkout("v1")
    refused = run(runtime, "UOP", "/rollback")
    assert refused.text == (
        f"No release with good health is older than {v1[:10]}, the commit running now, so there is nothing to go back to; "
        "name the commit to deploy: /rollback REF (/releases lists the released ones)."
    ), refused.text
    assert v3[:10] not in refused.text and _jobs(runtime) == []
    # Named, the newer release is still one command away.
    asked = run(runtime, "UOP", f"/rollback {v3}")
    assert asked.text.startswith(f"Request #1: `/rollback {v3} {v1}` needs"), asked.text
