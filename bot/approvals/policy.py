"""Which approval policy of the stack file governs a request, and the rule a request keeps from then on.

A policy matches a command and, with `when`, values of its arguments: every named argument must have one of the
listed values (a list argument, such as /restart's services: any of its items). The first `[[approvals.policy]]`
that matches decides; with none, the command's own rule stands (one approver with the approver role, where the
command asks for approval at all). The rule resolved when a request is made is stored on its job (`Job.policy`,
the shape below), so a stack-file edit does not change a request that waits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bot.frame.config import ApprovalPolicy, ConfigError, StackConfig
from bot.frame.humanize import count
from bot.frame.roles import Role

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot.frame.registry import Command


def _matches(policy: ApprovalPolicy, command: str, arguments: dict) -> bool:
    if policy.command != command:
        return False
    for name, values in policy.when.items():
        value = arguments.get(name)
        given = value if isinstance(value, list) else [value]
        if not any(item is not None and str(item) in values for item in given):
            return False
    return True


def policy_for(stack: StackConfig, command: str, arguments: dict) -> ApprovalPolicy | None:
    """The policy governing `/command` with these checked arguments (as the job row stores them), or None."""
    return next((policy for policy in stack.approvals.policy if _matches(policy, command, arguments)), None)


def check_policies(stack: StackConfig, commands: "dict[str, Command]") -> None:
    """Every policy names a command the bot has and arguments that command has (a typo would otherwise leave a
    command with its own rule, silently), and none lets a command with its own approver rule (/role's second admin)
    run unapproved. ConfigError naming each problem (the bot does not start)."""
    problems = []
    for at, policy in enumerate(stack.approvals.policy):
        cmd = commands.get(policy.command)
        if cmd is None:
            problems.append(f"approvals.policy.{at}.command: there is no /{policy.command} command")
            continue
        if policy.approvals == 0 and cmd.may_approve is not None:  # its own approver rule (a second admin) would be skipped
            problems.append(f"approvals.policy.{at}.approvals: /{policy.command} checks who may approve it, so no policy may let it run without approval")
        known = list(cmd.args.model_fields)
        for name in policy.when:
            if name not in known:
                have = ", ".join(known) if known else "none"
                problems.append(f"approvals.policy.{at}.when: /{policy.command} has no argument {name!r} (its arguments: {have})")
    if problems:
        raise ConfigError(f"stack file {stack.source or '(defaults)'}: " + "; ".join(problems))


def when_words(policy: ApprovalPolicy) -> str:
    """`when` as a person reads it: "services is postgres or redis and ..."; empty for every use."""
    return " and ".join(f"{name} is {' or '.join(values)}" for name, values in policy.when.items())


def _seconds(duration) -> int | None:
    return duration.seconds if duration is not None else None


def _rule(stack: StackConfig, approvals: int, role: Role, groups: list[str], reason: bool, source: str,
          policy: ApprovalPolicy | None = None) -> dict:
    section = stack.approvals
    pick = lambda name: getattr(policy, name, None) if getattr(policy, name, None) is not None else getattr(section, name)  # noqa: E731
    return {
        "approvals": approvals, "approver_role": role.name, "groups": list(groups), "reason": reason,
        "remind_after": _seconds(pick("remind_after")), "escalate_after": _seconds(pick("escalate_after")),
        "escalate_to": pick("escalate_to"), "source": source,
    }


def policy_source(stack: StackConfig, policy: ApprovalPolicy) -> str:
    at = stack.approvals.policy.index(policy) + 1
    when = when_words(policy)
    return f"policy {at} of the stack file (/{policy.command}{' when ' + when if when else ''})"


def own_rule(stack: StackConfig, cmd: "Command") -> dict:
    """A command's own rule (no policy matches): one approver with the approver role."""
    return _rule(stack, 1, Role.approver, [], False, f"{cmd.slash}'s own rule (no policy of the stack file matches)")


def effective_rule(stack: StackConfig, cmd: "Command", args: "BaseModel") -> dict | None:
    """The rule a checked request is asked under (stored on its job), or None when it needs no approval at all."""
    policy = policy_for(stack, cmd.name, args.model_dump(mode="json"))
    if policy is not None:
        return _rule(stack, policy.approvals, policy.approver_role, policy.groups, policy.reason, policy_source(stack, policy), policy)
    return own_rule(stack, cmd) if cmd.approval_needed(args) else None


@dataclass(frozen=True)
class Rule:
    """The part of a stored rule that decides: how many, with what role, from which groups, with a reason."""

    approvals: int = 1
    approver_role: Role = Role.approver
    groups: tuple[str, ...] = ()
    reason: bool = False
    source: str = "the command's own rule"

    @classmethod
    def of(cls, stored: dict | None) -> "Rule":
        """A job's rule; a row from before policies (None) had one approver with the approver role."""
        if not stored:
            return cls()
        return cls(
            int(stored.get("approvals", 1)), Role.parse(stored.get("approver_role", "approver")),
            tuple(stored.get("groups") or ()), bool(stored.get("reason")), stored.get("source") or cls.source,
        )

    @property
    def plain(self) -> bool:
        """The two-person rule of old: one approver, the approver role, no group: its message says nothing more."""
        return self.approvals == 1 and self.approver_role == Role.approver and not self.groups

    def words(self) -> str:
        """The rule in one phrase: "2 approvals from people with the approver role, at least one a member of …"."""
        if self.approvals == 0:
            asked = ', with a reason (--reason "TEXT")' if self.reason else ""
            return f"no approval: it runs at once{asked}"
        parts = [f"{count(self.approvals, 'approval')} from {'someone' if self.approvals == 1 else 'people'} with the "
                 f"{self.approver_role.name} role or higher (never the requester)"]
        if self.groups:
            members = " and ".join(f"a member of <!subteam^{group}>" for group in self.groups)
            if self.approvals == 1:
                parts.append(f"who must be {members}")
            elif len(self.groups) == 1:
                parts.append(f"at least one of them {members}")
            else:
                parts.append(f"with {members} among them")
        if self.reason:
            parts.append('and a reason on the request (--reason "TEXT")')
        return ", ".join(parts)


@dataclass
class Standing:
    """Where a request stands against its rule: who approved, and what is still missing."""

    rule: Rule
    approvers: list[str] = field(default_factory=list)  # in the order they approved
    missing_groups: list[str] = field(default_factory=list)

    @property
    def still(self) -> int:
        """Approvals still needed: the quorum's rest, or one more when only a group is missing."""
        rest = max(self.rule.approvals - len(self.approvers), 0)
        return max(rest, 1) if self.missing_groups else rest

    @property
    def met(self) -> bool:
        return self.still == 0

    def from_groups(self) -> str:
        """", from a member of <!subteam^S…>" when a group still has no approver; empty when none is missing."""
        if not self.missing_groups:
            return ""
        members = " and ".join(f"a member of <!subteam^{group}>" for group in self.missing_groups)
        if self.still == 1:
            return f", from {members}"
        return f", at least one from {members}" if len(self.missing_groups) == 1 else f", among them {members}"

    def needs(self) -> str:
        """What the request's message says: "Needs 2 approvals: 1 so far (<@U1>); still 1, from a member of …"."""
        so_far = f"{len(self.approvers)} so far ({', '.join(f'<@{user}>' for user in self.approvers)})" if self.approvers else "none so far"
        head = f"Needs {count(self.rule.approvals, 'approval')}: {so_far}"
        return f"{head}; still {self.still}{self.from_groups()}." if not self.met else f"{head}."

    def missing(self) -> str:
        """What the reply to an approver who was not the last says is missing: "1 more approval, from …"."""
        return f"{count(self.still, 'more approval', 'more approvals')}{self.from_groups()}"


def standing(rule: Rule, votes: list[tuple[str, list[str]]]) -> Standing:
    """The rule against the approve votes: (user, the rule's groups they were a member of), in order."""
    covered = {group for _user, groups in votes for group in groups}
    return Standing(rule, [user for user, _groups in votes], [group for group in rule.groups if group not in covered])
