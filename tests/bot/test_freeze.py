"""Change freezes: /freeze refusing changes with who, why and until when; break-glass breaking it loudly; a stack file
window on local time; the backup at a freeze's start once across replicas; watch alerts held and summarised once.
Console runtimes on the embedded SQLite store and on PostgreSQL, through a runner's sweep on a clock the test moves."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.adapters.console import run_approved
from bot.duties.model import DutyRun, Freeze, FreezeAlert
from bot.frame.config import ConfigError, DatabaseSection, StackConfig, load_stack
from bot.frame.registry import Invocation, Reply, command
from bot.frame.roles import Role
from bot.jobs.model import Job
from bot.store.engine import AuditEntry
from tests.conftest import grant, run
from tests.duties.conftest import OPS, ManualClock, Scheduled, utc
from tests.duties.test_watch import Values
from tests.fakes import FakeStack

START = utc(2026, 12, 5, 15, 0)  # a Saturday; 15:00 UTC
FROZEN = "frozen until 17:00 UTC by <@UAPP>: release day"
REFUSED = f'/restart is refused: changes are {FROZEN}. An admin may still run it with --break-glass "REASON".'


def _scheduled(make_runtime, database_url: str, stack: StackConfig | None = None, evaluator=None, **settings) -> Scheduled:
    values = dict(
        database_url=database_url, admins=["UADMIN"], ops_channel=OPS, timezone="UTC", daily_report_at="off", backup_at="off",
        drill_at="off", watch_minutes=0,
    )
    values.update(settings)
    scheduled = Scheduled(make_runtime(stack, **values), ManualClock(START), evaluator)
    grant(scheduled.rt, "UOP", Role.operator)
    grant(scheduled.rt, "UAPP", Role.approver)
    grant(scheduled.rt, "UAPP2", Role.approver)
    return scheduled


@pytest.fixture
def frozen_stack(make_runtime, database_url):
    """A stack in memory (its Compose is tests/fakes.py's), the ops channel a list; not frozen yet."""
    scheduled = _scheduled(make_runtime, database_url)
    scheduled.rt.stack = FakeStack(["backend", "frontend"])
    yield scheduled
    scheduled.rt.stack.pool.shutdown(wait=False)


def _audit(runtime, command: str) -> list[AuditEntry]:
    with runtime.store.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.command == command).order_by(AuditEntry.id)))


def _freezes(runtime) -> list[Freeze]:
    with runtime.store.session() as session:
        return list(session.scalars(select(Freeze).order_by(Freeze.id)))


def test_a_freeze_refuses_restart_with_its_end_time_and_a_break_glass_breaks_it_loudly(frozen_stack):
    rt = frozen_stack.rt
    said = run(rt, "UAPP", '/freeze 2h "release day"').text
    assert said.startswith(f"🧊 Changes to fake are {FROZEN}. Commands that change the stack are refused until then")
    assert said.endswith("No backup was taken: the stack file has no [database] section.")
    assert [(channel, reply.text) for channel, reply in frozen_stack.channel.posts] == [(OPS, said)]

    assert run(rt, "UOP", "/restart backend").text == REFUSED
    assert rt.jobs.pending() == [], "no request was made"
    assert rt.stack.fake.calls == []
    refused = _audit(rt, "restart")[-1]
    assert (refused.user_id, refused.outcome, refused.error) == ("UOP", "rejected", f"change freeze: {FROZEN}")

    reply = rt.pipeline.dispatch(Invocation("UADMIN", "restart", 'backend --break-glass "site down"', "C1"))
    assert reply.text.startswith("Restarted\n🟢 *backend* is healthy again")
    assert rt.stack.fake.calls == [("restart", ("backend",))]
    (notice,) = [reply.text for channel, reply in frozen_stack.channel.posts if channel == "C1"]
    assert notice == (
        "🚨 *Break-glass*: <@UADMIN> runs `/restart backend` without a second person's approval, breaking the change freeze "
        f"(changes are {FROZEN}). Reason: site down"
    )
    broke = [entry for entry in _audit(rt, "restart") if entry.outcome == "break-glass"]
    assert [entry.error for entry in broke] == [f"site down [broke the change freeze: {FROZEN}]"]


