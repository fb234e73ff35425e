"""Words a user reads: each says what it means (issue 25.7). The live ones (exited with code N, M s ago; connections
in use of max_connections) are asserted in tests/commands/test_health_live.py and test_health.py."""

import re
from pathlib import Path

from bot.frame.config import StackConfig
from bot.frame.humanize import count
from commands.logs import DEFAULT_TAIL, MAX_TAIL
from tests.conftest import run

README = Path(__file__).resolve().parents[2] / "README.md"


def test_counts_say_one_query_and_two_queries():
    assert (count(1, "query", "queries"), count(2, "query", "queries"), count(1, "time"), count(3, "time")) == (
        "1 query", "2 queries", "1 time", "3 times")


def test_a_missing_argument_is_named_as_the_usage_shows_it(make_runtime):
    runtime = make_runtime(admins=["UA"])
    assert run(runtime, "UA", "/restore").text == (
        'BACKUP_ID is missing; usage: `/restore BACKUP_ID | --to TIME | --before INC-N | --before-release N | --table TABLE (--where "EXPR" | --rows-deleted-since TIME) FROM`'
    )
    assert run(runtime, "UA", "/user").text == "EMAIL is missing; usage: `/user EMAIL`"


def test_backups_without_a_database_section_say_what_is_missing_and_where_an_example_is(make_runtime):
    runtime = make_runtime(StackConfig(), admins=["UA"])
    text = run(runtime, "UA", "/backups").text
    assert text == ("Backups need the application's PostgreSQL: the stack file (flowstate.toml) has no [database] section; "
                    "README.md shows one under \"The stack file\"."), text


def test_the_readme_gives_the_logs_limits_the_code_has():
    row = next(line for line in README.read_text().splitlines() if line.startswith("| `/logs SERVICE"))
    assert f"its last {DEFAULT_TAIL} lines; `--tail N` takes up to {MAX_TAIL} lines" in row, row
    assert not re.search(r"at most \d+ lines", row)


def test_one_audit_entry_is_one_entry(make_runtime):
    runtime = make_runtime(admins=["UA"])
    assert run(runtime, "UA", "/audit 1").blocks[0]["text"]["text"].startswith("*1 audit entry, newest first*")
