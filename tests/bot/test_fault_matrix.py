"""The fault matrix: every change the bot makes, at each of its steps, meets each fault, on real parts.

Changes: /restore (on a database of the test's own in the live stack), /restart SERVICE (python-worker of the
live stack), both also on the Swarm test world (tests/swarm: python-worker scaled to zero and back, a forced
update), the deploy (/restart with no service), /rollback (on the deploy world's own Compose project) and
/backup setup-pitr (the live stack's PostgreSQL, archiving off before and after each cell).
Faults, injected at the step boundary through the test-only hook of bot/frame/faults.py, never by a racing sleep:
the bot's store locked by another connection (longer than its busy timeout), the Docker engine refusing, Slack
answering 500 or 429 to every post and update, and SIGKILL (a bot process of its own): its runner alone, which the
bot replaces at once, or the bot and its runner, started again by the test.

After each, what an on-call engineer would check:
- the app services run, or what the bot said names exactly what is down and the /restart that starts it;
- no second change could run while the first had work running: the stack's lock was this change's at the
  fault, and once it is let go no process the change started (the deploy script, pg_restore) still runs;
- the request, the release ledger and the restore journal are final;
- every step of the request is in the audit.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from sqlalchemy import select

from bot.approvals.service import APPROVE
from bot.backups.model import RestoreRun, RowRestore
from bot.deploy.model import Release
from bot.stack.compose import ComposeStack
from bot.stack.swarm import SwarmStack
from bot.jobs.model import FINAL, ChangeLock, Job
from bot.jobs.queue import identity_running, process_running
from bot.jobs.runner import Runner
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.adapters.slack.client import SlackNotifier, web_client
from bot.store.engine import AuditEntry
from tests.backups.test_restore_slack import _stack_file as restore_stack_file
from tests.backups.archiving import archiving_off
from tests.backups.conftest import app_db, in_place_db, swarm_app_db  # noqa: F401 (fixtures of the restore and deploy worlds)
from tests.deploy.conftest import PROJECT as DEPLOY_PROJECT, deploy_project, served, wait_for, world  # noqa: F401
from tests.bot.test_slack_approvals import CHANNEL, _request_message
from tests.conftest import BotProcess, grant, run
from tests.faults import RefusingDocker, SlackFailing, StoreLock, short_busy_timeout
from tests.waiting import eventually

pytestmark = pytest.mark.stack  # every cell asks for its world (the live stack's, the deploy world's) as it runs

SERVICE = "python-worker"  # the live stack's service that /restore stops and /restart restarts
CHANGES = {
    # a swap restore: the new database filled, the app stopped, the first rename made (its transaction open), both made
    "restore": ("restore:after_fill", "restore:after_stop", "restore:after_first_rename", "restore:after_rename"),
    # in place, when a swap cannot be made (the test database's name leaves no room for a kept copy's)
    "restore-in-place": ("restore:after_safety", "restore:after_stop", "restore:after_restore"),
    "restart": ("restart:after_restart",),
    "undo": ("undo:after_prepare", "undo:before_commit"),
    # on Swarm a swap too (the app service scaled to zero and back around the renames)
    "restore-swarm": ("restore:after_fill", "restore:after_stop", "restore:after_rename"),
    "restart-swarm": ("restart:after_restart",),
    "deploy": ("deploy:after_start", "deploy:after_script"),
    "rollback": ("deploy:after_checkout", "deploy:after_start", "deploy:after_script"),
    "setup-pitr": ("setup-pitr:after_settings", "setup-pitr:after_restart"),
}
FAULTS = ("store", "docker", "slack500", "slack429", "runner-kill", "bot-kill")
CELLS = [pytest.param(change, point, fault, id=f"{change}-{point.split(':')[1]}-{fault}",
                      marks=[pytest.mark.swarm] if change.endswith("-swarm") else [])
         for change, points in CHANGES.items() for point in points for fault in FAULTS]


@dataclass
class Change:
    line: str  # what the operator asks for
    stack: object  # the StackConfig
    stack_file: str
    services: list[str]  # the app services that must run afterwards
    settings: dict = field(default_factory=dict)
    prepare: Callable[[object], None] = lambda _runtime: None  # before the request (a backup to restore)
    leftovers: Callable[[object], list[str]] = lambda _store: []  # processes the change started that still run
    whole: Callable[[], list[str]] = lambda: []  # what is wrong with the data the app runs on (a restore's live database)
    before_kill: Callable[[], None] = lambda: None  # a killed runner's work must outlast the start of its recovery


def _docker(stack):
    """The stack's runtime as the bot builds it: the Compose project, or the Swarm stack on its engine."""
    settings = stack.stack
    if settings.runtime == "swarm":
        return SwarmStack(settings.namespace, settings.docker_host)
    return ComposeStack(settings.compose_project)


