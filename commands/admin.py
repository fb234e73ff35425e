"""/role and /audit: who may do what, and what was done."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

from bot import blocks
from bot.audit import AuditLog
from bot.authz import Authorizer
from bot.registry import CommandError, Context, Reply, UserId, command
from bot.roles import Role, RoleName


class RoleArgs(BaseModel):
    action: Literal["grant", "revoke", "list"]
    user: UserId | None = None
    role: RoleName | None = None

    @model_validator(mode="after")
    def _shape(self) -> "RoleArgs":
        if self.action == "grant" and (self.user is None or self.role is None):
            raise ValueError("grant needs a user and a role")
        if self.action == "revoke" and (self.user is None or self.role is not None):
            raise ValueError("revoke needs a user and nothing else")
        if self.action == "list" and self.user is not None:
            raise ValueError("list takes nothing after it")
        return self


@command(
    "role",
    summary="Grant, revoke or list roles (viewer < operator < approver < admin).",
    usage="/role grant @user ROLE | /role revoke @user | /role list",
    role=Role.admin,
    args=RoleArgs,
)
def role(ctx: Context, args: RoleArgs) -> Reply:
    authz = ctx.runtime.authz
    caller = ctx.invocation.user_id
    if args.action == "list":
        return _list_roles(ctx)
    if args.user == caller:
        raise CommandError("You cannot change your own role; ask another admin.")
    if authz.is_fixed_admin(args.user):
        raise CommandError(f"<@{args.user}> is an admin through FLOWSTATE_ADMINS; change that setting instead.")
    if args.action == "grant":
        Authorizer.grant(ctx.session, args.user, args.role, caller)
        text = f"<@{args.user}> now has the {args.role.name} role."
    else:
        previous = Authorizer.revoke(ctx.session, args.user)
        if previous is None:
            raise CommandError(f"<@{args.user}> has no role granted in the bot; nothing was changed.")
        text = f"<@{args.user}> no longer has the {previous.name} role."
    return Reply(text, [blocks.section(text)])


def _list_roles(ctx: Context) -> Reply:
    settings = ctx.runtime.settings
    lines = [f"<@{user}> admin (FLOWSTATE_ADMINS)" for user in settings.admins]
    for row in Authorizer.assignments(ctx.session):
        when = row.granted_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M %Z")
        lines.append(f"<@{row.user_id}> {row.role} (granted by <@{row.granted_by}>, {when})")
    for group, group_role in settings.role_groups.items():
        lines.append(f"<!subteam^{group}> members: {group_role.name}")
    default = settings.default_role.name if settings.default_role else "none (denied)"
    lines.append(f"Everyone else: {default}")
    return Reply("\n".join(lines), [blocks.section("*Roles*"), *blocks.sections(lines)])


class AuditArgs(BaseModel):
    count: int = Field(20, ge=1, le=200)


@command("audit", summary="Show the latest audit entries.", usage="/audit [count]", role=Role.admin, args=AuditArgs)
def audit(ctx: Context, args: AuditArgs) -> Reply:
    tz = ctx.runtime.settings.tz
    lines = []
    for entry in AuditLog.latest(ctx.session, args.count):
        when = entry.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
        arguments = " ".join(f"{key}={value}" for key, value in (entry.arguments or {}).items() if value not in (None, ""))
        line = f"{when} <@{entry.user_id}> /{entry.command} {arguments} → {entry.outcome} ({entry.duration_ms} ms)"
        if entry.error:
            line += f": {entry.error}"
        if entry.error_id:
            line += f" [error id {entry.error_id}]"
        lines.append(line)
    if not lines:
        return Reply("The audit log is empty.")
    return Reply("\n".join(lines), [blocks.section(f"*Latest {len(lines)} audit entries*"), *blocks.sections(lines)])
