"""Which approval policy of the stack file governs a request: the first `[[approvals.policy]]` that matches it.

A policy matches a command and, with `when`, values of its arguments: every named argument must have one of the
listed values (a list argument, such as /restart's services: any of its items). None when no policy matches: the
command's own rule stands (one approver with the approver role, where the command asks for approval at all).
"""

from __future__ import annotations

from bot.frame.config import ApprovalPolicy, StackConfig


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