def _swarm_service_back(request) -> None:
    """After the test, whatever happened: the Swarm stack's SERVICE scaled back and converged."""
    stack = request.getfixturevalue("swarm_stack")

    def back() -> None:
        docker = _docker(stack)
        try:
            docker.start([SERVICE])
            docker.wait_healthy(SERVICE, 90)
        finally:
            docker.close()
    request.addfinalizer(back)


def _restore_change(request, tmp_path, fixture: str = "app_db") -> Change:
    if fixture == "swarm_app_db":
        app_db = request.getfixturevalue(fixture)
        _swarm_service_back(request)
    else:
        app_db = request.getfixturevalue(fixture)
        request.getfixturevalue("stack_container")(SERVICE)  # put back to healthy after the test, whatever happened
    app_db.add_events(50)

    def pg_restore_running(store) -> list[str]:
        docker = _docker(app_db.stack)
        try:
            with store.session() as session:
                runs = list(session.scalars(select(RestoreRun)))
            return [f"pg_restore exec {r.exec_id}" for r in runs if r.exec_id and docker.exec_state(r.exec_id)[0]]
        finally:
            docker.close()

    def whole() -> list[str]:
        """Live is there and holds the 3 users and 50 events (the backup's, and the data's before it); no new one is left."""
        try:
            counts = app_db.query("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM events)")[0]
        except Exception as error:
            return [f"live {app_db.name}: {error}"]
        left = app_db.query("SELECT datname FROM pg_database WHERE datname = %s", (f"{app_db.name}__restore_2",))
        return ([] if counts == (3, 50) else [f"live holds {counts}"]) + [f"{name} is left" for (name,) in left]

    return Change(
        "/restore 1", app_db.stack, restore_stack_file(tmp_path, app_db), [SERVICE],
        settings=dict(backup_dir=tmp_path / "backups", restore_services=[SERVICE]),
        prepare=lambda runtime: _assert_ok(run(runtime, "UOP", "/backup")),
        leftovers=pg_restore_running, whole=whole,
    )


def _undo_change(request, tmp_path) -> Change:
    """/restore --table: two users edited since the backup are put back; no service stops."""
    app_db = request.getfixturevalue("app_db")

    def backup_then_edit(runtime) -> None:
        _assert_ok(run(runtime, "UOP", "/backup"))
        app_db.query("UPDATE users SET name = 'Edited' WHERE id IN (1, 2)")

    return Change(
        '/restore --table users --where "id IN (1, 2)" 1', app_db.stack, restore_stack_file(tmp_path, app_db), [],
        settings=dict(backup_dir=tmp_path / "backups", restore_services=[SERVICE]), prepare=backup_then_edit,
    )


def _setup_pitr_change(request, tmp_path) -> Change:
    app_db = request.getfixturevalue("app_db")
    request.getfixturevalue("stack_container")("postgres")
    archiving_off(app_db.stack)
    request.addfinalizer(lambda: archiving_off(app_db.stack))  # ALTER SYSTEM persists: the next cell starts as this one
    path = Path(restore_stack_file(tmp_path, app_db))
    pitr = app_db.stack.pitr
    path.write_text(path.read_text() + f'\n[pitr]\narchive_dir = "{pitr.archive_dir}"\nserver_archive_dir = "{pitr.server_archive_dir}"\n')
    return Change("/backup setup-pitr", app_db.stack, str(path), ["postgres"], settings=dict(backup_dir=tmp_path / "backups"))