def test_a_change_that_needs_no_approval_takes_break_glass_only_during_a_freeze(frozen_stack):
    rt = frozen_stack.rt
    nudged = []

    @command("nudge", summary="Nudge the stack.", usage="/nudge", role=Role.operator, changes=True)
    def nudge(_ctx, _args) -> Reply:
        nudged.append(1)
        return Reply("Nudged.")

    rt.commands["nudge"] = nudge.declared
    assert run(rt, "UADMIN", '/nudge --break-glass "why"').text == "/nudge with these arguments needs no approval; run it without --break-glass."
    run(rt, "UAPP", '/freeze 2h "release day"')
    assert run(rt, "UADMIN", "/nudge").text == f'/nudge is refused: changes are {FROZEN}. An admin may still run it with --break-glass "REASON".'
    assert nudged == []
    assert run(rt, "UADMIN", '/nudge --break-glass "the fix cannot wait"').text == "Nudged."
    assert nudged == [1]
    (notice,) = [reply.text for channel, reply in frozen_stack.channel.posts if channel == "C1"]
    assert "breaking the change freeze" in notice and notice.endswith("Reason: the fix cannot wait")


def test_an_approved_request_that_comes_to_run_during_a_freeze_is_refused_and_lets_the_lock_go(frozen_stack):
    rt = frozen_stack.rt
    asked = run(rt, "UOP", "/restart backend").text
    assert asked.startswith("Request #1: `/restart backend` needs a second person's approval")
    assert run(rt, "UAPP2", "/approvals approve 1").text == "You approved request #1; it runs now."
    run(rt, "UAPP", '/freeze 2h "release day"')
    (reply,) = run_approved(rt, lambda _text: None)
    assert reply.text == REFUSED
    assert rt.stack.fake.calls == []
    assert rt.jobs.get(1).state == "refused"
    assert rt.locks.held(rt.stack_name) is None


def test_health_and_stats_still_answer_during_a_freeze_opened_by_the_freeze_line(frozen_stack):
    rt = frozen_stack.rt
    assert not run(rt, "UOP", "/health").text.startswith("🧊")
    run(rt, "UAPP", '/freeze 2h "release day"')
    banner = f"🧊 Change freeze: changes are {FROZEN}; commands that change the stack are refused until then."
    health = run(rt, "UOP", "/health").text.splitlines()
    assert health[0] == banner
    assert health[-1] == "🟢 All 2 checks healthy"
    stats = run(rt, "UOP", "/stats").text.splitlines()
    assert stats[0] == banner and len(stats) > 1
    assert run(rt, "UOP", "/freeze").text.splitlines()[0] == f"🧊 Changes are {FROZEN}."


def test_the_daily_report_opens_with_the_freeze_line(make_runtime, database_url):
    scheduled = _scheduled(make_runtime, database_url, daily_report_at="15:30")
    rt = scheduled.rt
    rt.stack = FakeStack(["backend"])
    try:
        run(rt, "UAPP", '/freeze 2h "release day"')
        (report,) = scheduled.at(START + timedelta(minutes=30))
        lines = report.splitlines()
        assert lines[0] == f"🧊 Change freeze: changes are {FROZEN}; commands that change the stack are refused until then."
        assert lines[1].startswith("☀️ Daily report for Sat 2026-12-05: ")
    finally:
        rt.stack.pool.shutdown(wait=False)


