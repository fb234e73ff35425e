"""Bad input gets one clear sentence and changes nothing; failures never show a traceback."""

import logging

from pydantic import BaseModel, SecretStr

from bot.frame.registry import Command, CommandError, FreeText, NoArgs, Reply
from bot.frame.roles import Role
from bot.store.engine import AuditEntry, RoleAssignment
from tests.conftest import run


def _audit(runtime):
    with runtime.store.session() as session:
        return list(session.query(AuditEntry).order_by(AuditEntry.id))


def _with_command(runtime, name, handler, args=NoArgs, role=Role.viewer):
    runtime.commands = {**runtime.commands, name: Command(name, "test", f"/{name}", args, role, handler)}


def test_unknown_command_suggests_the_closest_and_is_audited(make_runtime):
    runtime = make_runtime(admins=["UA"])
    assert run(runtime, "UA", "/helth").text == "There is no /helth command; did you mean /health?"
    assert run(runtime, "UA", "/xyzzy").text == "There is no /xyzzy command; /help lists what you can run."
    assert [(row.command, row.outcome) for row in _audit(runtime)] == [("helth", "rejected"), ("xyzzy", "rejected")]


def test_wrong_arguments_show_the_usage_and_write_nothing_but_the_audit_row(make_runtime):
    runtime = make_runtime(admins=["UA"])
    cases = {
        "/role grant UB": "Grant needs a user and a role; usage: `/role grant @user ROLE",
        "/role grant UB boss": "Unknown role 'boss'; roles are viewer, operator, approver, admin; usage:",
        "/role promote UB": "Action should be 'grant', 'revoke' or 'list'; usage:",
        '/role grant "UB admin': "A quote is not closed; usage:",
        "/audit 0": "Count should be greater than or equal to 1; usage: `/audit [count] [before_id]`",
        "/audit 5 6 7": "Unexpected '7'; usage: `/audit [count] [before_id]`",
        "/role grant bob admin": "'bob' is not a user; mention them as @name in Slack or give their user id (U...)",
    }
    for line, expected in cases.items():
        assert run(runtime, "UA", line).text.startswith(expected), line
    with runtime.store.session() as session:
        assert session.query(RoleAssignment).count() == 0
    assert [row.outcome for row in _audit(runtime)] == ["rejected"] * len(cases)


def test_quoted_words_stay_together(make_runtime):
    seen = {}

    class Args(BaseModel):
        title: str
        words: list[str] = []

    def handler(ctx, args):
        seen["args"] = args
        return Reply("ok")

    runtime = make_runtime(admins=["UA"])
    _with_command(runtime, "note", handler, Args)
    run(runtime, "UA", '/note "db is slow" since "12:00 UTC" today')
    assert seen["args"].title == "db is slow"
    assert seen["args"].words == ["since", "12:00 UTC", "today"]


def test_a_free_text_field_takes_the_rest_of_the_line_with_its_quotes_and_apostrophes(make_runtime):
    seen = {}

    class Args(BaseModel):
        action: str
        text: FreeText = ""

    def handler(ctx, args):
        seen["args"] = args
        return Reply("ok")

    runtime = make_runtime(admins=["UA"])
    _with_command(runtime, "note", handler, Args)
    run(runtime, "UA", """/note add  the db can't keep up "since noon" """)
    assert (seen["args"].action, seen["args"].text) == ("add", 'the db can\'t keep up "since noon"')
    run(runtime, "UA", "/note show")
    assert (seen["args"].action, seen["args"].text) == ("show", "")


def test_a_use_that_needs_a_higher_role_is_denied_after_parsing_and_audited(make_runtime):
    class Args(BaseModel):
        action: str

    runtime = make_runtime(admins=["UA"], default_role="viewer")
    runtime.commands = {
        **runtime.commands,
        "thing": Command(
            "thing", "test", "/thing", Args, Role.viewer, lambda ctx, args: Reply(f"did {args.action}"),
            role_for=lambda args: Role.operator if args.action == "change" else Role.viewer,
        ),
    }
    assert run(runtime, "UV", "/thing look").text == "did look"
    assert run(runtime, "UV", "/thing change").text == "This use of /thing needs the operator role and you have viewer."
    assert run(runtime, "UA", "/thing change").text == "did change"
    assert [(row.user_id, row.outcome) for row in _audit(runtime)][-4:-2] == [("UV", "succeeded"), ("UV", "denied")]


def test_an_unexpected_error_gives_an_error_id_not_a_traceback(make_runtime, caplog):
    def handler(ctx, args):
        raise KeyError("boom")

    runtime = make_runtime(admins=["UA"])
    _with_command(runtime, "explode", handler)
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UA", "/explode")
    assert reply.text.startswith("/explode failed unexpectedly (error id ")
    assert "Traceback" not in reply.text and "KeyError" not in reply.text
    error_id = reply.text.split("error id ")[1].split(")")[0]
    failed = _audit(runtime)[-1]
    assert (failed.outcome, failed.error_id, failed.error) == ("failed", error_id, "KeyError: 'boom'")
    assert error_id in caplog.text and "Traceback" in caplog.text


