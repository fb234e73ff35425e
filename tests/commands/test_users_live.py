"""/user, /user-add and /user-role on the live test stack's users table, through the dispatcher as an operator."""

import secrets
import shlex
from zoneinfo import ZoneInfo

import psycopg
import pytest

from bot.frame.audit import AuditLog
from bot.frame.config import StackConfig
from bot.frame.roles import Role
from tests.conftest import grant, run
from tests.loopback import closed_port

def waits_for_approval(text: str, command: str) -> bool:
    return text.startswith("Request #") and f"`{command} " in text and "needs a second person's approval" in text


class UsersTable:
    """The live users table, read and written with psycopg, apart from the bot."""

    def __init__(self, dsn: str):
        self.dsn = dsn
        self.created: list[str] = []

    def new_email(self, local: str = "new.user") -> str:
        """An address no other test uses; its row, if one is made, is deleted after the test."""
        email = f"{local}.{secrets.token_hex(4)}@example.com"
        self.created.append(email)
        return email

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def row(self, email: str) -> tuple | None:
        rows = self.query("SELECT email, name, role FROM users WHERE lower(email) = lower(%s)", (email,))
        return rows[0] if rows else None

    def count(self) -> int:
        return self.query("SELECT count(*) FROM users")[0][0]

    def snapshot(self) -> list[tuple]:
        return self.query("SELECT id, email, name, role, created_at FROM users ORDER BY id")


@pytest.fixture
def users(live_stack):
    table = UsersTable(live_stack.database.dsn)
    before = table.snapshot()
    yield table
    table.query("DELETE FROM users WHERE lower(email) = ANY(%s)", ([email.lower() for email in table.created],))
    assert table.snapshot() == before, "the test left the users table changed"


def _as_operator(runtime):
    grant(runtime, "UOP", Role.operator)
    return lambda line: run(runtime, "UOP", line).text


@pytest.fixture
def operator(make_runtime, live_stack):
    """An operator's slash commands against the live stack, through the dispatcher; returns the reply's text."""
    return _as_operator(make_runtime(live_stack))


def run_approved(runtime, line: str) -> str:
    """An operator asks, an approver approves in the console, and the request runs there: its reply."""
    from bot.adapters.console import run_approved as run_in_console

    grant(runtime, "UOP", Role.operator)
    grant(runtime, "UAPP", Role.approver)
    asked = run(runtime, "UOP", line).text
    if not asked.startswith("Request #"):
        return asked  # it needed no approval and ran
    number = asked.removeprefix("Request #").split(":", 1)[0]
    assert run(runtime, "UAPP", f"/approvals approve {number}").text == f"You approved request #{number}; it runs now."
    (reply,) = run_in_console(runtime, lambda _text: None)
    return reply.text


def test_an_operator_adds_a_user_with_the_default_role(operator, users):
    email = users.new_email()
    count = users.count()
    assert operator(f'/user-add {email} "New User"') == f"Added {email} (New User) with the user role."
    assert users.row(email) == (email, "New User", "user")
    assert users.count() == count + 1


def test_user_shows_email_name_role_and_created_time_in_the_configured_zone(make_runtime, live_stack, users):
    (created,) = users.query("SELECT created_at FROM users WHERE email = 'alice@example.com'")[0]
    show = _as_operator(make_runtime(live_stack, timezone="Europe/Berlin"))
    expected = f"Email: alice@example.com\nName: Alice Archer\nRole: user\nCreated: {created.astimezone(ZoneInfo('Europe/Berlin')):%Y-%m-%d %H:%M %Z}"
    assert show("/user alice@example.com") == expected
    assert show("/user ALICE@Example.COM") == expected
    assert show("/user <mailto:alice@example.com|alice@example.com>") == expected, "as Slack sends a typed address"
    assert show("/user nobody@example.com") == "No user has the email nobody@example.com; /user-add adds one."


