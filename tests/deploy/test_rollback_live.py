"""/restart with no service, /releases and /rollback on a Compose project of the tests' own, from a Git repository
the test makes. What is promised: a rollback is a new release that points at an older commit, approved by a second
person who sees both commits and a migration warning; it is gated on health and goes back when health fails; a
dirty checkout or a hostile REF is refused before anything runs; a deploy script that overruns is killed, group and all."""

import re
import threading
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import select

from bot.frame.blocks import to_text
from bot.adapters.console import run_approved
from bot.deploy.model import Release
from bot.jobs.queue import process_running
from bot.jobs.model import Job
from bot.frame.roles import Role
from tests.conftest import grant, run
from tests.deploy.conftest import PORT, git, served, wait_for, write_stack_file


def _runtime(make_runtime, world, **settings):
    runtime = make_runtime(world.stack(), admins=["UADMIN"], **settings)
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    grant(runtime, "UVIEW", Role.viewer)
    return runtime


def _approved(runtime, line: str):
    """Ask as an operator, approve as an approver (as the console does): the request's text and the run's reply."""
    asked = run(runtime, "UOP", line)
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    request = to_text(runtime.approvals.render(runtime.jobs.get(number), "waiting"))
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    return request, reply


def _ledger(runtime) -> list[tuple]:
    with runtime.store.session() as session:
        return [(r.kind, r.commit, r.health) for r in session.scalars(select(Release).order_by(Release.id))]


def _deployed_v2_then_v3(make_runtime, world, **settings):
    """Two good releases through /restart: v2, then v3 (which adds a migration)."""
    world.checkout("v2")
    runtime = _runtime(make_runtime, world, **settings)
    _request, reply = _approved(runtime, "/restart")
    assert not reply.failed, reply.text
    assert served() == "version v2"
    world.checkout("v3")
    _request, reply = _approved(runtime, "/restart")
    assert not reply.failed, reply.text
    assert served() == "version v3"
    return runtime


def test_a_restart_with_no_service_runs_the_deploy_script_and_reports_exit_code_duration_and_health(make_runtime, world):
    world.checkout("v2")
    runtime = _runtime(make_runtime, world)
    request, reply = _approved(runtime, "/restart")
    assert "Runs `./scripts/deploy-production.sh`" in request and "Deploys the commit checked out now: `" + world.commits["v2"][:10] in request
    text = reply.text
    assert text.startswith(f"✅ Deployed {world.commits['v2'][:10]}"), text
    assert re.search(r"🟢 deploy-production\.sh exited with code 0 after \d+\.\d s\.", text), text
    assert re.search(r"🟢 Healthy: frontend 5xx rate, frontend(, noisy)? held for 1 s \(\d+\.\d s\)\.", text), text  # noisy: /logs tests' container
    assert served() == "version v2" and world.deployed() == [world.commits["v2"]]
    (recorded, deploy) = _ledger(runtime)
    assert recorded[:2] == ("recorded-at-start", world.commits["v2"]) and deploy == ("deploy", world.commits["v2"], "good")
    with runtime.store.session() as session:
        release = session.scalars(select(Release).where(Release.kind == "deploy")).one()
    assert (release.requested_by, release.approved_by, release.job_id, release.replaced_id, release.exit_code) == ("UOP", "UAPP", 1, 1, 0)
    assert f"deployed {world.commits['v2']}" in release.output, "the script's output is kept whole with its release"
    assert "s3cr3t-value" not in release.output and "bot settings seen: ." in release.output, "redacted; no bot secret in its environment"


def test_rollback_with_no_ref_goes_to_the_previous_good_release_and_warns_that_the_database_stays(make_runtime, world):
    runtime = _deployed_v2_then_v3(make_runtime, world)
    request, reply = _approved(runtime, "/rollback")
    v2, v3 = world.commits["v2"], world.commits["v3"]
    assert f"/rollback {v2} {v3}" in request, "the request binds the exact commits"
    for fact in (f"*From* `{v3[:10]}` Add user roles · Dana Deployer · ", f"*To* `{v2[:10]}` Faster search · Dana Deployer · ",
                 "1 commit between them.", "Migration files differ between them (`backend/migrations/0002_roles.sql`)",
                 "the database does not roll back with the code; a /restore may be needed."):
        assert fact in request, (fact, request)
    assert not reply.failed, reply.text
    assert reply.text.startswith(f"✅ Rolled back to {v2[:10]}")
    assert served() == "version v2"
    assert _ledger(runtime)[-1] == ("rollback", v2, "good")
    listed = run(runtime, "UVIEW", "/releases").text
    first = listed.splitlines()[1]
    assert first.startswith("▶️ *current* · *#4* rollback · `" + v2[:10]), listed
    assert "approved by <@UAPP>" in first and "replaced #3" in first and "🟢 good" in first


