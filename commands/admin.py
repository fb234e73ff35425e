"""/role and /audit: who may do what, and what was done."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from bot.access.service import LONGEST
from bot.frame import blocks
from bot.frame.blocks import escape, shorten
from bot.frame.audit import AuditLog, as_typed
from bot.frame.authz import Authorizer
from bot.frame.durations import duration_field
from bot.frame.humanize import count
from bot.frame.registry import CommandError, Option, Reply, UserId, command
from bot.frame.roles import Role, RoleName
from commands.context import Ctx


class RoleArgs(BaseModel):
    action: Literal["grant", "revoke", "list"] = Field(examples=["grant"])
    user: UserId | None = Field(None, description="a Slack user: @name, or their user id (U…)", examples=["@alice"])
    role: RoleName | None = Field(None, description="the role to grant", examples=["operator"])
    duration: Annotated[duration_field(LONGEST) | None, Option("--for", "DURATION")] = Field(
        None, description="grant it for a while: then the role before it comes back", examples=["2h"]
    )

    @model_validator(mode="after")
    def _shape(self) -> "RoleArgs":
        if self.action == "grant" and (self.user is None or self.role is None):
            raise ValueError("grant needs a user and a role")
        if self.action != "grant" and self.duration is not None:
            raise ValueError("--for goes with grant only, such as /role grant @alice operator --for 2h")
        if self.action == "revoke" and (self.user is None or self.role is not None):
            raise ValueError("revoke needs a user and nothing else")
        if self.action == "list" and self.user is not None:
            raise ValueError("list takes nothing after it")
        return self


def _grants_admin(args: RoleArgs) -> bool:
    return args.action == "grant" and args.role is Role.admin


def _second_admin(args: RoleArgs, approver: str, role: Role) -> str | None:
    """An admin alone could make a second account admin and let it grant back: a new admin needs another admin."""
    if approver == args.user:
        return "it grants you a role; another admin must approve it"
    if role < Role.admin:
        return f"granting admin needs a second admin, and you have {role.name}"
    return None


@command(
    "role",
    summary="Grant, revoke or list roles (viewer < operator < approver < admin).",
    usage="/role grant @user ROLE [--for DURATION] | /role revoke @user | /role list",
    role=Role.admin,
    args=RoleArgs,
    needs_approval=_grants_admin,
    changes=False,  # the bot's own roles, not the stack: no need to wait for a running change
    may_approve=_second_admin,
    describe=lambda _ctx, args: [
        f"Only another admin may approve a new admin, and not <@{args.user}>.",
        *([f"For {args.duration} from its approval, then the role before it comes back."] if args.duration else []),
    ],
)
def role(ctx: Ctx, args: RoleArgs) -> Reply:
    authz = ctx.authz
    caller = ctx.invocation.user_id
    if args.action == "list":
        return _list_roles(ctx)
    if args.user == caller:
        raise CommandError("You cannot change your own role; ask another admin.")
    if authz.is_fixed_admin(args.user):
        raise CommandError(f"<@{args.user}> is an admin through FLOWSTATE_ADMINS; change that setting instead.")
    access, at = ctx.access, ctx.duties.clock.now()
    if args.action == "grant":
        lasting = args.duration.delta if args.duration else None
        until = access.grant_bot(ctx.session, args.user, args.role, caller, ctx.invocation.channel_id, lasting, at)
        simple = until or f"<@{args.user}> now has the {args.role.name} role."
        done = until.removesuffix(".") if until else f"<@{args.user}> was granted the {args.role.name} role in the bot"
        granted = [f"{args.role.name} granted in the bot"]
    elif (ended := access.revoke_bot(ctx.session, args.user, caller, at)) is not None:
        back = f"they have {ended.previous_role} again" if ended.previous_role else "they have no role in the bot now"
        done = f"<@{args.user}>'s {ended.role} role (until {access.when(ended.expires_at, at)}) was taken back early; {back}"
        simple = done + "."
        granted = [f"{ended.previous_role} granted in the bot"] if ended.previous_role else []
    else:
        previous = Authorizer.revoke(ctx.session, args.user)
        if previous is None:
            raise CommandError(f"<@{args.user}> has no role granted in the bot; nothing was changed.")
        simple = f"<@{args.user}> no longer has the {previous.name} role."
        done = f"The {previous.name} role granted in the bot was taken from <@{args.user}>"
        granted = []
    # What they can do now, from every source: a Slack user group may still give more than the bot's grant.
    now = authz.explain(args.user, ctx.session)
    only_the_grant = now.sources == granted
    text = simple if only_the_grant else f"{done}; in effect they have {now.describe()}."
    if now.lookup_failed:
        text += " A Slack user-group lookup failed, so a group role may be missing from this."
    return Reply(text, [blocks.section(text)])


def _list_roles(ctx: Ctx) -> Reply:
    settings = ctx.settings
    lines = [f"<@{user}> admin (FLOWSTATE_ADMINS)" for user in settings.admins]
    expiring, at = ctx.access.running_bot_grants(ctx.session), ctx.duties.clock.now()
    for row in Authorizer.assignments(ctx.session):
        when = row.granted_at.astimezone(settings.tz).strftime("%Y-%m-%d %H:%M %Z")
        grant = expiring.get(row.user_id)
        role = ctx.access.until(grant, at) if grant is not None and grant.role == row.role else row.role
        line = f"<@{row.user_id}> {role} (granted by <@{row.granted_by}>, {when})"
        effective = ctx.authz.explain(row.user_id, ctx.session)
        if effective.role is not None and effective.role.name != row.role:
            line += f"; in effect {effective.describe()}"
        lines.append(line)
    for group, group_role in settings.role_groups.items():
        lines.append(f"<!subteam^{group}> members: {group_role.name}")
    default = settings.default_role.name if settings.default_role else "none (denied)"
    lines.append(f"Everyone else: {default}")
    return Reply("\n".join(lines), [blocks.section("*Roles*"), *blocks.sections(lines)])


class AuditArgs(BaseModel):
    count: int = Field(20, ge=1, le=200, description="how many entries", examples=[50])
    before: int | None = Field(None, ge=1, le=2**63 - 1, description="an entry's #id: shows the ones older than it")


ENTRY_LIMIT = 300  # characters of one entry; a flood of text from anyone cannot crowd out the others
REPLY_LIMIT = 35_000  # Slack refuses a message over 40,000 characters or 50 blocks


@command(
    "audit",
    summary="Show the latest audit entries, or those before an entry's #id.",
    usage="/audit [count] [before_id]",
    role=Role.admin,
    args=AuditArgs,
)
def audit(ctx: Ctx, args: AuditArgs) -> Reply:
    tz = ctx.tz
    lines: list[str] = []
    size = 0
    entries = AuditLog.latest(ctx.session, args.count, before=args.before)
    for entry in entries:
        line = _entry_line(entry, tz, ctx.commands)
        if size + len(line) > REPLY_LIMIT:
            break
        lines.append(line)
        size += len(line) + 1
    if not lines:
        return Reply("The audit log has no entries there." if args.before else "The audit log is empty.")
    shown = f"*{count(len(lines), 'audit entry', 'audit entries')}, newest first*"
    if len(lines) < len(entries) or len(entries) == args.count:
        shown += f" · older ones: `/audit {args.count} {entries[len(lines) - 1].id}`"
    return Reply("\n".join(lines), [blocks.section(shown), *blocks.sections(lines)])


def _entry_line(entry, tz, commands) -> str:
    """One line per entry, user text escaped: a newline or a <@mention> in someone's text cannot forge an entry."""
    when = entry.at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")
    where = entry.source + (f" as {entry.origin}" if entry.origin else "") + (f" in {entry.channel_id}" if entry.channel_id else "")
    text = as_typed(entry, commands) + f" → {entry.outcome} ({entry.duration_ms} ms)"
    if entry.error:
        text += f": {entry.error}"
    if isinstance(entry.details, dict) and entry.details.get("reason"):  # --reason "TEXT" of a request
        text += f" (reason: {entry.details['reason']})"
    if entry.error_id:
        text += f" [error id {entry.error_id}]"
    if entry.job_id:
        text += f" [request #{entry.job_id}]"
    return f"#{entry.id} {when} <@{escape(entry.user_id)}> ({escape(where)}) {escape(shorten(text, ENTRY_LIMIT))}"