def test_emails_are_stored_lower_case_so_another_spelling_is_a_duplicate(operator, users):
    email = users.new_email("Mixed.Case")
    assert operator(f'/user-add {email} "Mixed Case"') == f"Added {email.lower()} (Mixed Case) with the user role."
    assert users.query("SELECT email FROM users WHERE lower(email) = %s", (email.lower(),)) == [(email.lower(),)]
    count = users.count()
    assert operator(f'/user-add {email.upper()} "Other"') == (
        f"{email.lower()} is already a user (Mixed Case, user); nothing was changed."
    )
    assert operator('/user-add alice@example.com "Alice Again"') == (
        "alice@example.com is already a user (Alice Archer, user); nothing was changed."
    )
    assert users.count() == count
    assert users.row("alice@example.com") == ("alice@example.com", "Alice Archer", "user")


def test_a_mixed_case_address_the_app_stored_is_found_and_not_added_again(operator, users):
    stored = users.new_email("Legacy.Case")
    users.query("INSERT INTO users (email, name, role) VALUES (%s, 'Legacy', 'user')", (stored,))
    count = users.count()
    assert operator(f'/user-add {stored.lower()} "Legacy Again"') == (
        f"{stored} is already a user (Legacy, user); nothing was changed."
    )
    assert operator(f"/user {stored.lower()}").startswith(f"Email: {stored}\nName: Legacy\n")
    assert users.count() == count


def test_two_rows_that_differ_only_in_case_are_refused_not_guessed(operator, users):
    email = users.new_email("twice")
    users.query("INSERT INTO users (email, name, role) VALUES (%s, 'Lower', 'user'), (%s, 'Upper', 'user')", (email, email.upper()))
    assert operator(f"/user-role {email} user") == (
        f"2 users have the email {email} in different cases ({email}, {email.upper()}); change them in the database."
    )
    assert users.query("SELECT role FROM users WHERE lower(email) = %s", (email,)) == [("user",), ("user",)]


def test_a_role_change_says_old_and_new_and_an_unchanged_role_changes_nothing(make_runtime, live_stack, users):
    roles = live_stack.database.model_copy(update={"user_roles": ["user", "support", "admin"]})
    operator = _as_operator(make_runtime(live_stack.model_copy(update={"database": roles})))
    email = users.new_email()
    operator(f'/user-add {email} "Role Change"')
    assert operator(f"/user-role {email} support") == f"Changed the role of {email}: user → support."
    assert users.row(email) == (email, "Role Change", "support")
    assert operator(f"/user-role {email.upper()} SUPPORT") == f"{email} already has the support role; nothing was changed."
    assert users.row(email) == (email, "Role Change", "support")
    assert operator("/user-role nobody@example.com user") == "No user has the email nobody@example.com; nothing was changed."


def test_a_role_outside_the_configured_set_is_refused(operator, users):
    email = users.new_email()
    count = users.count()
    assert operator(f'/user-add {email} "New User" owner') == (
        """'owner' is not a role here; roles are user, admin (put a name with spaces in quotes, such as "New User")."""
    )
    assert operator(f"/user-add {email} Try Me") == (
        """'me' is not a role here; roles are user, admin (put a name with spaces in quotes, such as "New User")."""
    )
    assert operator("/user-role alice@example.com owner") == "'owner' is not a role here; roles are user, admin."
    assert users.count() == count
    assert users.row("alice@example.com") == ("alice@example.com", "Alice Archer", "user")


def test_granting_admin_through_the_dispatcher_waits_for_approval_and_changes_nothing(operator, users):
    email = users.new_email()
    count = users.count()
    assert waits_for_approval(operator(f'/user-add {email} "Would Be Admin" admin'), "/user-add")
    assert users.row(email) is None and users.count() == count
    operator(f'/user-add {email} "Plain User"')
    for spelling in ("admin", "ADMIN", "Admin", "' admin '"):
        asked = operator(f"/user-role {email} {spelling}")
        assert waits_for_approval(asked, "/user-role")
        assert f"\n*{email}* (Plain User), created " in asked and ": role *user* → *admin*" in asked, "old and new role, as in Slack"
    assert users.row(email) == (email, "Plain User", "user")


