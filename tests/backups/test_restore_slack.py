"""/restore from Slack with the bot in a process of its own, killed in the middle of step 4 and started again."""

import re

import docker
from sqlalchemy import select

from bot.approvals.service import APPROVE
from bot.backups.model import Backup, RestoreRun
from bot.jobs.model import Job
from bot.frame.roles import Role
from tests.bot.test_slack_approvals import CHANNEL, _request_message, _wait_message
from tests.conftest import BotProcess
from tests.waiting import eventually

EVENTS = 1_500_000  # enough rows that the restore is still running when the bot is killed


def _stack_file(tmp_path, app_db) -> str:
    stack = app_db.stack
    path = tmp_path / "flowstate.toml"
    settings = stack.stack
    where = (f'runtime = "swarm"\nnamespace = "{settings.namespace}"\ndocker_host = "{settings.docker_host}"\n'
             if settings.runtime == "swarm" else f'compose_project = "{settings.compose_project}"\n')
    path.write_text(
        f'[stack]\n{where}app_services = {stack.stack.app_services!r}\nstable_seconds = 1\n'
        f'\n[database]\ndsn = "{app_db.dsn}"\ncompose_service = "{stack.database.compose_service}"\n'
        f'user = "{stack.database.user}"\nname = "{app_db.name}"\n'
    )
    return str(path)


def _row(store, model, key):
    with store.session() as session:
        return session.get(model, key)


def test_the_bot_killed_while_it_restores_in_place_leaves_whole_data_and_running_services_and_says_which(tmp_path, slack_double, in_place_db,
                                                                                                        live_stack):
    """In place (the database's name leaves no room for a kept copy's): killed in the middle of pg_restore --clean."""
    app_db = in_place_db
    app_db.add_events(EVENTS)
    bot = BotProcess(
        tmp_path, slack_double, tmp_path / "home", _stack_file(tmp_path, app_db),
        FLOWSTATE_BACKUP_DIR=str(tmp_path / "backups"), FLOWSTATE_RESTORE_SERVICES="python-worker",
    )
    sender = bot.start()
    store = bot.store
    try:
        bot.grant("U0OP", Role.operator)
        sender.slash("/backup", "'before the kill'", "U0OP", CHANNEL, response_url=slack_double.response_url("backup"))
        eventually(lambda: (b := _row(store, Backup, 1)) is not None and b.state == "ok", "the backup to finish", timeout=120)
        app_db.query("INSERT INTO users (email, name) VALUES ('eve@example.com', 'Eve')")
        app_db.query("DELETE FROM events WHERE id <= 1000")
        before = (["admin@example.com", "alice@example.com", "bob@example.com", "eve@example.com"], EVENTS - 1000)
        restored = (["admin@example.com", "alice@example.com", "bob@example.com"], EVENTS)

        sender.slash("/restore", "1", "U0OP", CHANNEL, response_url=slack_double.response_url("ask"))
        request = _request_message(slack_double, 2)
        assert "Note: before the kill" in str(request["blocks"]) and "SHA-256" in str(request["blocks"])
        sender.click(APPROVE, "2", "U0ADMIN", CHANNEL, request["ts"], slack_double.response_url("approve"))
        run = eventually(lambda: (r := _row(store, RestoreRun, 2)) is not None and r.exec_id and r, "step 4 to start", timeout=120)
        assert run.step == "restore" and run.safety_backup_id == 2
        bot.kill()

        sender = bot.start()
        told = slack_double.wait_for("chat.postMessage", timeout=180, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        text = told[0].params["text"]
        assert "`/restore 1`" in text and re.search(r"Services: 🟢 Healthy: [\w, -]*\bpython-worker\b[\w, -]* held for 1 s \(\d+\.\d s\)\.$", text), text
        _wait_message(slack_double, request["ts"], "⚠️ Interrupted")
        assert _row(store, Job, 2).state == "interrupted"
        data = (app_db.emails(), app_db.query("SELECT count(*) FROM events")[0][0])
        if "The restore had completed" in text:
            assert data == restored, "committed whole"
        else:
            assert "rolled back" in text or "unknown" in text, text
            assert data in (before, restored), "one transaction: all of it or none of it"
        client = docker.from_env()
        try:
            (worker,) = client.containers.list(
                filters={"label": [f"com.docker.compose.project={live_stack.stack.compose_project}", "com.docker.compose.service=python-worker"]}
            )
            assert worker.attrs["State"]["Health"]["Status"] == "healthy"
        finally:
            client.close()
        with store.session() as session:
            assert session.scalars(select(RestoreRun.step)).all() == ["interrupted"]
    finally:
        bot.close()
