"""/restore --to's background copy: the new database filled from the scratch instance while the request waits, on the
live stack (archiving on for this module, as in test_pitr_live).

What is promised: approved after the copy finished, the run only stops, swaps and starts, and the very database the
copy made is live; approved while it copies, the run waits for it and the data is copied once; a request that ends
leaves no copy (the sweep drops a finished one, a copy that finishes late drops itself); a runner killed mid-copy
leaves a database (half or wholly filled) that the sweep drops, and the approved run fills it itself.
"""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import psycopg
import pytest

from bot.adapters.console import run_approved
from bot.approvals.service import APPROVE
from bot.backups.pointintime import PitrScratch
from bot.frame.blocks import to_text
from bot.jobs.model import Job
from tests.backups.conftest import _admin_dsn
from tests.backups.pitr_world import switch_wal, take_base
from tests.backups.test_pitr_live import (  # noqa: F401 (archiving: the module's fixture)
    SERVICE, _history, _runtime, _scratch_dirs, _stack_file, _until, archiving, ask_in_slack)
from tests.bot.test_slack_approvals import CHANNEL
from tests.conftest import BotProcess, run


def _ask(runtime, app_db, archiving) -> tuple[int, str]:
    """A base backup, the history (t2's rows, events dropped after), /restore --to t2 + 1 s asked: its number, its text."""
    take_base(runtime)
    t2 = _history(app_db)
    switch_wal(archiving)
    asked = run(runtime, "UOP", f"/restore --to {(t2 + timedelta(seconds=1)).isoformat()}")
    return int(re.match(r"Request #(\d+)", asked.text).group(1)), to_text(asked)


def _oid(app_db, name: str) -> int | None:
    with psycopg.connect(_admin_dsn(app_db.stack), autocommit=True) as conn:
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row[0] if row else None


def _restored_as_at_t2(app_db) -> None:
    assert app_db.emails()[-2:] == ["t1@example.com", "t2@example.com"]
    assert app_db.query("SELECT count(*) FROM events") == [(50,)], "the dropped table is back"


class Gate:
    """A fault (Runtime.fault) that holds the background copy at one point until the test lets it go."""

    def __init__(self, point: str):
        self.point, self.reached, self.opened = point, threading.Event(), threading.Event()

    def __call__(self, point: str) -> None:
        if point == self.point:
            self.reached.set()
            assert self.opened.wait(120), "the test never let the copy go on"


def test_approved_after_the_copy_finished_the_run_only_stops_swaps_and_starts(archiving, app_db, tmp_path, make_runtime, database_url):
    app_db.add_events(50)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack, database_url=database_url)  # the bot's store: SQLite, PostgreSQL
    job, text = _ask(runtime, app_db, archiving)
    new = f"{app_db.name}__restore_{job}"
    assert f"The copy into `{new}` runs in the background while this waits." in text, text

    assert runtime.scratches.prefill_in_background(runtime.at_fault) == job
    runtime.scratches.wait_for_prefill()
    assert runtime.scratches.row(job).fill == "filled"
    copied = _oid(app_db, new)
    assert copied is not None
    assert app_db.query("SELECT count(*) FROM pg_tables WHERE tablename = 'events'") == [(0,)], "live untouched meanwhile"

    assert run(runtime, "UAPP", f"/approvals approve {job}").text == f"You approved request #{job}; it runs now."
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert not reply.failed, reply.text
    assert f"🟢 2. {new} was filled with the state at" in reply.text and "while the request waited (" in reply.text, reply.text
    assert "🟢 2. Restored" not in reply.text, "no copy in the run"
    assert f"🟢 4. Swapped: {app_db.name} is the state at" in reply.text, reply.text
    assert _oid(app_db, app_db.name) == copied, "the database the background copy made is live"
    _restored_as_at_t2(app_db)
    assert runtime.scratches.row(job).fill == "taken"
    assert f"flowstate-pitr-{job}" not in _scratch_dirs(archiving)


def test_approved_while_the_copy_runs_the_run_waits_for_it_and_copies_nothing_itself(archiving, app_db, tmp_path, make_runtime):
    app_db.add_events(50)
    runtime = _runtime(make_runtime, tmp_path, app_db.stack)
    gate = Gate("prefill:after_create")
    runtime.fault = gate
    job, _text = _ask(runtime, app_db, archiving)
    new = f"{app_db.name}__restore_{job}"
    assert runtime.scratches.prefill_in_background(runtime.at_fault) == job
    assert gate.reached.wait(60)
    copied = _oid(app_db, new)

    assert run(runtime, "UAPP", f"/approvals approve {job}").text == f"You approved request #{job}; it runs now."
    said, replies = [], []
    running = threading.Thread(target=lambda: replies.extend(run_approved(runtime, said.append)))
    running.start()
    _until("the run's waiting line", lambda: any(f"Waiting for the copy into {new} that runs in the background" in line for line in said))
    assert _oid(app_db, new) == copied and runtime.scratches.row(job).fill == "filling"
    gate.opened.set()
    running.join(300)
    (reply,) = replies
    assert not reply.failed, reply.text
    assert f"🟢 2. {new} was filled with the state at" in reply.text and "🟢 2. Restored" not in reply.text, reply.text
    assert _oid(app_db, app_db.name) == copied, "copied once: the background copy is live"
    _restored_as_at_t2(app_db)


