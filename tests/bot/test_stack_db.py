"""Statement text as /stats shows it to a channel: literals as ?, one line, cut short, quickly."""

import pytest

from bot.stack.database import statement_summary

STATEMENTS = [
    ("ALTER ROLE app PASSWORD 'correct horse'", "ALTER ROLE app PASSWORD ?"),
    ("UPDATE cards SET number = '4111 1111 1111 1111' WHERE id = 42", "UPDATE cards SET number = ? WHERE id = ?"),
    ("SELECT 4111111111111111, 3.5e3, .5, 0x1F FROM t1", "SELECT ?, ?, ?, ? FROM t1"),
    ("SELECT * FROM t WHERE a = $1 AND b = 'x''y'", "SELECT * FROM t WHERE a = $1 AND b = ?"),
    ("SELECT E'it\\'s a secret', 'tail'", "SELECT ?, ?"),
    ("DO $body$BEGIN RAISE NOTICE 'token'; END$body$", "DO ?"),
    ('SELECT "Col 1", users2.name FROM users2', 'SELECT "Col 1", users2.name FROM users2'),
    ("SELECT pg_sleep(30) /* held by a test */", "SELECT pg_sleep(?) /* held by a test */"),
    ("INSERT INTO tokens VALUES ('Bearer eyJhbGciOiJIUzI1NiJ9", "INSERT INTO tokens VALUES (?"),
    ("SELECT\n  a,\n\tb   FROM t", "SELECT a, b FROM t"),
]


@pytest.mark.parametrize(("statement", "shown"), STATEMENTS, ids=[s[0][:40] for s in STATEMENTS])
def test_literals_become_placeholders(statement, shown):
    assert statement_summary(statement) == shown


def test_a_long_statement_is_cut_short():
    shown = statement_summary("SELECT " + ", ".join(f"column_{i}" for i in range(100)) + " FROM t")
    assert len(shown) == 200 and shown.endswith("…")


ADVERSARIAL = ["'" * 200_001, "E'\\" * 70_000, "$a$" * 70_000, "/*" * 100_000, "a'" * 100_000, '"' * 200_001, "$1" * 100_000]


@pytest.mark.timeout(5)
@pytest.mark.parametrize("statement", ADVERSARIAL, ids=[s[:6] for s in ADVERSARIAL])
def test_any_text_is_summarized_in_linear_time(statement):
    assert len(statement_summary(statement)) <= 200
