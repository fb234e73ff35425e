"""A question is answered first: its reply goes out before its bookkeeping, which still lands, in one piece.

What is promised: a runner claims several queued jobs in one statement, never more than it asked for, and has
their rows without reading them back; a command that changes nothing gets its reply before its outcome row and
its job's end are written, and both are written together after it; and a runner that dies between the two leaves
a job that is interrupted, never run again, its reply never sent twice.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from bot.frame.registry import Invocation
from bot.jobs.model import RUNNING, Job
from bot.jobs.queue import JobQueue
from bot.store.engine import AuditEntry, Store
from tests.conftest import BotProcess
from tests.waiting import eventually


def _rows(store: Store) -> list[tuple[str, str, int | None]]:
    with store.session() as session:
        return [(row.command, row.outcome, row.job_id) for row in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def _job(store: Store) -> Job | None:
    with store.session() as session:
        return session.scalar(select(Job))


def test_a_runner_claims_at_most_as_many_jobs_as_it_asks_for_oldest_first(database_url):
    store = Store(database_url)
    store.migrate()
    jobs = JobQueue(store)
    ids = [jobs.submit(Invocation("UOP", "whoami", f"#{i}", "C1", "slack"), dedupe_key=f"cmd:{i}") for i in range(5)]
    with store.session.begin() as session:
        session.get(Job, ids[1]).arguments = {"services": ["backend", "frontend"], "note": "é"}

    first = jobs.claim_many("runner-a", 2)
    assert [job.id for job in first] == ids[:2], "the two oldest, and not one more"
    assert [(job.state, job.holder, job.text) for job in first] == [(RUNNING, "runner-a", "#0"), (RUNNING, "runner-a", "#1")]
    assert first[1].arguments == {"services": ["backend", "frontend"], "note": "é"}
    assert first[0].started_at == jobs.get(ids[0]).started_at and first[0].started_at.tzinfo is not None, "as the ORM loads it"

    rest = jobs.claim_many("runner-b", 10)
    assert [job.id for job in rest] == ids[2:] and {job.holder for job in rest} == {"runner-b"}
    assert jobs.claim_many("runner-a", 10) == []
    with store.session() as session:
        assert {job_id: holder for job_id, holder in session.execute(select(Job.id, Job.holder))} == {**dict.fromkeys(ids[:2], "runner-a"), **dict.fromkeys(ids[2:], "runner-b")}
    store.dispose()


def test_a_question_is_answered_before_its_bookkeeping_which_then_lands_in_one_piece(make_runtime, slack_double, database_url):
    from bot.adapters.slack.client import web_client
    from bot.jobs.runner import Runner

    runtime = make_runtime(database_url=database_url, admins=["UA"], slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test-token")
    job_id = runtime.jobs.submit(
        Invocation("UA", "whoami", "", "C0OPS", "slack"), response_url=slack_double.response_url("answer"), dedupe_key="t1"
    )
    seen_at_reply = []
    delivered = slack_double._response_url_post

    def reply_arrives(req, name, body):  # what the store holds at the moment the reply reaches Slack
        seen_at_reply.append((runtime.jobs.get(job_id).state, _rows(runtime.store)))
        delivered(req, name, body)

    slack_double._response_url_post = reply_arrives
    runner = Runner(runtime, web_client(runtime.settings))
    runner.free.acquire()
    runner._process(runtime.jobs.claim_next(runtime.holder, source="slack"))

    (reply,) = slack_double.responses("answer")
    assert "<@UA>" in reply["text"] and "admin" in reply["text"]
    assert seen_at_reply == [("running", [("whoami", "allowed", job_id)])], "the reply did not wait for the bookkeeping"
    job = runtime.jobs.get(job_id)
    assert (job.state, job.result) == ("succeeded", reply["text"]) and job.finished_at is not None
    assert _rows(runtime.store) == [("whoami", "allowed", job_id), ("whoami", "succeeded", job_id)]


@pytest.mark.process  # a bot process of its own whose runner is killed after answering (tests/conftest.py BotProcess)
def test_a_runner_killed_after_answering_leaves_its_job_interrupted_never_run_or_answered_again(tmp_path, slack_double):
    stack_file = tmp_path / "flowstate.toml"
    stack_file.write_text("# nothing to probe\n")
    bot = BotProcess(tmp_path, slack_double, tmp_path / "home", str(stack_file), FLOWSTATE_FAULT_AT="reply:after_delivery")
    try:
        sender = bot.start()
        assert sender.slash("/whoami", "", "U0ADMIN", "C0OPS", response_url=slack_double.response_url("once")).status == 200
        slack_double.wait_for_response("once", timeout=60)
        job = eventually(lambda: (found := _job(bot.store)) is not None and found.state != "running" and found, "the bot to see its runner died", timeout=60)
        assert job.state == "interrupted", "the runner died before the job's end was written: interrupted, not succeeded"
        notice = eventually(lambda: [m for m in slack_double.messages("C0OPS") if "was interrupted" in m["text"]], "the channel's notice", timeout=60)
        assert "It was not run again." in notice[0]["text"]
        time.sleep(3)  # the new runner's sweeps: nothing runs it again
        assert len(slack_double.responses("once")) == 1, "the reply was delivered once"
        assert _job(bot.store).state == "interrupted"
        assert [outcome for _c, outcome, _j in _rows(bot.store)] == ["allowed", "interrupted"]
    finally:
        bot.close()
