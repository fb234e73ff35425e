"""/user, /user-add and /user-role: the operator guide's user management, on the Flowstate app's users table."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from bot.access.model import APP
from bot.access.service import LONGEST
from bot.frame import blocks
from bot.frame.durations import duration_field
from bot.frame.registry import CommandError, Option, Reply, command
from bot.frame.roles import Role
from bot.stack.users import StackUsers
from commands.context import Ctx

# Dot-atoms of the ASCII letters, digits and symbols RFC 5322 allows; no quoted local parts, no IP literals.
_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?:{_LABEL}\.)+{_LABEL}")
_MAILTO = re.compile(r"<mailto:([^|>]*)(?:\|[^>]*)?>")  # how Slack sends an address typed in a command
NAME_LIMIT = 200


def _shown(value: str) -> str:
    """A typed value echoed in a refusal: short, with quotes and control characters escaped."""
    return repr(value if len(value) <= 60 else value[:60] + "…")


def _email(value: str) -> str:
    match = _MAILTO.fullmatch(value)
    email = match.group(1) if match else value
    parts = len(email) <= 254 and email.isascii() and _EMAIL.fullmatch(email.lower())
    if not parts or len(parts.group("local")) > 64:
        raise ValueError(f"{_shown(value)} is not an email address; give one such as new.user@example.com")
    return email.lower()


def _name(value: str) -> str:
    name = value.strip()
    if not name:
        raise ValueError('the name is empty; give the full name in quotes, such as "New User"')
    if len(name) > NAME_LIMIT:
        raise ValueError(f"the name has {len(name):,} characters; give one of at most {NAME_LIMIT}")
    if any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in name):
        raise ValueError("the name contains a control character or line break; give it on one line")
    return name


Email = Annotated[str, AfterValidator(_email)]
UserName = Annotated[str, AfterValidator(_name)]
# Lower-cased while parsing, so the approval check sees what will be stored: ADMIN is admin.
AppRole = Annotated[str, AfterValidator(lambda value: value.strip().lower())]


def grants_admin(args: UserAddArgs | UserRoleArgs) -> bool:
    return args.role == "admin"


def _users(ctx: Ctx) -> StackUsers:
    if ctx.stack.users is None:  # the declarations' needs=("database",) refuse before this
        raise CommandError("The stack file has no [database] section, so there is no users table.")
    return ctx.stack.users


def _check_role(ctx: Ctx, role: str, hint: str = "") -> None:
    roles = ctx.stack.config.database.user_roles
    if role not in roles:
        raise CommandError(f"{_shown(role)} is not a role here; roles are {', '.join(roles)}{hint}.")


def _reply(text: str) -> Reply:
    return Reply(text, [blocks.section(text)])


class UserArgs(BaseModel):
    email: Email = Field(description="the user's email address", examples=["new.user@example.com"])


@command("user", summary="Show a user of the Flowstate app.", usage="/user EMAIL", role=Role.operator, args=UserArgs, needs=("database",))
def user(ctx: Ctx, args: UserArgs) -> Reply:
    found = _users(ctx).find(args.email)
    if found is None:
        raise CommandError(f"No user has the email {args.email}; /user-add adds one.")
    created = found.created_at.astimezone(ctx.tz).strftime("%Y-%m-%d %H:%M %Z")
    grant = ctx.access.running(APP, found.email)
    role = ctx.access.until(grant, ctx.duties.clock.now()) if grant is not None and grant.role == found.role else found.role
    return _reply(f"Email: {found.email}\nName: {found.name}\nRole: {role}\nCreated: {created}")


class UserAddArgs(BaseModel):
    email: Email = Field(description="the new user's email address", examples=["new.user@example.com"])
    name: UserName = Field(description=f"their full name, in quotes, at most {NAME_LIMIT} characters", examples=["New User"])
    role: AppRole = Field("user", description="a role of the stack file's user_roles", examples=["admin"])


@command(
    "user-add",
    summary="Add a user to the Flowstate app, with a role (default user).",
    usage='/user-add EMAIL "NAME" [ROLE]',
    role=Role.operator,
    args=UserAddArgs,
    needs_approval=grants_admin,
    needs=("database",),
)
def user_add(ctx: Ctx, args: UserAddArgs) -> Reply:
    users = _users(ctx)
    # An unquoted full name puts its last word in the role's place.
    _check_role(ctx, args.role, hint=' (put a name with spaces in quotes, such as "New User")')
    added = users.add(args.email, args.name, args.role)
    return _reply(f"Added {added.email} ({added.name}) with the {added.role} role.")


class UserRoleArgs(BaseModel):
    email: Email = Field(description="the user's email address", examples=["new.user@example.com"])
    role: AppRole = Field(description="a role of the stack file's user_roles", examples=["admin"])
    duration: Annotated[duration_field(LONGEST) | None, Option("--for", "DURATION")] = Field(
        None, description="change it for a while: then the role before it comes back", examples=["2h"]
    )


def _check_role_change(ctx: Ctx, args: UserRoleArgs) -> None:
    """Refused before anyone is asked to approve it: a role that is not one, a user who does not exist, no change."""
    _check_role(ctx, args.role)
    ctx.access.refuse_app_change(_users(ctx), args.email, args.role)


def _describe_role_change(ctx: Ctx, args: UserRoleArgs) -> list[str]:
    found = _users(ctx).find(args.email)
    if found is None:
        return [f"No user has the email {args.email} any more."]
    running = ctx.access.running(APP, found.email)
    back = running.previous_role if running is not None else found.role
    lasting = f" for {args.duration} from its approval, then back to *{back}*" if args.duration else ""
    return [f"*{found.email}* ({blocks.escape(found.name)}), created {found.created_at:%Y-%m-%d}: role *{found.role}* → *{args.role}*{lasting}"]


@command(
    "user-role",
    summary="Change the role of a user of the Flowstate app.",
    usage="/user-role EMAIL ROLE [--for DURATION]",
    role=Role.operator,
    args=UserRoleArgs,
    needs_approval=grants_admin,
    needs=("database",),
    check=_check_role_change,
    describe=_describe_role_change,
)
def user_role(ctx: Ctx, args: UserRoleArgs) -> Reply:
    _check_role(ctx, args.role)
    lasting = args.duration.delta if args.duration else None
    invocation = ctx.invocation
    return _reply(
        ctx.access.set_app_role(_users(ctx), args.email, args.role, invocation.user_id, invocation.channel_id, lasting, ctx.duties.clock.now())
    )
