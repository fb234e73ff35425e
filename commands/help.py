"""/help and /whoami: what the caller may run."""

from __future__ import annotations

from pydantic import BaseModel, field_validator

from bot.frame import blocks
from bot.frame.registry import Command, CommandError, Reply, command
from bot.frame.roles import Role
from commands.context import Ctx


# Longer than any command name (at most 31 characters), so what /help echoes stays short.
_NAME_LIMIT = 40


class HelpArgs(BaseModel):
    command: str | None = None

    @field_validator("command")
    @classmethod
    def _short(cls, value: str | None) -> str | None:
        if value is not None and len(value) > _NAME_LIMIT:
            raise ValueError("that is too long to be a command name; /help alone lists the commands you may run")
        return value


def _allowed(ctx: Ctx) -> list[Command]:
    return [cmd for cmd in sorted(ctx.commands.values(), key=lambda c: c.name) if ctx.role and ctx.role >= cmd.role]


def _line(cmd: Command) -> str:
    if callable(cmd.needs_approval):
        approval = " _(some uses need a second person's approval)_"
    else:
        approval = " _(needs a second person's approval)_" if cmd.needs_approval else ""
    return f"`{cmd.usage}` — {cmd.summary}{approval}"


@command("help", summary="List the commands you may run, or show one.", usage="/help [command]", role=Role.viewer, args=HelpArgs)
def help_(ctx: Ctx, args: HelpArgs) -> Reply:
    allowed = _allowed(ctx)
    if args.command:
        name = args.command.lstrip("/")
        cmd = ctx.commands.get(name)
        if cmd is None:
            raise CommandError(f"There is no /{name} command; /help lists what you can run.")
        if cmd not in allowed:
            raise CommandError(f"{cmd.slash} needs the {cmd.role.name} role and you have {ctx.role.name}.")
        return Reply(_line(cmd), [blocks.section(_line(cmd)), blocks.context(f"Needs the {cmd.role.name} role.")])
    lines = "\n".join(_line(cmd) for cmd in allowed)
    return Reply(
        f"Commands you may run:\n{lines}",
        [blocks.section("*Commands you may run*"), blocks.section(lines), blocks.context(f"Your role: {ctx.role.name}.")],
    )


@command("whoami", summary="Show your role and what it allows.", usage="/whoami", role=Role.viewer)
def whoami(ctx: Ctx, _args) -> Reply:
    names = ", ".join(cmd.slash for cmd in _allowed(ctx))
    text = f"You are <@{ctx.invocation.user_id}> with the {ctx.role.name} role; you may run {names}."
    return Reply(text, [blocks.section(text)])
