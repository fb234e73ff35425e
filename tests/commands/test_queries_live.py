"""/queries cancel PID and /queries terminate PID on the live stack's PostgreSQL, against a real sleeping session;
and what /queries masks in a statement's full text."""

import re
import threading
import time
from contextlib import contextmanager

import psycopg

from bot.adapters.console import run_approved
from bot.frame.roles import Role
from bot.stack.database import BOT_APP, STATEMENT_MASKS
from tests.commands.test_stats_live import _short_long_query_threshold
from tests.conftest import grant, run

CARD = "4111 1111 1111 1111"
SLEEPING = f"SELECT pg_sleep(60), '{CARD}' AS card, 'dana@example.com' AS email /* the app's slow report */"


@contextmanager
def _sleeping(dsn: str, application: str = "flowstate-ai", statement: str = SLEEPING):
    """A session sleeping in a statement until something ends it (or the block does); yields its pid and how it ended."""
    holder = psycopg.connect(dsn, autocommit=True, application_name=application)
    ended: list[BaseException] = []

    def hold():
        try:
            holder.execute(statement)
        except psycopg.Error as error:
            ended.append(error)

    sleeper = threading.Thread(target=hold, daemon=True)
    sleeper.start()
    time.sleep(1.5)
    try:
        yield holder.info.backend_pid, ended, holder
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (holder.info.backend_pid,))
        sleeper.join(timeout=10)
        holder.close()


def _alive(dsn: str, pid: int) -> str | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row[0] if row else None


def _runtime(make_runtime, live_stack):
    runtime = make_runtime(_short_long_query_threshold(live_stack))
    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    return runtime


def test_an_operator_cancels_a_long_statement_and_its_session_stays(make_runtime, live_stack):
    runtime, dsn = _runtime(make_runtime, live_stack), live_stack.database.dsn
    with _sleeping(dsn) as (pid, ended, _holder):
        listed = run(runtime, "UOP", "/queries").text
        assert f"• pid {pid} (flowstate, active)" in listed, listed
        reply = run(runtime, "UOP", f"/queries cancel {pid}")
        assert reply.text.startswith(f"Cancelled the statement of pid {pid} of flowstate (flowstate-ai), connected since "), reply.text
        assert "the session stays connected." in reply.text and not reply.failed
        assert CARD not in reply.text and "'[card]' AS card, '[email]' AS email" in reply.text, reply.text
        assert reply.text.endswith(f"Masked: {STATEMENT_MASKS}."), "it says exactly what is masked"
        for _ in range(50):
            if ended:
                break
            time.sleep(0.1)
        assert isinstance(ended[0], psycopg.errors.QueryCanceled), ended
        assert _alive(dsn, pid) == "idle", "the statement is cancelled, the session is not"
        assert runtime.jobs.pending() == [], "a cancel needs no approval"


def test_terminating_a_session_needs_approval_then_ends_it(make_runtime, live_stack):
    runtime, dsn = _runtime(make_runtime, live_stack), live_stack.database.dsn
    with _sleeping(dsn) as (pid, ended, _holder):
        asked = run(runtime, "UOP", f"/queries terminate {pid}")
        # The request binds the session by its pid and its start, so a pid reused while it waits is not signalled.
        assert re.match(rf"Request #1: `/queries terminate {pid} \d{{4}}-\d\d-\d\dT[\d:.]+Z` needs", asked.text), asked.text
        assert _alive(dsn, pid) == "active", "nothing ends before the approval"
        request = runtime.approvals.details(runtime.jobs.get(1))
        assert f"Ends the session pid {pid} of flowstate (flowstate-ai)" in request[0], request
        assert "[card]" in request[1] and CARD not in request[1]
        run(runtime, "UAPP", "/approvals approve 1")
        (reply,) = list(run_approved(runtime, lambda _text: None))
        assert reply.text.startswith(f"Ended the session pid {pid} of flowstate (flowstate-ai)"), reply.text
        assert _alive(dsn, pid) is None
        assert ended and not isinstance(ended[0], psycopg.errors.QueryCanceled), "the session was ended, not its statement"


def test_a_terminate_approved_after_its_session_ended_signals_nobody(make_runtime, live_stack):
    runtime, dsn = _runtime(make_runtime, live_stack), live_stack.database.dsn
    with _sleeping(dsn) as (pid, _ended, holder):
        run(runtime, "UOP", f"/queries terminate {pid}")
        holder.cancel()
    time.sleep(0.5)
    run(runtime, "UAPP", "/approvals approve 1")
    (reply,) = list(run_approved(runtime, lambda _text: None))
    assert reply.text == f"No session has pid {pid} (any more); /queries lists the application's statements with their pids.", reply.text


def test_the_bots_own_sessions_other_databases_and_unknown_pids_are_refused_in_one_sentence(make_runtime, live_stack):
    runtime, dsn = _runtime(make_runtime, live_stack), live_stack.database.dsn
    other = dsn.rsplit("/", 1)[0] + "/postgres"
    with _sleeping(dsn, application=BOT_APP + "-maintenance") as (backup, _e1, _h1), _sleeping(other) as (elsewhere, _e2, _h2):
        for action in ("cancel", "terminate"):
            own = run(runtime, "UOP", f"/queries {action} {backup}").text
            assert own == f"pid {backup} is the bot's own session ({BOT_APP}-maintenance); only the application's sessions can be ended here."
            foreign = run(runtime, "UOP", f"/queries {action} {elsewhere}").text
            assert foreign == (f"pid {elsewhere} is a session of the database postgres, not of the application's database flowstate_ai; "
                               "only the application's sessions can be ended here."), foreign
        assert _alive(dsn, backup) == "active" and _alive(dsn, elsewhere) == "active"
    assert run(runtime, "UOP", "/queries cancel 99999999").text == (
        "No session has pid 99999999 (any more); /queries lists the application's statements with their pids.")
    assert run(runtime, "UOP", "/queries cancel").text.startswith(
        "Cancel needs the session's pid, such as /queries cancel 12345 (/queries lists them); usage: ")
    assert run(runtime, "UOP", "/queries 12").text.startswith("Say what to do with pid 12: /queries cancel 12 or /queries terminate 12")
    assert runtime.jobs.pending() == [], "no request is made for what is refused"


def test_an_idle_session_has_no_statement_to_cancel(make_runtime, live_stack):
    runtime, dsn = _runtime(make_runtime, live_stack), live_stack.database.dsn
    with psycopg.connect(dsn, autocommit=True, application_name="flowstate-ai") as idle:
        pid = idle.info.backend_pid
        text = run(runtime, "UOP", f"/queries cancel {pid}").text
    assert text == f"pid {pid} runs no statement now (it is idle); /queries terminate {pid} ends the session.", text
