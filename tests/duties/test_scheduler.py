"""Scenarios of the scheduled duties on a clock the test moves, on SQLite and PostgreSQL, through a runner's sweep."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from bot.frame.config import DatabaseSection, StackConfig, TcpProbe
from bot.jobs.model import Job
from bot.frame.registry import Invocation
from bot.frame.roles import Role
from bot.store.engine import AuditEntry
from tests.conftest import grant
from tests.duties.conftest import OPS, Scheduled, ManualClock, utc


@pytest.fixture
def small_stack(postgres_admin) -> StackConfig:
    """A stack /health and /stats can measure in full without Docker: the machine's PostgreSQL."""
    return StackConfig(
        database=DatabaseSection(dsn=postgres_admin),
        probes=[TcpProbe(kind="tcp", name="postgres", host="127.0.0.1", port=5432)],
    )


def test_the_daily_report_comes_at_its_local_time_on_both_sides_of_the_spring_change(scheduled, database_url, small_stack):
    duties = scheduled(utc(2026, 3, 28, 7, 29), database_url=database_url, stack=small_stack, daily_report_at="08:30")
    assert duties.at(utc(2026, 3, 28, 7, 29)) == []  # 07:29 UTC is 08:29 CET: a minute early (and yesterday's is no news)
    (report,) = duties.at(utc(2026, 3, 28, 7, 30))
    assert report.startswith("☀️ Daily report for Sat 2026-03-28: 🟢 All 1 checks healthy; 🟢 No threshold crossed")
    assert duties.at(utc(2026, 3, 28, 7, 31)) == []
    assert duties.at(utc(2026, 3, 29, 6, 29)) == []  # 08:29 CEST
    (report,) = duties.at(utc(2026, 3, 29, 6, 30))  # 08:30 CEST: an hour earlier in UTC than the day before
    assert "Sun 2026-03-29" in report
    assert duties.at(utc(2026, 3, 29, 7, 30)) == []  # where 08:30 was in UTC yesterday: nothing more
    assert [(run.slot, run.state) for run in duties.runs()] == [(utc(2026, 3, 28, 7, 30), "succeeded"), (utc(2026, 3, 29, 6, 30), "succeeded")]
    with duties.rt.store.session() as session:
        audited = session.scalars(select(AuditEntry).where(AuditEntry.user_id == "scheduler")).all()
    assert {(entry.command, entry.outcome) for entry in audited} >= {("health", "succeeded"), ("stats", "succeeded"), ("daily-report", "succeeded")}


def test_a_time_that_happens_twice_when_clocks_go_back_runs_once(scheduled, database_url):
    duties = scheduled(utc(2026, 10, 25, 0, 0), database_url=database_url, daily_report_at="02:30")
    assert duties.at(utc(2026, 10, 25, 0, 0)) == []
    assert duties.at(utc(2026, 10, 25, 0, 30)) != []  # 02:30 CEST
    assert duties.at(utc(2026, 10, 25, 1, 30)) == []  # 02:30 CET, the same wall-clock time again
    assert duties.at(utc(2026, 10, 26, 1, 30)) != []  # the next day's 02:30 CET
    assert [run.slot for run in duties.runs()] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_a_slot_missed_while_the_bot_was_down_runs_late_within_the_grace_window_and_is_reported_missed_after_it(
    scheduled, database_url, small_stack
):
    duties = scheduled(utc(2026, 3, 28, 7, 30), database_url=database_url, stack=small_stack, daily_report_at="08:30", duty_grace_minutes=60)
    assert len(duties.at(utc(2026, 3, 28, 7, 30))) == 1
    # Down from then until 50 minutes after the next slot: within the grace window, the report still comes.
    (late,) = duties.at(utc(2026, 3, 29, 7, 20))
    assert late.startswith("☀️ Daily report for Sun 2026-03-29")
    # Down again until 90 minutes after the one after: reported as missed, once, and not run.
    (missed,) = duties.at(utc(2026, 3, 30, 8, 0))
    assert missed.startswith("⚠️ *Daily health report* of Mon 2026-03-30 08:30 CEST was missed: no replica of the bot was running then")
    assert "The next one is at Tue 2026-03-31 08:30 CEST" in missed
    assert duties.at(utc(2026, 3, 30, 8, 1)) == []
    assert [run.state for run in duties.runs()] == ["succeeded", "succeeded", "missed"]
    grant(duties.rt, "U0VIEWER", Role.viewer)
    shown = duties.rt.pipeline.dispatch(Invocation("U0VIEWER", "schedule", "", "C1")).text
    assert "*Daily health report*: daily at 08:30; next Tue 2026-03-31 08:30 CEST; last 🟠 missed for Mon 2026-03-30 08:30 CEST" in shown


