"""/help and /whoami: what the caller may run."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from bot.frame import blocks
from bot.frame.registry import Command, CommandError, Invocation, Reply, command
from bot.frame.roles import Role
from bot.frame.usage import arguments, example
from commands.context import Ctx


# Longer than any command name (at most 31 characters), so what /help echoes stays short.
_NAME_LIMIT = 40


class HelpArgs(BaseModel):
    command: str | None = Field(None, description="a command's name, with or without its slash", examples=["logs"])

    @field_validator("command")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        if value is not None and len(value) > _NAME_LIMIT:
            raise ValueError("that is too long to be a command name; /help alone lists the commands you may run")
        return value


def _refusal(ctx: Ctx, cmd: Command) -> str | None:
    """Why the caller may not run it (None: they may), asked of the pipeline's own steps in a dry run."""
    asked = Invocation(ctx.invocation.user_id, cmd.name, "", ctx.invocation.channel_id, ctx.invocation.source)
    return ctx.may_run(asked, ctx.role)


def _allowed(ctx: Ctx) -> list[Command]:
    return [cmd for cmd in sorted(ctx.commands.values(), key=lambda c: c.name) if _refusal(ctx, cmd) is None]


def _line(cmd: Command) -> str:
    if callable(cmd.needs_approval):
        approval = " _(some uses need a second person's approval)_"
    else:
        approval = " _(needs a second person's approval)_" if cmd.needs_approval else ""
    return f"`{cmd.usage}` — {cmd.summary}{approval}"


def _usage(cmd: Command, break_glass: bool) -> Reply:
    """One command in full, from its declaration: every argument and option with its limits and default, an example."""
    lines = [f"`{cmd.usage}` — {cmd.summary}"]
    for argument in arguments(cmd):
        said = "; ".join(part for part in (argument.says, argument.accepts) if part)
        default = f" (default {blocks.escape(argument.default)})" if argument.default is not None else ""
        lines.append(f"• `{argument.shown}`{': ' if said else ''}{blocks.escape(said)}{default}")
    shown = example(cmd)
    if shown:
        lines.append(f"Example: `{shown}`")
    lines.append(_approval(cmd, break_glass))
    return Reply("\n".join(lines), [blocks.section(lines[0]), *blocks.sections(lines[1:])])


def _approval(cmd: Command, break_glass: bool) -> str:
    role = f"Needs the {cmd.role.name} role{'; some uses need a higher one' if cmd.role_for else ''}."
    if not cmd.needs_approval:
        return role
    which = "Some uses need" if callable(cmd.needs_approval) else "It needs"
    if cmd.may_approve is not None:
        way = "never with --break-glass: its approval is the point"
    elif break_glass:
        way = 'an admin may run it at once, announced in the channel, with `--break-glass "REASON"`'
    else:
        way = "break-glass is turned off on this bot"
    return f"{role} {which} a second person's approval; {way}."


@command("help", summary="List the commands you may run, or show one.", usage="/help [command]", role=Role.viewer, args=HelpArgs)
def help_(ctx: Ctx, args: HelpArgs) -> Reply:
    if args.command:
        name = args.command.lstrip("/")
        cmd = ctx.commands.get(name)
        if cmd is None:
            raise CommandError(f"There is no /{name} command; /help lists what you can run.")
        refusal = _refusal(ctx, cmd)
        if refusal is not None:
            raise CommandError(refusal)
        return _usage(cmd, ctx.settings.break_glass)
    lines = [_line(cmd) for cmd in _allowed(ctx)]  # an admin's list is longer than one section of Slack's holds
    joined = "\n".join(lines)
    return Reply(
        f"Commands you may run:\n{joined}",
        [blocks.section("*Commands you may run*"), *blocks.sections(lines), blocks.context(f"Your role: {ctx.role.name}.")],
    )


@command("whoami", summary="Show your role and what it allows.", usage="/whoami", role=Role.viewer)
def whoami(ctx: Ctx, _args) -> Reply:
    names = ", ".join(cmd.slash for cmd in _allowed(ctx))
    text = f"You are <@{ctx.invocation.user_id}> with the {ctx.role.name} role; you may run {names}."
    return Reply(text, [blocks.section(text)])