def _restart_change(request, tmp_path, swarm: bool = False) -> Change:
    path = tmp_path / "flowstate.toml"
    if swarm:
        live_stack = request.getfixturevalue("swarm_stack")
        _swarm_service_back(request)
        settings = live_stack.stack
        path.write_text(f'[stack]\nruntime = "swarm"\nnamespace = "{settings.namespace}"\ndocker_host = "{settings.docker_host}"\n'
                        'healthy_timeout = 60\n')
    else:
        live_stack = request.getfixturevalue("live_stack")
        request.getfixturevalue("stack_container")(SERVICE)
        path.write_text(f'[stack]\ncompose_project = "{live_stack.stack.compose_project}"\nhealthy_timeout = 60\n')
    return Change(f"/restart {SERVICE}", live_stack, str(path), [SERVICE])


def _deploy_change(request, tmp_path, line: str) -> Change:
    world = request.getfixturevalue("world")
    world.checkout("v2")
    if served() is None:  # the app runs before the change, so that "it runs afterwards" means something
        subprocess.run(["docker-compose", "-p", DEPLOY_PROJECT, "-f", "docker-compose.yml", "up", "-d", "frontend"],
                       cwd=world.repo, check=True, capture_output=True)
        wait_for("the deploy world's frontend", served)
    world.hold.write_text("1")  # the script runs a second: long enough to be running at deploy:after_start

    def scripts_running(store) -> list[str]:
        with store.session() as session:
            releases = list(session.scalars(select(Release)))
        running = [f"deploy script of release #{r.id}" for r in releases if r.process and identity_running(r.process)]
        held = world.hold.with_name("hold.pid")
        if held.exists() and process_running(int(held.read_text())):
            running.append("the deploy script's sleep")
        return running

    return Change(line, world.stack(), str(world.stack_file), ["frontend"], leftovers=scripts_running,
                  before_kill=lambda: world.hold.write_text("4"))


def _change(name: str, request, tmp_path) -> Change:
    if name == "restore":
        return _restore_change(request, tmp_path)
    if name == "restore-in-place":
        return _restore_change(request, tmp_path, "in_place_db")
    if name == "restore-swarm":
        return _restore_change(request, tmp_path, "swarm_app_db")
    if name in ("restart", "restart-swarm"):
        return _restart_change(request, tmp_path, swarm=name.endswith("-swarm"))
    if name == "undo":
        return _undo_change(request, tmp_path)
    if name == "setup-pitr":
        return _setup_pitr_change(request, tmp_path)
    return _deploy_change(request, tmp_path, "/restart" if name == "deploy" else "/rollback v1")


def _assert_ok(reply) -> None:
    assert not reply.failed, reply.text


# ---- the two ways to run a change: in this process (the runner's own code), or a bot process killed at the step ----


