"""/help with a name: what the caller may run, and never a long echo of what they typed."""

from tests.conftest import run


def test_an_unknown_command_is_named_back(make_runtime):
    text = run(make_runtime(admins=["UA"]), "UA", "/help deploy").text
    assert text == "There is no /deploy command; /help lists what you can run."


def test_a_huge_name_is_refused_in_one_sentence_without_echoing_it(make_runtime):
    text = run(make_runtime(admins=["UA"]), "UA", "/help " + "x" * 100_000).text
    assert text == (
        "That is too long to be a command name; /help alone lists the commands you may run; usage: `/help [command]`"
    )