def test_taking_admin_away_needs_no_approval(operator, users):
    email = users.new_email()
    users.query("INSERT INTO users (email, name, role) VALUES (%s, 'Former Admin', 'admin')", (email,))
    assert operator(f"/user-role {email} user") == f"Changed the role of {email}: admin → user."
    assert users.row(email) == (email, "Former Admin", "user")


def test_an_approved_admin_grant_runs_in_the_handler(make_runtime, live_stack, users):
    runtime = make_runtime(live_stack)
    added, promoted = users.new_email(), users.new_email()
    assert run_approved(runtime, f'/user-add {added} "New Admin" admin') == f"Added {added} (New Admin) with the admin role."
    assert users.row(added) == (added, "New Admin", "admin")
    run_approved(runtime, f'/user-add {promoted} "Promoted"')
    assert run_approved(runtime, f"/user-role {promoted} admin") == f"Changed the role of {promoted}: user → admin."
    assert users.row(promoted) == (promoted, "Promoted", "admin")


HOSTILE_NAMES_STORED = [
    "O'Brien \"Bob\" D'Arcy",
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE users;--",
    "$(touch /tmp/pwned) `id` ${HOME}",
    "%s %(name)s {} \\x00 \\n",
    "Zoë Ångström 李小龙 👩‍💻 \u202eevil",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES_STORED)
def test_hostile_names_are_stored_literally(operator, users, name):
    email = users.new_email()
    count = users.count()
    assert operator(f"/user-add {email} {shlex.quote(name)}") == f"Added {email} ({name}) with the user role."
    assert users.row(email) == (email, name, "user")
    assert users.count() == count + 1, "the table is still there, one row larger"


HOSTILE_NAMES_REFUSED = [
    ("Nul\x00Byte", "The name contains a control character or line break; give it on one line"),
    ("Two\nLines", "The name contains a control character or line break; give it on one line"),
    ("Line\u2028Separator", "The name contains a control character or line break; give it on one line"),
    ("x" * 10240, "The name has 10,240 characters; give one of at most 200"),
    ("   ", 'The name is empty; give the full name in quotes, such as "New User"'),
]


@pytest.mark.parametrize("name, refusal", HOSTILE_NAMES_REFUSED, ids=["nul", "newline", "u2028", "10kb", "blank"])
def test_names_that_cannot_be_stored_as_one_line_are_refused(operator, users, name, refusal):
    email = users.new_email()
    count = users.count()
    assert operator(f"/user-add {email} {shlex.quote(name)}") == f'{refusal}; usage: `/user-add EMAIL "NAME" [ROLE]`'
    assert users.row(email) is None and users.count() == count


@pytest.mark.parametrize("local", ["o'brien", "$user", "{it}"])
def test_emails_with_symbols_the_standard_allows_are_stored_literally(operator, users, local):
    email = users.new_email(local)
    count = users.count()
    assert operator(f"/user-add {shlex.quote(email)} 'Symbol User'") == f"Added {email} (Symbol User) with the user role."
    assert users.row(email) == (email, "Symbol User", "user")
    assert users.count() == count + 1


HOSTILE_EMAILS = [
    ("'; DROP TABLE users; --", "\"'; DROP TABLE users; --\""),
    ("x@example.com'; DROP TABLE users; --", "\"x@example.com'; DROP TABLE users; --\""),
    ("$(touch /tmp/pwned)@example.com", "'$(touch /tmp/pwned)@example.com'"),
    ("a" * 10240 + "@example.com", "'" + "a" * 60 + "…'"),
    ("zoë@example.com", "'zoë@example.com'"),
    ("nul\x00@example.com", "'nul\\x00@example.com'"),
    ("two\n@example.com", "'two\\n@example.com'"),
    ("alice@example.com\n", "'alice@example.com\\n'"),
    ("alice@localhost", "'alice@localhost'"),
]