def test_a_failing_handler_rolls_back_its_writes(make_runtime):
    from bot.frame.authz import Authorizer

    def handler(ctx, args):
        Authorizer.grant(ctx.session, "UVICTIM", Role.admin, "UA")
        ctx.session.flush()
        raise CommandError("The restore check failed; nothing was changed.")

    runtime = make_runtime(admins=["UA"])
    _with_command(runtime, "halfway", handler)
    assert run(runtime, "UA", "/halfway").text == "The restore check failed; nothing was changed."
    assert runtime.authz.role_of("UVICTIM") is None
    assert [row.outcome for row in _audit(runtime)] == ["allowed", "failed"]


def test_secrets_never_reach_the_audit_table_or_the_log(make_runtime, caplog):
    class Args(BaseModel):
        password: SecretStr
        rest: list[str] = []

    def handler(ctx, args):
        raise RuntimeError(f"could not log in to postgresql://flowstate:{args.password.get_secret_value()}@db/app")

    runtime = make_runtime(admins=["UA"])
    _with_command(runtime, "login", handler, Args)
    with caplog.at_level(logging.ERROR):
        reply = run(runtime, "UA", "/login hunter2 token=xoxb-123-456-abc")
    from bot.frame.redact import RedactingFilter

    handler_text = "\n".join(
        (RedactingFilter().filter(record), record.getMessage() + (record.exc_text or ""))[1] for record in caplog.records
    )
    stored = " ".join(f"{row.arguments} {row.error}" for row in _audit(runtime))
    echoed = run(runtime, "UA", "/role grant xoxb-123-456-abc admin").text
    assert echoed.startswith("'***' is not a user")
    for leaked in ("hunter2", "xoxb-123-456-abc"):
        assert leaked not in stored
        assert leaked not in echoed
        assert leaked not in reply.text
        assert leaked not in handler_text


def test_a_command_that_needs_approval_does_not_run_when_asked_but_waits_as_a_request(make_runtime):
    ran = []
    runtime = make_runtime(admins=["UA"])
    runtime.commands = {
        **runtime.commands,
        "restore": Command("restore", "Restore a backup.", "/restore", NoArgs, Role.operator, lambda ctx, args: ran.append(1), True),
    }
    assert "`/restore` — Restore a backup. _(needs a second person's approval)_" in run(runtime, "UA", "/help").text
    reply = run(runtime, "UA", "/restore")
    assert reply.text.startswith("Request #1: `/restore` needs a second person's approval (until ")
    assert reply.text.endswith("another approver runs /approvals approve 1.")
    assert ran == []
    assert [(row.command, row.outcome, row.job_id) for row in _audit(runtime)][-1] == ("restore", "requested", 1)


def _drop(postgres_url):
    """The bot's database goes away under it (a failover, a dropped connection)."""
    import psycopg

    from tests.conftest import POSTGRES_ADMIN

    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_with_the_database_down_every_path_ends_in_one_sentence_with_an_error_id(make_runtime, postgres_url, caplog):
    import re

    runtime = make_runtime(database_url=postgres_url, admins=["UA"])
    _drop(postgres_url)
    cases = {
        ("UA", "/helth"): "/helth was not run because the audit log cannot be written",  # unknown command
        ("UNOBODY", "/audit"): "/audit was not run because your role could not be checked",  # denied
        ("UA", "/audit 0"): "/audit was not run because the audit log cannot be written",  # malformed
        ("UA", "/whoami"): "/whoami was not run because the audit log cannot be written",  # allowed
    }
    with caplog.at_level(logging.ERROR):
        for (user, line), start in cases.items():
            text = run(runtime, user, line).text
            assert text.startswith(start), text
            error_id = re.search(r"\(error id ([0-9a-f]{8})\)", text).group(1)
            assert any(error_id in record.getMessage() for record in caplog.records), "the same id is in the log"
    assert "worker process" not in " ".join(record.getMessage() for record in caplog.records)


def test_the_console_survives_a_database_that_goes_away(make_runtime, postgres_url):
    import io

    from bot.adapters.console import run_console

    runtime = make_runtime(database_url=postgres_url, admins=["UA"])
    _drop(postgres_url)
    out = io.StringIO()
    assert run_console(runtime, "UA", "C1", stdin=io.StringIO("/whoami\n/help\n"), stdout=out) == 0
    assert "Traceback" not in out.getvalue()
    assert out.getvalue().count("(error id ") == 2


def test_a_flood_of_extra_words_is_not_echoed_back(make_runtime):
    runtime = make_runtime(admins=["UA"])
    reply = run(runtime, "UA", "/whoami " + "x" * 100_000)
    assert reply.text.startswith("Unexpected 'xxxxxxxx") and len(reply.text) < 200