def test_rollback_to_a_named_commit_checks_it_out_detached_and_deploys_it(make_runtime, world, database_url):
    runtime = _deployed_v2_then_v3(make_runtime, world, database_url=database_url)  # the ledger on SQLite and PostgreSQL
    request, reply = _approved(runtime, "/rollback v1")
    assert "2 commits between them." in request
    assert not reply.failed, reply.text
    assert served() == "version v1"
    with runtime.store.session() as session:
        release = session.scalars(select(Release).order_by(Release.id.desc())).first()
    assert (release.kind, release.commit, release.ref, release.health) == ("rollback", world.commits["v1"], "v1", "good")
    assert git(world.repo, "rev-parse", "HEAD") == world.commits["v1"]
    assert "HEAD detached at" in git(world.repo, "status")


def test_a_rollback_whose_deploy_is_not_healthy_goes_back_to_where_it_started(make_runtime, world):
    runtime = _deployed_v2_then_v3(make_runtime, world)
    broken, v3 = world.commits["broken"], world.commits["v3"]
    _request, reply = _approved(runtime, "/rollback broken --any-commit")
    text = reply.text
    assert reply.failed and text.startswith(f"❌ The rollback to {broken[:10]} failed"), text
    assert "🔴 Not healthy after" in text and "frontend: running but unhealthy" in text, text
    assert f"↩️ Going back to {v3[:10]}, the commit it started from, and deploying it again…" in text
    assert f"🟢 Back on {v3[:10]}" in text
    assert served() == "version v3"
    assert world.deployed()[-2:] == [broken, v3]
    assert _ledger(runtime)[-2:] == [("rollback", broken, "bad"), ("revert-after-failed-health", v3, "good")]
    listed = run(runtime, "UVIEW", "/releases").text
    assert listed.splitlines()[1].startswith("▶️ *current* · *#5* revert-after-failed-health"), listed
    # The bad release is never where a later /rollback goes.
    asked = run(runtime, "UOP", "/rollback")
    assert f"/rollback {world.commits['v2']}" in asked.text, asked.text


def test_a_rollback_whose_api_answers_500_behind_a_healthy_container_is_reverted_by_the_gate(make_runtime, world):
    runtime = _deployed_v2_then_v3(make_runtime, world)
    failapi, v3 = world.commits["failapi"], world.commits["v3"]
    statuses: list[int] = []
    done = threading.Event()

    def users():  # traffic through the API while the change runs, as users would send it
        while not done.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/cgi-bin/api", timeout=2) as response:
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
            except OSError:
                pass  # the frontend is being recreated
            time.sleep(0.02)

    traffic = threading.Thread(target=users, daemon=True)
    traffic.start()
    try:
        _request, reply = _approved(runtime, "/rollback failapi --any-commit")  # a commit never released here
    finally:
        done.set()
        traffic.join(timeout=5)
    text = reply.text
    assert reply.failed and 500 in statuses, text
    assert re.search(r"🔴 Not healthy after \d+ s: frontend 5xx rate: [\d,]+ of [\d,]+ requests answered 5xx in the last \d+ s: 100\.0%", text), text
    assert f"🟢 Back on {v3[:10]}" in text
    assert _ledger(runtime)[-2:] == [("rollback", failapi, "bad"), ("revert-after-failed-health", v3, "good")]


def test_a_dirty_repository_is_refused_at_the_request_and_again_when_it_would_run(make_runtime, world):
    runtime = _deployed_v2_then_v3(make_runtime, world)
    (world.repo / "www" / "health").write_text("hotfix\n")
    (world.repo / "notes.txt").write_text("scratch\n")
    refused = run(runtime, "UOP", "/rollback v1")
    assert refused.text == (
        f"The repository {world.repo} has uncommitted changes (www/health, notes.txt); commit or discard them first, "
        "so that what is deployed is a commit."
    ), refused.text
    jobs_before = len(_jobs(runtime))
    (world.repo / "www" / "health").write_text("version v3\n")
    (world.repo / "notes.txt").unlink()
    asked = run(runtime, "UOP", "/rollback v1")
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    (world.repo / "notes.txt").write_text("scratch\n")  # dirty again before the approval
    run(runtime, "UAPP", f"/approvals approve {number}")
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert "uncommitted changes (notes.txt)" in reply.text and "Nothing was checked out or deployed." in reply.text
    assert served() == "version v3" and len(world.deployed()) == 2
    assert len(_jobs(runtime)) == jobs_before + 1