def test_a_duty_turned_on_for_the_first_time_reports_nothing_missed(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 30, 12, 0), database_url=database_url, daily_report_at="08:30")
    assert duties.at(utc(2026, 3, 30, 12, 0)) == []
    assert duties.runs() == []


def test_three_replicas_ticking_at_once_on_postgresql_run_each_slot_once(make_runtime, postgres_url, small_stack):
    clock = ManualClock(utc(2026, 3, 28, 7, 30))
    replicas = [
        Scheduled(
            make_runtime(small_stack, database_url=postgres_url, ops_channel=OPS, timezone="Europe/Berlin", daily_report_at="08:30",
                         backup_at="off", drill_at="off", watch_minutes=1),
            clock,
            evaluator=lambda _duties: [],
        )
        for _ in range(3)
    ]
    for slot in [utc(2026, 3, 28, 7, 30), utc(2026, 3, 28, 7, 31), utc(2026, 3, 29, 6, 30)]:
        start = threading.Barrier(3)

        def sweep(replica: Scheduled) -> None:
            start.wait()
            replica.at(slot)

        threads = [threading.Thread(target=sweep, args=(replica,)) for replica in replicas]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    posts = [text for replica in replicas for text in replica.channel.texts]
    assert sum(text.startswith("☀️ Daily report") for text in posts) == 2
    runs = replicas[0].runs()
    assert sorted((run.duty, run.slot) for run in runs) == [
        ("daily-report", utc(2026, 3, 28, 7, 30)),
        ("daily-report", utc(2026, 3, 29, 6, 30)),
        ("watch-check", utc(2026, 3, 28, 7, 30)),
        ("watch-check", utc(2026, 3, 28, 7, 31)),
        ("watch-check", utc(2026, 3, 29, 6, 30)),
    ]
    assert {run.state for run in runs} == {"succeeded"}
    with replicas[0].rt.store.session() as session:
        jobs = session.scalars(select(Job).where(Job.source == "scheduler")).all()
    assert len(jobs) == 5 and {job.state for job in jobs} == {"succeeded"}


def test_a_duty_whose_runner_died_is_marked_interrupted_told_once_and_never_run_again(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 28, 7, 30), database_url=database_url, daily_report_at="08:30")
    duties.clock.at = utc(2026, 3, 28, 7, 30)
    duties.rt.duties.tick()
    job = duties.rt.jobs.claim_next("elsewhere/1/dead")  # another replica took it, then died
    assert job.command == "daily-report"
    duties.rt.jobs.interrupt(holder="elsewhere/1/dead")
    (told,) = duties.at(utc(2026, 3, 28, 7, 31))
    assert told.startswith("⚠️ *Daily health report* of Sat 2026-03-28 08:30 CET was interrupted")
    assert duties.at(utc(2026, 3, 28, 7, 32)) == []
    assert [run.state for run in duties.runs()] == ["interrupted"]


def test_a_failed_nightly_backup_is_loud_and_shown_failed(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 28, 1, 0), database_url=database_url, backup_at="02:00", approver_group="S0APPROVERS")
    (alarm,) = duties.at(utc(2026, 3, 28, 1, 0))
    assert alarm.startswith("🚨 <!subteam^S0APPROVERS> The nightly backup of Sat 2026-03-28 02:00 CET failed: ")
    (run,) = duties.runs()
    assert run.state == "failed" and run.message.startswith("failed: ")


