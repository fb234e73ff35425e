"""The tests' clock file: a file caught while a test rewrites it keeps the last instant (a bot process that read the
system's time instead once ran a duty slot of today's date, "missed", in the middle of a test of March)."""

from datetime import datetime, timedelta, timezone

from bot.duties.clock import FileClock


def test_a_file_caught_empty_or_half_written_keeps_the_last_instant(tmp_path):
    path = tmp_path / "clock"
    clock = FileClock(path)
    assert abs(clock.now() - datetime.now(timezone.utc)) < timedelta(minutes=1)  # no file yet: the system's time
    path.write_text("2026-03-28T07:30:00+00:00")
    assert clock.now() == datetime(2026, 3, 28, 7, 30, tzinfo=timezone.utc)
    path.write_text("")  # truncated, not yet written
    assert clock.now() == datetime(2026, 3, 28, 7, 30, tzinfo=timezone.utc)
    path.write_text("2026-03-2")  # half written
    assert clock.now() == datetime(2026, 3, 28, 7, 30, tzinfo=timezone.utc)
    path.write_text("2026-03-29T06:30:00+02:00")
    assert clock.now() == datetime(2026, 3, 29, 4, 30, tzinfo=timezone.utc)