def _jobs(runtime) -> list[Job]:
    with runtime.store.session() as session:
        return list(session.scalars(select(Job)))


@pytest.mark.parametrize(
    "text, said",
    [
        ("--upload-pack=x", "a ref may not start with -"),
        ("-", "a ref may not start with -"),
        ("HEAD; rm -rf /", "Unexpected"),
        ('"HEAD; rm -rf /"', "a ref is one word"),
        ("$(id)", "'$(id)' is not a commit of the repository"),
        ("a" * 10240, "a ref is at most 200 characters"),
        ("<!channel>", "'&lt;!channel&gt;' is not a commit of the repository"),
        ("HEAD\x1b[2J", "a ref is one word"),
    ],
)
def test_hostile_refs_are_refused_with_nothing_run(make_runtime, world, tmp_path, text, said):
    runtime = _runtime(make_runtime, world)
    reply = run(runtime, "UOP", f"/rollback {text}")
    assert said.lower() in reply.text.lower() and len(reply.text) < 400, reply.text
    assert _jobs(runtime) == [] and world.deployed() == [], "no request, no deploy"
    assert not (tmp_path / "x").exists() and not list(world.repo.glob("x"))


def test_a_deploy_script_that_overruns_is_killed_with_its_whole_process_group(make_runtime, world, tmp_path):
    write_stack_file(world.stack_file, world.repo, world.deploy_log, world.hold, timeout=3)
    world.hold.write_text("600")
    runtime = _runtime(make_runtime, world)
    _request, reply = _approved(runtime, "/restart")
    text = reply.text
    assert reply.failed and "🔴 deploy-production.sh did not finish within 3 s: its process group was killed." in text, text
    sleeper = int(world.hold.with_name("hold.pid").read_text())
    wait_for("the script's sleep outlived the timeout", lambda: not process_running(sleeper), timeout=15)
    with runtime.store.session() as session:
        release = session.scalars(select(Release).where(Release.kind == "deploy")).one()
    assert (release.exit_code, release.note, release.health) == (None, "timed out", "bad")
    assert "holding for 600 s" in release.output


def test_a_deploy_script_that_fails_is_reported_with_its_exit_code_and_recorded_bad(make_runtime, world):
    world.stack_file.write_text(world.stack_file.read_text().replace("timeout = 120", 'timeout = 120\ncommand = ["sh", "-c", "echo no disk space; exit 3"]'))
    runtime = _runtime(make_runtime, world)
    _request, reply = _approved(runtime, "/restart")
    assert reply.failed and reply.text.startswith("❌ The deploy failed"), reply.text
    assert re.search(r"🔴 sh exited with code 3 after \d+\.\d s\.", reply.text), reply.text
    with runtime.store.session() as session:
        release = session.scalars(select(Release).where(Release.kind == "deploy")).one()
    assert (release.exit_code, release.health, release.output) == (3, "bad", "no disk space")


def test_the_console_shows_the_requester_and_the_approver_what_the_slack_message_shows(make_runtime, world):
    import io

    from bot.adapters.console import run_console

    runtime = _runtime(make_runtime, world)

    def console(user: str, lines: str) -> str:
        out = io.StringIO()
        run_console(runtime, user, "C1", stdin=io.StringIO(lines), stdout=out)
        return out.getvalue()

    asked = console("UOP", "/rollback v1\n")
    waiting = console("UAPP", "/approvals\n")
    v1, v3 = world.commits["v1"], world.commits["v3"]
    slack = to_text(runtime.approvals.render(runtime.jobs.get(1), "waiting"))
    for fact in (f"*From* `{v3[:10]}` Add user roles · Dana Deployer · ", f"*To* `{v1[:10]}` First release · Dana Deployer · ",
                 "2 commits between them.", "Migration files differ between them (`backend/migrations/0002_roles.sql`)",
                 "the database does not roll back with the code; a /restore may be needed."):
        assert fact in slack, (fact, slack)
        assert fact in asked, ("the requester's console", fact, asked)
        assert fact in waiting, ("the approver's /approvals", fact, waiting)
    assert waiting.startswith(f"*Waiting for approval*\n#1 `/rollback {v1} {v3}` asked by @UOP, expires ")
    assert world.deployed() == [], "nothing ran"