def test_a_drill_with_no_backup_to_verify_is_loud(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 29, 2, 0), database_url=database_url, drill_at="sun 04:00")
    (alarm,) = duties.at(utc(2026, 3, 29, 2, 0))
    assert alarm == "🚨 The weekly restore drill of Sun 2026-03-29 04:00 CEST failed: there is no complete backup of the stack to verify; /backup takes one."


def test_schedule_lists_every_duty_whether_on_its_next_run_and_last_result(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 28, 7, 30), database_url=database_url, daily_report_at="08:30", drill_at="sun 04:00")
    duties.at(utc(2026, 3, 28, 7, 30))
    grant(duties.rt, "U0VIEWER", Role.viewer)
    lines = duties.rt.pipeline.dispatch(Invocation("U0VIEWER", "schedule", "", "C1")).text.splitlines()
    assert lines[0].startswith(f"Scheduled duties, posted to <#{OPS}> (times in Europe/Berlin")
    assert lines[1].startswith("*Daily health report*: daily at 08:30; next Sun 2026-03-29 08:30 CEST; last 🟢 succeeded for Sat 2026-03-28 08:30 CET")
    assert lines[2] == "⚪ *Nightly backup*: off (FLOWSTATE_BACKUP_AT=off)"
    assert lines[3] == "*Weekly restore drill*: weekly on Sun at 04:00; next Sun 2026-03-29 04:00 CEST; has not run yet"
    assert lines[4] == "⚪ *Watch*: off (FLOWSTATE_WATCH_MINUTES=0)"


def test_without_an_ops_channel_no_duty_runs_and_schedule_says_what_to_set(scheduled, database_url):
    duties = scheduled(utc(2026, 3, 28, 7, 30), database_url=database_url, daily_report_at="08:30", ops_channel=None)
    assert duties.at(utc(2026, 3, 28, 7, 30)) == [] and duties.runs() == []
    grant(duties.rt, "U0VIEWER", Role.viewer)
    shown = duties.rt.pipeline.dispatch(Invocation("U0VIEWER", "schedule", "", "C1")).text
    assert shown.startswith("No duty runs: set FLOWSTATE_OPS_CHANNEL to the id of the channel they post to.")


def test_a_daily_report_with_a_failing_check_posts_health_and_stats_in_full(scheduled, database_url, postgres_admin):
    stack = StackConfig(
        database=DatabaseSection(dsn=postgres_admin),
        probes=[TcpProbe(kind="tcp", name="closed", host="127.0.0.1", port=9, timeout=1.0)],
    )
    duties = scheduled(utc(2026, 3, 28, 7, 30), database_url=database_url, stack=stack, daily_report_at="08:30")
    header, health, stats = duties.at(utc(2026, 3, 28, 7, 30))
    assert header == "☀️ Daily report for Sat 2026-03-28: not all is well; /health and /stats follow."
    health, card = health.split("\n\n", 1)  # a failing /health ends with the change card (tests/changes)
    assert health.startswith("🔴 *closed*:") and health.endswith("🔴 1 of 1 checks failing")
    assert card.startswith("What changed in the stack in the last 6 h")
    assert stats.splitlines()[0] == "*API errors (5xx, last 15m)*"
    (run,) = duties.runs()
    assert (run.state, run.message) == ("succeeded", "posted; health failing, stats ok")


def test_the_metrics_see_each_duty_s_runs_by_state_and_whether_its_last_one_failed(scheduled, database_url):
    from bot.duties.service import run_counts

    duties = scheduled(utc(2026, 3, 28, 1, 0), database_url=database_url, backup_at="02:00", daily_report_at="08:30")
    duties.at(utc(2026, 3, 28, 1, 0))  # the backup fails: no [database] section
    duties.at(utc(2026, 3, 28, 7, 30))
    assert run_counts(duties.rt.store) == {"nightly-backup": ({"failed": 1}, True), "daily-report": ({"succeeded": 1}, False)}
