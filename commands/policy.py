"""/policy [command]: what each command needs before it runs (approvals, role, user groups, a reason), and why."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from bot.approvals.policy import Rule, when_words
from bot.frame import blocks
from bot.frame.config import ApprovalPolicy
from bot.frame.registry import Command, CommandError, Reply, command
from bot.frame.roles import Role
from commands.context import Ctx


class PolicyArgs(BaseModel):
    command: str | None = Field(None, description="a command's name, with or without its slash", examples=["restart"])

    @field_validator("command")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 40:
            raise ValueError("that is too long to be a command name; /policy alone lists the commands that need approval")
        return value.lstrip("/").lower() if value is not None else None


def _rule_words(policy: ApprovalPolicy) -> str:
    return Rule(policy.approvals, policy.approver_role, tuple(policy.groups), policy.reason).words()


def _own(cmd: Command) -> str:
    """What applies when no policy matches: the command's own declaration."""
    if callable(cmd.needs_approval):
        return f"some uses need {Rule().words()} (its own rule; /help {cmd.name} says which)"
    if cmd.needs_approval:
        return f"{Rule().words()} (its own rule)"
    return "no approval: it runs at once for anyone with its role (its own rule)"


def _summary(cmd: Command, policies: list[ApprovalPolicy]) -> str:
    parts = [f"when {when_words(p)}: {_rule_words(p)}" if p.when else f"every use: {_rule_words(p)}" for p in policies]
    if not any(not p.when for p in policies):  # a policy without `when` takes every use: nothing is left for the own rule
        parts.append(f"otherwise: {_own(cmd)}" if policies else _own(cmd))
    return f"• `{cmd.slash}`: " + "; ".join(parts)


def _explain(ctx: Ctx, cmd: Command, policies: list[ApprovalPolicy]) -> Reply:
    config = ctx.stack.config
    head = f"*{cmd.slash}* (anyone with the {cmd.role.name} role or higher may ask for it)"
    lines = []
    if policies:
        lines.append("The first policy of the stack file that matches a request decides what it needs (numbered as in the file):")
        for policy in policies:
            when = f"when {when_words(policy)}" if policy.when else "every use"
            lines.append(f"{config.approvals.policy.index(policy) + 1}. {when}: {_rule_words(policy)}.")
    if not any(not p.when for p in policies):
        lead = "When no policy matches" if policies else "No policy of the stack file names it, so its own rule applies"
        lines.append(f"{lead}: {_own(cmd)}.")
    if cmd.may_approve is not None:
        lines.append(f"{cmd.slash} also checks who may approve it (/help {cmd.name}), and it is never run with --break-glass.")
    elif policies or cmd.needs_approval:
        lines.append("An admin may run it at once with --break-glass \"REASON\", said loudly in the channel and the audit.")
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])


@command(
    "policy",
    summary="What each command needs before it runs (approvals, role, user groups, a reason), and why.",
    usage="/policy [command]",
    role=Role.viewer,
    args=PolicyArgs,
)
def policy(ctx: Ctx, args: PolicyArgs) -> Reply:
    policies = ctx.stack.config.approvals.policy
    if args.command is not None:
        cmd = ctx.commands.get(args.command)
        if cmd is None:
            raise CommandError(f"There is no /{args.command} command; /policy alone lists the commands that need approval.")
        return _explain(ctx, cmd, [p for p in policies if p.command == cmd.name])
    named = {p.command for p in policies}
    listed = [cmd for cmd in sorted(ctx.commands.values(), key=lambda c: c.name) if cmd.needs_approval or cmd.name in named]
    head = "*What needs approval* (the first matching policy of the stack file decides; /policy COMMAND explains one)"
    lines = [_summary(cmd, [p for p in policies if p.command == cmd.name]) for cmd in listed]
    return Reply("\n".join([head, *lines]), [blocks.section(head), *blocks.sections(lines)])
