"""Declared options: a command says `--since`, `--tail` and `--all` once in its arguments model; the frame's parser
reads them anywhere on the line and answers every mistake with one sentence, the same for every command."""

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from bot.frame.durations import Duration, MomentField, duration_field
from bot.frame.registry import (
    ArgumentError, Command, FreeText, Option, Reply, SetByCheck, command_line, parse_arguments,
)
from bot.runtime import load_commands
from bot.frame.roles import Role
from tests.conftest import grant, run


Interval = duration_field("1d")


class SweepArgs(BaseModel):
    target: str
    since: Annotated[MomentField | None, Option("--since", "TIME")] = None
    tail: Annotated[int, Option("--tail", "N", unit="lines")] = Field(20, ge=1, le=500)
    interval: Annotated[Interval, Option("--every", "DURATION")] = Duration.parse("1h")
    everything: Annotated[bool, Option("--all")] = False
    checked: Annotated[str | None, SetByCheck()] = None


class NoteArgs(BaseModel):
    text: FreeText = ""
    since: Annotated[MomentField | None, Option("--since", "TIME")] = None


SWEEP = Command("sweep", "Sweep a target.", "/sweep TARGET [--since TIME] [--tail N] [--every DURATION] [--all]", SweepArgs,
                Role.operator, lambda ctx, args: Reply(f"swept {args.target}"), True, True)
NOTE = Command("jot", "Jot a note.", "/jot TEXT [--since TIME]", NoteArgs, Role.viewer, lambda ctx, args: Reply(args.text))


def _refusal(cmd: Command, text: str) -> str:
    with pytest.raises(ArgumentError) as refused:
        parse_arguments(cmd, text)
    return str(refused.value)


def test_options_are_read_anywhere_on_the_line_with_or_without_an_equals_sign():
    spaced = parse_arguments(SWEEP, "--since 3h cache --tail 5")
    joined = parse_arguments(SWEEP, "cache --since=3h --tail=5")
    assert spaced == joined
    assert (joined.target, joined.since.text, joined.since.age.seconds, joined.tail) == ("cache", "3h", 3 * 3600, 5)
    assert (joined.interval.seconds, joined.everything) == (3600, False)  # the declared defaults


def test_quotes_group_an_option_value_and_a_flag_takes_no_value():
    args = parse_arguments(SWEEP, '"the cache" --since "2024-03-01 23:00" --all')
    assert (args.target, args.since.text, args.everything) == ("the cache", "2024-03-01 23:00", True)
    assert _refusal(SWEEP, "cache --all=yes") == "--all is a flag: give it once, without a value"


@pytest.mark.parametrize("text", ["cache --follow", "--follow cache", "--follow=1 cache --tail 5"])
def test_an_unknown_option_names_the_known_ones(text):
    assert _refusal(SWEEP, text) == "'--follow' is not an option; use --since TIME, --tail N, --every DURATION or --all"


def test_an_undeclared_option_where_an_argument_fits_is_judged_by_that_argument():
    """A ref that git would read as an option is refused by the ref's own rule, not passed on."""
    assert _refusal(load_commands()["rollback"], "--upload-pack=x").startswith("a ref may not start with -")


@pytest.mark.parametrize("text", ["cache --tail 5 --tail 6", "cache --tail", "cache --tail --all", "cache --since=3h --since 2h"])
def test_an_option_given_twice_or_without_its_value_is_one_sentence(text):
    option = text.split()[1].partition("=")[0]
    assert _refusal(SWEEP, text) == f"{option} takes one value, once"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("cache --every soon", "'soon' is not a duration; use a number and s, m, h or d, such as 15m or 2h"),
        ("cache --every 0m", "'0m' is not a duration; use a number and s, m, h or d, such as 15m or 2h"),
        ("cache --every 2d", "the interval can be at most 1d"),
        ("cache --since yesterday", "'yesterday' is not a time; give an age such as 3h or 2d, or ISO 8601 such as 2024-03-01T23:00"),
        ("cache --since 53w", "53w is too long ago; an age can be at most 52w (a year), or give an ISO 8601 time"),
        ("cache --tail 0", "--tail is a number of lines from 1 to 500"),
        ("cache --tail many", "--tail is a number of lines from 1 to 500"),
    ],
)
def test_a_bad_value_is_refused_in_one_sentence(text, said):
    assert _refusal(SWEEP, text) == said


def test_a_value_may_start_with_dashes_when_it_is_no_option_of_the_command():
    assert parse_arguments(load_commands()["logs"], "backend --grep --verbose").grep == "--verbose"
    assert parse_arguments(NOTE, "--since 2h see --verbose output").text == "see --verbose output"


def test_a_field_the_check_sets_cannot_be_typed():
    assert _refusal(SWEEP, "cache 0123abcd") == "unexpected '0123abcd'"


def test_free_text_keeps_its_quotes_and_gives_up_only_the_commands_own_options():
    args = parse_arguments(NOTE, "db's \"slow\" again --since=45m says --tail 5")
    assert (args.text, args.since.text) == ("db's \"slow\" again says --tail 5", "45m")


def test_free_text_refuses_a_bad_value_of_its_own_option():
    assert _refusal(NOTE, "restarted --since soon") == (
        "'soon' is not a time; give an age such as 3h or 2d, or ISO 8601 such as 2024-03-01T23:00"
    )


def test_the_command_line_names_options_that_differ_from_their_default():
    args = parse_arguments(SWEEP, "cache --tail 20 --every 2h --all --since 3h")
    assert command_line(SWEEP, args.model_dump(mode="json")) == "/sweep cache --since 3h --every 2h --all"
    # What is stored for a request validates back to the same arguments (a request survives a restart).
    assert SweepArgs.model_validate(args.model_dump(mode="json")) == args


def test_break_glass_still_comes_off_the_line_before_the_options_are_read(make_runtime):
    runtime = make_runtime(admins=["UADMIN"])
    runtime.commands = {**runtime.commands, "sweep": SWEEP}
    grant(runtime, "UOP", Role.operator)
    assert run(runtime, "UOP", '/sweep cache --tail 5 --break-glass "site down"').text == (
        "Only an admin may use --break-glass; ask an approver instead."
    )
    assert run(runtime, "UADMIN", '/sweep cache --break-glass "site down" --all').text == "swept cache"
