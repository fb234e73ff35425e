"""/help with a name: what the caller may run, and never a long echo of what they typed."""

from bot.frame.registry import options_of
from tests.conftest import run


def test_an_unknown_command_is_named_back(make_runtime):
    text = run(make_runtime(admins=["UA"]), "UA", "/help deploy").text
    assert text == "There is no /deploy command; /help lists what you can run."


def test_a_huge_name_is_refused_in_one_sentence_without_echoing_it(make_runtime):
    text = run(make_runtime(admins=["UA"]), "UA", "/help " + "x" * 100_000).text
    assert text == (
        "That is too long to be a command name; /help alone lists the commands you may run; usage: `/help [command]`"
    )


def test_help_for_one_command_shows_every_argument_and_option_with_its_limits_default_and_an_example(make_runtime):
    reply = run(make_runtime(admins=["UA"]), "UA", "/help /logs")
    lines = reply.text.splitlines()
    assert lines[0].startswith("`/logs SERVICE [--since 15m] [--grep TEXT] [--tail N]` — ")
    assert "• `SERVICE`: a Compose service of the stack" in lines
    assert "• `--since TIME`: how far back to read; an age such as 3h or 2d (at most 52w), or an ISO 8601 time such as 2024-03-01T23:00 (default 15m)" in lines
    assert "• `--grep TEXT`: only the lines containing this plain text (not a pattern); 1 to 200 characters" in lines
    assert "• `--tail N`: the last lines to show; a number of lines from 1 to 2000 (default 200)" in lines
    assert "Example: `/logs backend --since 1h --grep timeout`" in lines
    assert lines[-1] == "Needs the operator role."
    # Slack shows the same lines as blocks.
    assert "--tail N" in str(reply.blocks) and "Example" in str(reply.blocks)


def test_help_shows_the_durations_limit_and_the_choices(make_runtime):
    runtime = make_runtime(admins=["UA"])
    assert "• `WINDOW`: a duration such as 30m, 3h or 2d, at most 7d (default 15m)" in run(runtime, "UA", "/help stats").text
    watch = run(runtime, "UA", "/help watch").text
    assert "• `DURATION`: how long no alert for it is posted; a duration such as 30m, 3h or 2d, at most 7d" in watch
    assert "Needs the viewer role; some uses need a higher one." in watch
    assert "• `ROLE`: the role to grant; one of viewer, operator, approver, admin" in run(runtime, "UA", "/help role").text


def test_help_says_where_break_glass_applies(make_runtime):
    runtime = make_runtime(admins=["UA"])
    assert run(runtime, "UA", "/help restart").text.endswith(
        "Needs the operator role. It needs a second person's approval; an admin may run it at once, announced in the channel, "
        'with `--break-glass "REASON"`.'
    )
    assert run(runtime, "UA", "/help role").text.endswith(
        "Some uses need a second person's approval; never with --break-glass: its approval is the point."
    )
    assert "--break-glass" not in run(runtime, "UA", "/help logs").text
    off = make_runtime(admins=["UA"], break_glass=False)
    assert run(off, "UA", "/help rollback").text.endswith("It needs a second person's approval; break-glass is turned off on this bot.")


def test_every_declared_option_is_in_the_commands_usage_line(make_runtime):
    """The usage line is hand-written (Slack's autocomplete shows it); the options come from the declaration."""
    for cmd in make_runtime().commands.values():
        for name in options_of(cmd.args):
            assert name in cmd.usage, f"{cmd.slash}'s usage does not mention {name}"


def test_an_admins_list_of_commands_reaches_slack_whole_in_sections_within_slacks_limit(make_runtime):
    runtime = make_runtime(admins=["UA"])
    reply = run(runtime, "UA", "/help")
    shown = "\n".join(block["text"]["text"] for block in reply.blocks if block["type"] == "section")
    assert all(len(block["text"]["text"]) <= 3000 for block in reply.blocks if block["type"] == "section")
    assert "…" not in shown, "a section was cut at Slack's limit"
    assert all(f"`{cmd.usage}`" in shown for cmd in runtime.commands.values())
