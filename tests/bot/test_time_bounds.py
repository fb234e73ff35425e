"""Times a user types are bounded: an age far in the past is one sentence, audited as rejected, never a traceback."""

import logging
import re
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel, field_validator

from bot.frame.durations import Moment, TimeError
from bot.frame.registry import Command, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry
from tests.conftest import grant, run

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def _audit(runtime):
    with runtime.store.session() as session:
        return [(row.command, row.outcome, row.error, row.error_id) for row in session.query(AuditEntry).order_by(AuditEntry.id)]


@pytest.mark.parametrize("typed", ["999999w", "999999d", "60w"])
def test_an_age_beyond_a_year_is_refused_in_one_sentence(typed):
    with pytest.raises(TimeError, match=rf"^{typed} is too long ago; an age can be at most 52w"):
        Moment.parse(typed).resolve(timezone.utc, NOW)


def test_an_age_of_a_year_is_still_a_time():
    assert Moment.parse("52w").resolve(timezone.utc, NOW) == datetime(2025, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("typed", ["0001-01-01T00:00+05:00", "0001-01-01T00:00"])
def test_an_iso_time_at_the_edge_of_the_calendar_is_refused_not_raised(typed):
    with pytest.raises(TimeError, match="is not a time"):
        Moment.parse(typed).resolve(timezone(timedelta(hours=5)), NOW)


# Both declare --since as a time, so both check it while parsing (rejected).
@pytest.mark.parametrize(("line", "audited"), [("/logs backend --since 999999w", "rejected"), ("/postmortem --since 999999w", "rejected")])
def test_logs_and_postmortem_since_far_back_answer_one_sentence_and_are_audited(make_runtime, caplog, line, audited):
    runtime = make_runtime()
    grant(runtime, "UOP", Role.operator)
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UOP", line)
    assert "999999w is too long ago; an age can be at most 52w" in reply.text, reply.text
    assert "Traceback" not in caplog.text and "OverflowError" not in caplog.text
    (command, outcome, error, _id), = _audit(runtime)[-1:]
    assert command == line.split()[0][1:] and outcome == audited and "too long ago" in error


def test_an_unexpected_failure_while_parsing_arguments_is_audited_as_rejected_with_an_error_id(make_runtime, caplog):
    class Fragile(BaseModel):
        value: str

        @field_validator("value")
        @classmethod
        def _value(cls, value: str) -> str:
            raise OverflowError("date value out of range")  # not a ValueError: pydantic lets it through

    runtime = make_runtime(admins=["UA"])
    runtime.commands = {**runtime.commands, "fragile": Command("fragile", "test", "/fragile VALUE", Fragile, Role.viewer,
                                                               lambda ctx, args: Reply("ran"))}
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UA", "/fragile 1")
    match = re.fullmatch(r"/fragile could not read its arguments \(error id ([0-9a-f]{8})\); the details are in the bot's log\.", reply.text)
    assert match, reply.text
    assert _audit(runtime) == [("fragile", "rejected", "OverflowError: date value out of range", match.group(1))]
    assert match.group(1) in caplog.text