def test_a_denied_request_leaves_no_copy_finished_or_finishing(archiving, app_db, tmp_path, make_runtime, database_url):
    runtime = _runtime(make_runtime, tmp_path, app_db.stack, database_url=database_url)
    job, _text = _ask(runtime, app_db, archiving)
    new = f"{app_db.name}__restore_{job}"
    runtime.scratches.prefill_in_background(runtime.at_fault)
    runtime.scratches.wait_for_prefill()
    assert _oid(app_db, new) is not None
    runtime.scratches.sweep()
    assert _oid(app_db, new) is not None, "kept while its request waits"
    assert run(runtime, "UAPP", f"/approvals deny {job}").text == f"You denied request #{job}; nothing ran."
    assert runtime.scratches.sweep() == [job]
    assert _oid(app_db, new) is None
    row = runtime.scratches.row(job)
    assert (row.fill, row.fill_error, row.state) == ("dropped", "its request ended", "removed")

    # a copy still running when its request is denied: it finishes, then drops what it made
    gate = Gate("prefill:after_fill")
    runtime.fault = gate
    asked = run(runtime, "UOP", f"/restore --to {row.target.isoformat()}")
    second = int(re.match(r"Request #(\d+)", asked.text).group(1))
    assert runtime.scratches.prefill_in_background(runtime.at_fault) == second
    assert gate.reached.wait(120)
    assert run(runtime, "UAPP", f"/approvals deny {second}").text == f"You denied request #{second}; nothing ran."
    assert runtime.scratches.sweep() == [], "never while a live runner copies from it"
    gate.opened.set()
    runtime.scratches.wait_for_prefill()
    assert _oid(app_db, f"{app_db.name}__restore_{second}") is None
    assert runtime.scratches.row(second).fill_error == "its request ended while it was copied"
    assert runtime.scratches.sweep() == [second]


def _row(store, job_id: int) -> PitrScratch | None:
    with store.session() as session:
        return session.get(PitrScratch, job_id)


def _job(store, job_id: int) -> Job | None:
    with store.session() as session:
        return session.get(Job, job_id)


@pytest.mark.parametrize("point", ["prefill:after_create", "prefill:after_fill"])  # half filled, whole but not yet said
def test_a_runner_killed_mid_copy_leaves_a_database_the_sweep_drops_and_the_run_fills_it_itself(
        archiving, app_db, tmp_path, slack_double, point):
    app_db.add_events(50)
    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", _stack_file(tmp_path, app_db), FLOWSTATE_FAULT_AT=point,
                     FLOWSTATE_JOB_LEASE_SECONDS="5", FLOWSTATE_BACKUP_DIR=str(tmp_path / "backups"), FLOWSTATE_RESTORE_SERVICES=SERVICE)
    sender = bot.start()
    new = f"{app_db.name}__restore_2"
    try:
        message = ask_in_slack(bot, sender, slack_double, app_db, archiving)
        row = _until("the killed copy's drop by the sweep", lambda: (r := _row(bot.store, 2)) is not None and r.fill == "dropped" and r)
        assert row.fill_error == "its runner stopped while it was copied"
        assert _oid(app_db, new) is None, "what the killed copy made is dropped"

        sender.click(APPROVE, "2", "U0ADMIN", CHANNEL, message["ts"], slack_double.response_url("approve"))
        done = _until("the approved run", lambda: (j := _job(bot.store, 2)) is not None and j.state not in ("queued", "running", "pending_approval") and j)
        assert done.state == "succeeded", (done.state, done.result)
        assert "🟢 2. Restored the state at" in done.result and f"into {new}, beside {app_db.name}" in done.result, done.result
        _restored_as_at_t2(app_db)
    finally:
        bot.close()


def test_a_run_killed_after_it_took_the_copy_over_leaves_live_as_it_was_and_no_copy(archiving, app_db, tmp_path, slack_double):
    app_db.add_events(50)
    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", _stack_file(tmp_path, app_db), FLOWSTATE_FAULT_AT="restore:after_fill",
                     FLOWSTATE_JOB_LEASE_SECONDS="5", FLOWSTATE_BACKUP_DIR=str(tmp_path / "backups"), FLOWSTATE_RESTORE_SERVICES=SERVICE)
    sender = bot.start()
    new = f"{app_db.name}__restore_2"
    try:
        message = ask_in_slack(bot, sender, slack_double, app_db, archiving)
        _until("the background copy", lambda: (r := _row(bot.store, 2)) is not None and r.fill == "filled")
        sender.click(APPROVE, "2", "U0ADMIN", CHANNEL, message["ts"], slack_double.response_url("approve"))
        told = slack_double.wait_for("chat.postMessage", timeout=240, predicate=lambda c: "was interrupted" in str(c.params.get("text")))
        text = told[0].params["text"]
        assert f"{app_db.name} was not touched; the unfinished {new} is dropped" in text and "Services: 🟢 Healthy" in text, text
        assert _row(bot.store, 2).fill == "taken", "the run had taken the copy over"
        assert {row[0] for row in app_db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")} == {"users"}, "live as it was"
        assert _oid(app_db, new) is None
        _until("the scratch's removal", lambda: "flowstate-pitr-2" not in _scratch_dirs(archiving))
    finally:
        bot.close()