def test_a_window_of_the_stack_file_freezes_at_its_local_times_across_a_clock_change(make_runtime, database_url, tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text('[[freeze.window]]\ndays = ["fri"]\nfrom = "16:00"\nto = "mon 08:00"\nreason = "weekend"\n', encoding="utf-8")
    scheduled = _scheduled(make_runtime, database_url, timezone="Europe/Berlin")
    rt = scheduled.rt
    rt.stack = FakeStack(["backend"])
    rt.stack.config = rt.stack.config.model_copy(update={"freeze": load_stack(path, required=True).freeze})
    try:
        # Friday 15:59 CET: not yet; the next window is named.
        assert scheduled.at(utc(2026, 3, 27, 14, 59)) == []
        assert run(rt, "UOP", "/freeze").text == (
            "Nothing is frozen now. The next freeze window starts 16:00 CET and lasts until Mon 2026-03-30 08:00 CEST: weekend."
        )
        (started,) = scheduled.at(utc(2026, 3, 27, 15, 0))  # 16:00 CET
        assert started.startswith(
            "🧊 Changes to fake are frozen until Mon 2026-03-30 08:00 CEST by the stack file's freeze window: weekend."
        )
        assert scheduled.at(utc(2026, 3, 28, 12, 0)) == []  # started once
        assert run(rt, "UOP", "/restart backend").text.startswith(
            "/restart is refused: changes are frozen until Mon 2026-03-30 08:00 CEST by the stack file's freeze window: weekend."
        )
        # Monday 07:59 CEST (05:59 UTC, the clocks went forward on Sunday): still frozen; 08:00 CEST: over, said once.
        assert scheduled.at(utc(2026, 3, 30, 5, 59)) == []
        assert run(rt, "UOP", "/restart backend").text.startswith("/restart is refused")
        (ended,) = scheduled.at(utc(2026, 3, 30, 6, 0))
        assert ended == (
            "🔓 The change freeze by the stack file's freeze window (weekend) ended at 08:00 CEST; changes are allowed again. "
            "No watch alert fired during the freeze."
        )
        assert scheduled.at(utc(2026, 3, 30, 6, 1)) == []
        assert run(rt, "UOP", "/restart backend").text.startswith("Request #")
        audited = [(entry.user_id, entry.arguments["action"]) for entry in _audit(rt, "freeze") if entry.source == "scheduler"]
        assert audited == [("scheduler", "start"), ("scheduler", "end")]
    finally:
        rt.stack.pool.shutdown(wait=False)


def test_freeze_end_by_another_approver_is_audited_and_summarised_once(frozen_stack):
    rt = frozen_stack.rt
    run(rt, "UAPP", '/freeze 2h "release day"')
    frozen_stack.clock.at = START + timedelta(minutes=30)
    ended = run(rt, "UAPP2", "/freeze end").text
    assert ended == (
        "🔓 The change freeze by <@UAPP> (release day) was ended early by <@UAPP2> at 15:30 UTC; changes are allowed again. "
        "No watch alert fired during the freeze."
    )
    assert run(rt, "UAPP", "/freeze end").text == "Nothing is frozen now, so there is nothing to end; /freeze shows the next freeze."
    assert frozen_stack.at(START + timedelta(hours=3)) == [], "its natural end does not say it again"
    assert frozen_stack.channel.texts.count(ended) == 1
    (freeze,) = _freezes(rt)
    assert (freeze.frozen_by, freeze.ended_by, freeze.ended_at) == ("UAPP", "UAPP2", START + timedelta(minutes=30))
    rows = [(entry.user_id, entry.outcome, entry.arguments) for entry in _audit(rt, "freeze") if entry.outcome == "succeeded"]
    assert rows == [("UAPP", "succeeded", {"what": "2h", "reason": "release day"}), ("UAPP2", "succeeded", {"what": "end", "reason": ""})]
    assert run(rt, "UOP", "/restart backend").text.startswith("Request #")


def test_watch_alerts_during_a_freeze_are_held_and_summarised_once_when_it_ends(make_runtime, database_url):
    values = Values()
    scheduled = _scheduled(make_runtime, database_url, evaluator=values, watch_minutes=5, watch_checks=1)
    rt = scheduled.rt
    run(rt, "UAPP", '/freeze 1h "release day"')
    values.now.update({"cpu:backend": True, "queue_length": False})
    assert scheduled.at(START + timedelta(minutes=5)) == []
    values.now.update({"cpu:backend": False, "queue_length": True})
    assert scheduled.at(START + timedelta(minutes=10)) == []
    values.now.update({"cpu:backend": True})
    assert scheduled.at(START + timedelta(minutes=15)) == []
    firing = run(rt, "UOP", "/watch").text
    assert "🔴 *cpu:backend*" in firing and "🔴 *queue_length*" in firing, "still recorded while held"
    values.now.update({"cpu:backend": False, "queue_length": False})
    (summary,) = scheduled.at(START + timedelta(hours=1))
    assert summary.startswith("🔓 The change freeze by <@UAPP> (release day) ended at 16:00 UTC; changes are allowed again. ")
    assert summary.endswith(
        "During the freeze 3 alerts fired: cpu:backend at 15:05 UTC: cpu:backend above its threshold; queue_length at 15:10 UTC: "
        "queue_length above its threshold; cpu:backend at 15:15 UTC: cpu:backend above its threshold. /watch shows what still fires."
    )
    assert scheduled.at(START + timedelta(hours=1, minutes=5)) == []
    assert scheduled.channel.texts.count(summary) == 1
    (end,) = [entry for entry in _audit(rt, "freeze") if entry.user_id == "scheduler"]
    assert end.arguments["action"] == "end"


def test_the_backup_at_a_freezes_start_is_queued_once_by_two_replicas(make_runtime, postgres_url, postgres_admin, tmp_path):
    path = tmp_path / "flowstate.toml"
    path.write_text('[[freeze.window]]\ndays = ["sat"]\nfrom = "15:00"\nto = "18:00"\n', encoding="utf-8")
    stack = load_stack(path, required=True).model_copy(update={"database": DatabaseSection(dsn=postgres_admin)})
    clock = ManualClock(START)
    replicas = [_scheduled(make_runtime, postgres_url, stack) for _ in range(2)]
    for replica in replicas:
        replica.rt.duties.clock = clock
    barrier = threading.Barrier(2)

    def sweep(replica: Scheduled) -> None:
        barrier.wait()
        replica.runner._sweep()  # the sweep only: the backup job stays queued for the runners

    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            list(pool.map(sweep, replicas))
    told = [text for replica in replicas for text in replica.channel.texts]
    assert len(told) == 1
    assert told[0].startswith(f"🧊 Changes to {replicas[0].rt.stack_name} are frozen until 18:00 UTC by the stack file's freeze window")
    with replicas[0].rt.store.session() as session:
        jobs = session.scalars(select(Job).where(Job.command == "freeze-backup")).all()
        runs = session.scalars(select(DutyRun).where(DutyRun.duty == "freeze-backup")).all()
        freezes = session.scalars(select(Freeze)).all()
    assert len(jobs) == 1 and jobs[0].state == "queued"
    assert told[0].endswith(f"A backup is queued (request #{jobs[0].id}); /backups shows it once it is taken.")
    assert [(run_.slot, run_.job_id) for run_ in runs] == [(START, jobs[0].id)]
    assert len(freezes) == 1 and freezes[0].backup_job_id == jobs[0].id


def test_bad_input_is_refused_in_one_sentence_and_nothing_is_stored(frozen_stack, tmp_path):
    rt = frozen_stack.rt
    usage = '; usage: `/freeze [DURATION "REASON" | end]`'
    assert run(rt, "UAPP", '/freeze 0m "release day"').text == (
        "'0m' is not a length of time for a freeze; give one such as 2h or 3d, at most 14d" + usage
    )
    assert run(rt, "UAPP", "/freeze 2h").text == 'A freeze needs a reason in quotes, such as /freeze 2h "release day"' + usage
    assert run(rt, "UAPP", '/freeze 30d "holidays"').text == (
        "A freeze can last at most 14d; the stack file's [[freeze.window]] entries repeat every week" + usage
    )
    assert run(rt, "UAPP", "/freeze end now").text == "/freeze end takes nothing after it" + usage
    assert run(rt, "UOP", '/freeze 2h "release day"').text == "This use of /freeze needs the approver role and you have operator."
    assert run(rt, "UAPP", "/freeze end").text == "Nothing is frozen now, so there is nothing to end; /freeze shows the next freeze."
    assert _freezes(rt) == []
    with rt.store.session() as session:
        assert session.scalar(select(func.count()).select_from(FreezeAlert)) == 0
    assert frozen_stack.channel.texts == []

    path = tmp_path / "flowstate.toml"
    path.write_text('[[freeze.window]]\ndays = ["fri", "fry"]\nfrom = "16:00"\nto = "monday 8am"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_stack(path, required=True)
    assert str(refused.value) == (
        f"stack file {path}: freeze.window.0.days: 'fry' is not a day; use mon, tue, wed, thu, fri, sat or sun; "
        "freeze.window.0.to: 'monday 8am' is not a time; use HH:MM such as 16:00, or DAY HH:MM such as mon 08:00"
    )