@pytest.mark.parametrize("email, shown", HOSTILE_EMAILS, ids=["sql", "sql-after", "shell", "10kb", "unicode", "nul", "newline", "trailing-newline", "no-domain"])
def test_hostile_emails_are_refused_with_what_to_give_instead(operator, users, email, shown):
    count = users.count()
    reply = operator(f"/user-add {shlex.quote(email)} 'Hostile Email'")
    assert reply == f'{shown} is not an email address; give one such as new.user@example.com; usage: `/user-add EMAIL "NAME" [ROLE]`'
    assert operator(f"/user {shlex.quote(email)}").startswith(f"{shown} is not an email address")
    assert users.count() == count


@pytest.mark.parametrize(
    "role, shown",
    [
        ("'; DROP TABLE users; --", "\"'; drop table users; --\""),
        ("$(touch /tmp/pwned)", "'$(touch /tmp/pwned)'"),
        ("r" * 10240, "'" + "r" * 60 + "…'"),
        ("admin\x00", "'admin\\x00'"),
        ("ädmin", "'ädmin'"),
        ("user\nadmin", "'user\\nadmin'"),
    ],
    ids=["sql", "shell", "10kb", "nul", "unicode", "newline"],
)
def test_hostile_roles_are_refused_and_never_reach_the_table(operator, users, role, shown):
    count = users.count()
    refusal = f"{shown} is not a role here; roles are user, admin"
    assert operator(f"/user-role bob@example.com {shlex.quote(role)}") == f"{refusal}."
    email = users.new_email()
    assert operator(f"/user-add {email} 'Hostile Role' {shlex.quote(role)}").startswith(refusal)
    assert users.row("bob@example.com") == ("bob@example.com", "Bob Baker", "user")
    assert users.count() == count


def test_a_stack_file_without_a_database_section_says_so_before_anything_is_asked(make_runtime):
    runtime = make_runtime(StackConfig())
    operator = _as_operator(runtime)
    said = 'cannot run: the stack file (flowstate.toml) has no [database] section; README.md shows one under "The stack file".'
    assert operator("/user alice@example.com") == f"/user {said}"
    assert operator('/user-add new.user@example.com "New User" admin') == f"/user-add {said}"
    assert operator("/user-role alice@example.com admin") == f"/user-role {said}"
    assert runtime.jobs.pending() == [], "no request was made for a change that can only fail"


def test_a_role_change_that_can_only_fail_is_refused_before_anyone_is_asked_to_approve_it(operator, users):
    assert operator("/user-role nobody@example.com admin") == "No user has the email nobody@example.com; nothing was changed."
    assert operator("/user-role admin@example.com admin") == "admin@example.com already has the admin role; nothing was changed."
    assert operator("/user-role bob@example.com owner") == "'owner' is not a role here; roles are user, admin."
    assert operator("/approvals") == "No request is waiting for approval."
    assert users.row("bob@example.com") == ("bob@example.com", "Bob Baker", "user")


def test_an_unreachable_database_is_named_by_host_and_port_never_by_password(make_runtime, live_stack):
    port = closed_port()
    dsn = f"postgresql://flowstate:pa55-w0rd@127.0.0.1:{port}/flowstate_ai"
    runtime = make_runtime(live_stack.model_copy(update={"database": live_stack.database.model_copy(update={"dsn": dsn})}))
    operator = _as_operator(runtime)
    said = f"The Flowstate database at 127.0.0.1:{port} is not reachable (connection refused)."
    assert operator("/user alice@example.com") == said
    assert operator('/user-add new.user@example.com "New User"') == said
    assert operator("/user-role alice@example.com user") == said
    with runtime.store.session.begin() as session:
        assert all("pa55-w0rd" not in f"{entry.arguments} {entry.error}" for entry in AuditLog.latest(session, 10))