def _in_process(change: Change, point: str, fault: str, make_runtime, slack_double, tmp_path) -> tuple[object, int, list]:
    runtime = make_runtime(change.stack, admins=["UADMIN"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-matrix",
                           **change.settings)
    client = web_client(runtime.settings)
    runtime.notifier = SlackNotifier(client)
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    change.prepare(runtime)
    short_busy_timeout(runtime)
    inject = {
        "store": lambda: StoreLock(runtime),
        "docker": lambda: RefusingDocker(runtime, tmp_path),
        "slack500": lambda: SlackFailing(slack_double, 500),
        "slack429": lambda: SlackFailing(slack_double, 429),
    }[fault]()
    holders_at_fault = []

    def at(reached: str) -> None:
        if reached == point:  # a rollback that goes back passes its steps twice: the fault comes the first time
            with runtime.store.session() as session:
                lock = session.get(ChangeLock, runtime.stack_name)
            holders_at_fault.append(lock.job_id if lock else None)
            if len(holders_at_fault) == 1:
                inject()

    runtime.fault = at
    name, _, text = change.line[1:].partition(" ")
    asked = runtime.pipeline.dispatch(Invocation("UOP", name, text, CHANNEL, "slack"))
    number = int(re.match(r"Request #(\d+): ", asked.text).group(1))
    approved = runtime.pipeline.dispatch(Invocation("UAPP", "approvals", f"approve {number}", CHANNEL, "slack"))
    assert approved.text == f"You approved request #{number}; it runs now.", approved.text
    runner = Runner(runtime, client)
    job = runtime.jobs.claim_next(runtime.holder, source="slack")
    runner.free.acquire()
    runner._process(job)  # as a runner thread runs it, its last resort for an escaping error included
    if isinstance(inject, StoreLock):
        inject.join()
    assert holders_at_fault and set(holders_at_fault) == {number}, "the stack's lock was this change's at the step"
    _settle(runtime.store, number)
    return runtime.store, number, holders_at_fault


def _killed(change: Change, point: str, whole_bot: bool, tmp_path, slack_double) -> tuple[object, int]:
    env = dict(FLOWSTATE_FAULT_AT=f"bot@{point}" if whole_bot else point, FLOWSTATE_JOB_LEASE_SECONDS="5")
    if "backup_dir" in change.settings:
        env.update(FLOWSTATE_BACKUP_DIR=str(change.settings["backup_dir"]), FLOWSTATE_RESTORE_SERVICES=SERVICE)
    change.before_kill()
    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", change.stack_file, **env)
    sender = bot.start()
    try:
        bot.grant("U0OP", Role.operator)
        number = 1
        if change.line.startswith("/restore"):  # request #1 is the backup it restores
            sender.slash("/backup", "", "U0OP", CHANNEL, response_url=slack_double.response_url("backup"))
            eventually(lambda: _job_state(bot.store, 1) == "succeeded", "the backup to succeed", timeout=120)
            number = 2
        name, _, text = change.line.partition(" ")
        sender.slash(name, text, "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
        message = _request_message(slack_double, number)
        sender.click(APPROVE, str(number), "U0ADMIN", CHANNEL, message["ts"], slack_double.response_url("approve"))
        if whole_bot:
            bot.process.wait(timeout=120)
            bot.start()
        slack_double.wait_for("chat.postMessage", timeout=180, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        _settle(bot.store, number)
        return bot, number
    except BaseException:
        bot.close()
        raise


def _job_state(store, number: int) -> str | None:
    with store.session() as session:
        job = session.get(Job, number)
        return job.state if job else None


def _settle(store, number: int) -> None:
    """The request is final and its lock let go (a recovery holds it until it has done its work)."""
    eventually(lambda: _job_state(store, number) in FINAL, "the request's end", timeout=120)

    def released() -> bool:
        with store.session() as session:
            return not session.scalars(select(ChangeLock).where(ChangeLock.job_id == number)).all()

    eventually(released, "the lock's release", timeout=200)


# ---- the matrix -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("change_name, point, fault", CELLS)
def test_a_fault_at_a_step_of_a_change_leaves_production_no_worse(change_name, point, fault, request, tmp_path, make_runtime, slack_double):
    change = _change(change_name, request, tmp_path)
    if fault.endswith("kill"):
        bot, number = _killed(change, point, fault == "bot-kill", tmp_path, slack_double)
        request.addfinalizer(bot.close)
        store = bot.store
    else:
        store, number, _holders = _in_process(change, point, fault, make_runtime, slack_double, tmp_path)

    assert change.leftovers(store) == [], "the lock was let go while work the change started still ran"
    assert change.whole() == [], "the app runs on a complete database, and only on it"
    said = "\n".join(str(call.params.get("text")) + str(call.params.get("blocks")) for call in slack_double.calls
                     if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"))
    with store.session() as session:
        job = session.get(Job, number)
        said += "\n" + (job.result or "")
        releases = list(session.scalars(select(Release)))
        journals = list(session.scalars(select(RestoreRun))) + list(session.scalars(select(RowRestore)))
        outcomes = [a.outcome for a in session.scalars(select(AuditEntry).where(AuditEntry.job_id == number).order_by(AuditEntry.id))]
    assert job.state in FINAL and job.finished_at is not None, job.state
    assert all(r.finished_at is not None for r in releases), [(r.id, r.kind, r.note) for r in releases]
    assert all(r.finished_at is not None and r.step in ("done", "failed", "interrupted") for r in journals), [(r.step, r.outcome) for r in journals]
    assert {"requested", "approved", "allowed"} <= set(outcomes), outcomes
    assert set(outcomes) & {"succeeded", "failed", "interrupted"}, outcomes

    docker = _docker(change.stack)
    try:
        states = {s.service: s for s in docker.states()}
    finally:
        docker.close()
    for service in change.services:
        if not (service in states and states[service].status == "running"):
            assert re.search(rf"/restart [^\n`]*{re.escape(service)}", said), f"{service} is down and nothing said how to start it:\n{said[-3000:]}"
