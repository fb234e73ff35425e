"""When a duty's slots fall, in a zone with daylight saving: pure functions, no database."""

from __future__ import annotations

from datetime import date, time
from zoneinfo import ZoneInfo

import pytest

from bot.frame.config import ConfigError, load_settings
from bot.duties.slots import Daily, Every, Weekly, latest_slot, local_instant, next_slot, parse_daily, parse_weekly
from tests.duties.conftest import utc

BERLIN = ZoneInfo("Europe/Berlin")


def test_a_daily_time_is_local_so_its_utc_instant_moves_an_hour_on_the_night_clocks_go_forward():
    report = Daily(time(8, 30))
    assert latest_slot(report, BERLIN, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 28, 7, 30)  # CET, +1
    assert next_slot(report, BERLIN, utc(2026, 3, 28, 12, 0)) == utc(2026, 3, 29, 6, 30)  # CEST, +2
    assert latest_slot(report, BERLIN, utc(2026, 3, 29, 6, 29)) == utc(2026, 3, 28, 7, 30)
    assert latest_slot(report, BERLIN, utc(2026, 3, 29, 6, 30)) == utc(2026, 3, 29, 6, 30)


def test_a_time_in_the_spring_forward_gap_runs_at_the_first_valid_instant_after_it():
    # On 2026-03-29 Berlin's clocks jump from 02:00 to 03:00: 02:30 does not exist; 03:00 CEST is 01:00 UTC.
    assert local_instant(date(2026, 3, 29), time(2, 30), BERLIN) == utc(2026, 3, 29, 1, 0)
    assert local_instant(date(2026, 3, 30), time(2, 30), BERLIN) == utc(2026, 3, 30, 0, 30)


def test_a_time_in_the_fall_back_fold_is_one_slot_at_its_first_occurrence():
    # On 2026-10-25 02:30 happens twice in Berlin (CEST, then CET): the slot is the first, and there is only one.
    backup = Daily(time(2, 30))
    assert local_instant(date(2026, 10, 25), time(2, 30), BERLIN) == utc(2026, 10, 25, 0, 30)
    assert latest_slot(backup, BERLIN, utc(2026, 10, 25, 1, 45)) == utc(2026, 10, 25, 0, 30)  # the second 02:30 is no new slot
    assert next_slot(backup, BERLIN, utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)


def test_a_weekly_drill_falls_on_its_local_day():
    drill = Weekly(6, time(4, 0))  # Sunday
    assert next_slot(drill, BERLIN, utc(2026, 3, 25, 12, 0)) == utc(2026, 3, 29, 2, 0)
    assert latest_slot(drill, BERLIN, utc(2026, 3, 29, 1, 59)) == utc(2026, 3, 22, 3, 0)


def test_watch_slots_are_whole_intervals_of_utc():
    assert latest_slot(Every(5), BERLIN, utc(2026, 3, 29, 7, 3, 59)) == utc(2026, 3, 29, 7, 0)
    assert next_slot(Every(5), BERLIN, utc(2026, 3, 29, 7, 3)) == utc(2026, 3, 29, 7, 5)


def test_schedules_parse_and_turn_off():
    assert parse_daily("8:05") == Daily(time(8, 5))
    assert parse_daily("off") is None
    assert parse_weekly("Sunday 04:00") == Weekly(6, time(4, 0))
    assert parse_weekly("OFF") is None


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("daily_report_at", "25:00", "FLOWSTATE_DAILY_REPORT_AT: '25:00' is not a time of day; use HH:MM such as 08:30, or off"),
        ("backup_at", "2am", "FLOWSTATE_BACKUP_AT: '2am' is not a time of day; use HH:MM such as 08:30, or off"),
        ("drill_at", "sundae 04:00", "FLOWSTATE_DRILL_AT: 'sundae 04:00' is not a day and time; use DAY HH:MM such as sun 04:00, or off"),
        ("ops_channel", "#ops", "FLOWSTATE_OPS_CHANNEL: '#ops' is not a channel id; use the C... id from the channel's details"),
    ],
)
def test_a_wrong_duty_setting_stops_the_bot_with_one_line_naming_it(setting, value, message):
    with pytest.raises(ConfigError) as error:
        load_settings(_env_file=None, **{setting: value})
    assert str(error.value) == message
