"""--where of /restore --table: a small grammar, parsed and checked; rendered with a placeholder for every value.

What is promised: what a person writes to pick rows is accepted and means what it says (run against PostgreSQL
here); anything else, SQL above all, is refused with one sentence naming what is wrong, and nothing is spliced.
"""

import psycopg
import pytest
from psycopg import sql

from bot.backups.where import MAX_DEPTH, MAX_LENGTH, WhereError, parse, render

COLUMNS = ["id", "email", "name", "role", "created_at", "active", "Score"]

ROWS = """
SELECT * FROM (VALUES
  (1, 'ada@example.com', 'Ada', 'admin', '2026-01-01T00:00Z'::timestamptz, true, 10),
  (2, 'bob@example.com', 'Bob', 'user', '2026-02-01T00:00Z'::timestamptz, false, NULL),
  (3, 'cy@example.com', 'O''Brien', 'user', '2026-03-01T00:00Z'::timestamptz, true, 30),
  (4, 'dee@example.com', 'Dee', NULL, '2026-04-01T00:00Z'::timestamptz, true, 40)
) AS t(id, email, name, role, created_at, active, "Score")
"""

ACCEPTED = [
    ("id IN (1, 3)", [1, 3]),
    ("id in (1,2,3) and not id = 2", [1, 3]),
    ("ID = '4'", [4]),
    ("id <> 1 AND id != 2", [3, 4]),
    ("id >= 2 and id < 4", [2, 3]),
    ("id <= 1 or id > 3", [1, 4]),
    ("role IS NULL", [4]),
    ("role is not null AND role = 'user'", [2, 3]),
    ("id BETWEEN 2 AND 3", [2, 3]),
    ("id NOT BETWEEN 2 AND 3", [1, 4]),
    ("id NOT IN (1, 2)", [3, 4]),
    ("email LIKE '%@example.com' AND NOT (name LIKE 'A%')", [2, 3, 4]),
    ("name = 'O''Brien'", [3]),
    ("created_at >= '2026-03-01' ", [3, 4]),
    ("active = false", [2]),
    ("active = TRUE and (id = 1 or (id = 3 or id = 4)) and id > -1", [1, 3, 4]),
    ('"Score" > 15', [3, 4]),
]

REFUSED = [
    ("1=1; DROP TABLE users", "cannot contain ';' (character 4)"),
    ("1 = 1", "needs a column name where it has '1'"),
    ("id = 1; DROP TABLE users", "cannot contain ';'"),
    ("id = 1 -- and the rest", "cannot hold a comment (--"),
    ("id = 1 /* hidden */", "cannot hold a comment (/*"),
    ("lower(email) = 'a@b.c'", "cannot call functions (lower"),
    ("id IN (SELECT id FROM users)", "cannot hold a subquery or SQL (SELECT"),
    ("id = (SELECT 1)", "SELECT"),
    ("nme = 'x'", "has no column 'nme'; its columns are id, email"),
    ("\"score\" = 1", "has no column 'score'"),
    ("name = 'unterminated", "A string in --where is not closed (the ' at character 8)"),
    ("\"name = 1", "quoted column name in --where is not closed"),
    ("(" * (MAX_DEPTH + 1) + "id = 1" + ")" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH} levels"),
    ("NOT " * (MAX_DEPTH + 1) + "id = 1", f"deeper than {MAX_DEPTH} levels"),
    ("id = " + "1" * MAX_LENGTH, f"it may be at most {MAX_LENGTH}"),
    ("", "--where is empty"),
    ("id = NULL", "use IS NULL"),
    ("id = email", "not with 'email'"),
    ("id = 1 OR", "needs a column name"),
    ("id = 1 UNION SELECT 1", "'union' at character 8 where AND, OR or the end should be"),
    ("id IN (1, 2", "to close the IN list"),
    ("id BETWEEN 1 OR 2", "needs AND in BETWEEN"),
    ("id = 1 AND (role = 'x'", "to close a parenthesis"),
    ("id = $1", "cannot contain '$'"),
    ("id = 1 || 'x'", "cannot contain '|'"),
    ("id::text = '1'", "cannot contain ':'"),
    ("id = 1e", "neither a number nor a name"),
    ("email = E'\\x41'", "not with 'e' (character 9)"),
    ("id", "needs a comparison after id"),
    ("id IS 1", "needs NULL after IS"),
    ("id = \u0000", "U+0000"),
]


@pytest.fixture(scope="module")
def conn(live_stack):
    with psycopg.connect(live_stack.database.dsn, autocommit=True) as connection:
        yield connection


@pytest.mark.parametrize("text, ids", ACCEPTED, ids=[case[0] for case in ACCEPTED])
def test_an_accepted_expression_selects_the_rows_it_says(conn, text, ids):
    condition, params = render(parse(text, COLUMNS, "users"))
    query = sql.SQL("SELECT id FROM ({}) AS t WHERE {} ORDER BY id").format(sql.SQL(ROWS), condition)
    assert [row[0] for row in conn.execute(query, params)] == ids


def test_values_are_never_in_the_statement(conn):
    condition, params = render(parse("name = 'x''); DROP TABLE users; --' OR id IN (1, 2)", COLUMNS, "users"))
    text = condition.as_string(conn)
    assert "DROP" not in text and params == ["x'); DROP TABLE users; --", "1", "2"]
    assert text == '(("name" = %s) OR ("id" IN (%s, %s)))'


@pytest.mark.parametrize("text, refusal", REFUSED, ids=[case[0][:40] for case in REFUSED])
def test_anything_else_is_refused_in_one_sentence_naming_it(text, refusal):
    with pytest.raises(WhereError) as refused:
        parse(text, COLUMNS, "users")
    message = str(refused.value)
    assert refusal in message, message
    assert message.count(". ") == 0 and message.endswith("."), ("one sentence", message)
