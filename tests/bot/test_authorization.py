"""Every command x every role: allowed or denied exactly as declared, and a denial runs nothing."""

import pytest

from bot.frame.registry import parse_arguments
from bot.runtime import load_commands
from bot.frame.roles import Role
from bot.store.engine import AuditEntry, RoleAssignment
from tests.conftest import grant, run

# A valid invocation of every command: the table test must grow with every new command.
SAMPLES = {
    "help": "",
    "whoami": "",
    "role": "list",
    "changes": "6h",
    "policy": "restart",
    "audit": "5",
    "health": "",
    "stats": "1h",
    "approvals": "",
    "restart": "frontend",
    "queries": "",
    "user": "alice@example.com",
    "user-add": 'new.user@example.com "New User"',
    "user-role": "alice@example.com user",
    "incident": "start Checkout failing --sev 2",  # a viewer may add notes, only an operator may start one
    "incidents": "",
    "actions": "",
    "postmortem": "",
    "backup": "before the upgrade",
    "backups": "",
    "restore": "1",
    "releases": "",
    "rollback": "",
    "logs": "backend --grep 500",
    "schedule": "",
    "watch": "",
    "freeze": '2h "release day"',
}
# What an allowed caller's audit shows when it is not simply allowed then succeeded: with no stack
# file, /restart is refused by its service check before any request is made; the commands that need a
# section of the stack file ([database], [deploy]) are refused before they run, naming it; with no
# incident in the channel, /postmortem says so.
ALLOWED_OUTCOMES = {
    "restart": ["rejected"],
    "logs": ["rejected"],  # no Compose project: refused by its check
    "backups": ["allowed", "failed"],
    "postmortem": ["allowed", "failed"],
    # no [database] or [deploy] section: refused before they run
    **{name: ["rejected"] for name in ("backup", "restore", "rollback", "releases", "queries", "user", "user-add", "user-role")},
}

ROLES = [None, *Role]


def test_every_command_has_a_sample():
    assert set(SAMPLES) == set(load_commands()), "add a valid sample invocation for each new command"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name if r else "no-role")
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_command_by_role(make_runtime, name, role):
    runtime = make_runtime()
    if role is not None:
        grant(runtime, "U1", role)
    cmd = runtime.commands[name]
    declared = cmd.role_needed(parse_arguments(cmd, SAMPLES[name]))
    reply = run(runtime, "U1", f"/{name} {SAMPLES[name]}")
    with runtime.store.session() as session:
        outcomes = [row.outcome for row in session.query(AuditEntry).order_by(AuditEntry.id)]
    if role is not None and role >= declared:
        assert outcomes == ALLOWED_OUTCOMES.get(name, ["allowed", "succeeded"]), reply.text
        assert "needs the" not in reply.text
    else:
        assert outcomes == ["denied"]
        if role is None or role < cmd.role:
            assert reply.text.startswith(f"/{name} needs the {cmd.role.name} role")
        else:
            assert reply.text == f"This use of /{name} needs the {declared.name} role and you have {role.name}."


def test_a_denied_grant_changes_nothing(make_runtime):
    runtime = make_runtime()
    grant(runtime, "UOP", Role.operator)
    reply = run(runtime, "UOP", "/role grant <@UOP|me> admin")
    assert reply.text == "/role needs the admin role and you have operator."
    assert runtime.authz.role_of("UOP") is Role.operator


def test_unknown_users_are_denied_by_default_and_get_the_configured_default(make_runtime):
    assert run(make_runtime(), "UNEW", "/help").text.startswith("/help needs the viewer role and you have no role yet")
    runtime = make_runtime(default_role="viewer")
    assert "Commands you may run" in run(runtime, "UNEW", "/help").text
    assert run(runtime, "UNEW", "/role list").text == "/role needs the admin role and you have viewer."


def test_admins_from_settings_can_grant_and_revoke_but_not_themselves(make_runtime):
    runtime = make_runtime(admins=["UBOSS"])
    assert run(runtime, "UBOSS", "/role grant <@U2|ann> approver").text == "<@U2> now has the approver role."
    assert runtime.authz.role_of("U2") is Role.approver
    assert "cannot change your own role" in run(runtime, "UBOSS", "/role revoke <@UBOSS>").text
    assert run(runtime, "UBOSS", "/role revoke U2").text == "<@U2> no longer has the approver role."
    assert runtime.authz.role_of("U2") is None
    assert "nothing was changed" in run(runtime, "UBOSS", "/role revoke U2").text


def test_a_settings_admin_cannot_be_demoted_from_slack(make_runtime):
    runtime = make_runtime(admins=["UBOSS", "UOTHER"])
    reply = run(runtime, "UBOSS", "/role grant UOTHER viewer")
    assert "FLOWSTATE_ADMINS" in reply.text
    assert runtime.authz.role_of("UOTHER") is Role.admin
    with runtime.store.session() as session:
        assert session.query(RoleAssignment).count() == 0


def test_user_group_members_get_the_mapped_role_and_a_failing_lookup_grants_nothing(tmp_path):
    from tests.conftest import make_settings
    from bot.frame.config import StackConfig
    from bot.runtime import Runtime

    lookups = []

    def members(group):
        lookups.append(group)
        if group == "SBROKEN":
            raise RuntimeError("slack is down")
        return {"UONCALL"}

    settings = make_settings(tmp_path, role_groups="SONCALL=operator,SBROKEN=admin")
    runtime = Runtime.build(settings, StackConfig(), group_members=members)
    try:
        assert runtime.authz.role_of("UONCALL") is Role.operator
        assert runtime.authz.role_of("USTRANGER") is None
        assert lookups.count("SONCALL") == 1, "members are cached, not fetched for every command"
    finally:
        runtime.close()


def test_granting_admin_needs_a_second_admin_who_is_not_the_one_promoted(make_runtime, database_url):
    from tests.bot.test_approvals import _decide

    runtime = make_runtime(database_url=database_url, admins=["UBOSS", "UPEER"])
    grant(runtime, "UPUPPET", Role.approver)  # a sock puppet: granting approver needs nobody else
    grant(runtime, "UAPP", Role.approver)
    asked = run(runtime, "UBOSS", "/role grant <@UPUPPET|puppet> admin").text
    assert asked.startswith("Request #1: `/role grant UPUPPET admin` needs a second person's approval")
    assert runtime.authz.role_of("UPUPPET") is Role.approver
    message = runtime.approvals.render(runtime.jobs.get(1), "⏳ Waiting for approval.")
    assert "Only another admin may approve a new admin, and not <@UPUPPET>." in str(message.blocks)
    reply, ran = _decide(runtime, "UPUPPET", "/approvals approve 1")
    assert (reply.text, ran) == ("You cannot approve request #1: it grants you a role; another admin must approve it.", [])
    reply, ran = _decide(runtime, "UAPP", "/approvals approve 1")
    assert (reply.text, ran) == ("You cannot approve request #1: granting admin needs a second admin, and you have approver.", [])
    assert runtime.authz.role_of("UPUPPET") is Role.approver
    reply, ran = _decide(runtime, "UPEER", "/approvals approve 1")
    assert ran == ["<@UPUPPET> now has the admin role."]
    assert runtime.authz.role_of("UPUPPET") is Role.admin
    glass = run(runtime, "UBOSS", '/role grant U3 admin --break-glass "nobody awake"').text
    assert glass == "`/role grant U3 admin` cannot be run with --break-glass; ask for its approval."
    assert runtime.authz.role_of("U3") is None
    assert run(runtime, "UBOSS", "/role grant U3 approver").text == "<@U3> now has the approver role."
