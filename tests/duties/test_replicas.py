"""Three real bot processes on one PostgreSQL, their clocks moved together through the test-only clock file:
each duty slot is run by exactly one of them."""

from __future__ import annotations

import time

from sqlalchemy import select

from bot.duties.model import DutyRun
from bot.jobs.model import Job
from bot.store.engine import Store
from tests.conftest import BotProcess
from tests.duties.conftest import OPS, utc


def wait_for_runs(store: Store, count: int, timeout: float = 60.0) -> list[DutyRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as session:
            runs = list(session.scalars(select(DutyRun).where(DutyRun.state.in_(["succeeded", "failed"])).order_by(DutyRun.slot, DutyRun.duty)))
        if len(runs) >= count:
            return runs
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout} s for {count} finished duty runs, got {len(runs)}")


def test_three_bot_processes_run_each_duty_slot_once(tmp_path, slack_double, postgres_url):
    stack_file = tmp_path / "flowstate.toml"
    stack_file.write_text("# nothing to probe: the daily report says so\n")
    clock = tmp_path / "clock"
    clock.write_text("2026-03-28T07:30:00+00:00")
    env = dict(
        FLOWSTATE_DATABASE_URL=postgres_url,
        FLOWSTATE_CLOCK_FILE=str(clock),
        FLOWSTATE_OPS_CHANNEL=OPS,
        FLOWSTATE_TIMEZONE="Europe/Berlin",
        FLOWSTATE_DAILY_REPORT_AT="08:30",
        FLOWSTATE_BACKUP_AT="off",
        FLOWSTATE_DRILL_AT="off",
        FLOWSTATE_WATCH_MINUTES="1",
    )
    bots = [BotProcess(tmp_path, slack_double, tmp_path / f"home{n}", str(stack_file), **env) for n in range(3)]
    store = Store(postgres_url)
    try:
        for bot in bots:
            bot.start()
        wait_for_runs(store, 2)  # the daily report and the watch of 07:30 UTC
        clock.write_text("2026-03-29T06:30:00+00:00")  # the next morning, after the clocks went forward
        runs = wait_for_runs(store, 4)
        time.sleep(5)  # two more sweeps of every runner: nobody runs a slot again
        with store.session() as session:
            runs = list(session.scalars(select(DutyRun).order_by(DutyRun.slot, DutyRun.duty)))
            jobs = list(session.scalars(select(Job).where(Job.source == "scheduler")))
        assert [(run.duty, run.slot, run.state) for run in runs] == [
            ("daily-report", utc(2026, 3, 28, 7, 30), "succeeded"),
            ("watch-check", utc(2026, 3, 28, 7, 30), "succeeded"),
            ("daily-report", utc(2026, 3, 29, 6, 30), "succeeded"),
            ("watch-check", utc(2026, 3, 29, 6, 30), "succeeded"),
        ]
        assert len(jobs) == 4 and {job.state for job in jobs} == {"succeeded"}
        reports = [call for call in slack_double.calls_to("chat.postMessage") if call.params.get("text", "").startswith("☀️ Daily report")]
        assert [call.params["channel"] for call in reports] == [OPS, OPS]
        assert "Sat 2026-03-28" in reports[0].params["text"] and "Sun 2026-03-29" in reports[1].params["text"]
    finally:
        for bot in bots:
            if bot.process is not None:
                bot.close()
        store.dispose()
