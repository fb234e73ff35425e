"""The single door: an invocation comes in, a reply goes out; adapters know nothing else.

A command passes small steps in order, one policy each: resolve the name, authorize the caller,
take a break-glass reason off the text, parse the arguments, authorize this use of them; then either the approval gate holds it
as a request, or it runs (audited before and after). Every step that fails ends in one sentence for
the user and an audit row; a failure of the bot itself (the database down) ends in an error id.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import secrets
import shlex
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pydantic import BaseModel

from bot.frame.config import missing_section
from bot.frame.redact import redact, redact_value
from bot.frame.registry import ArgumentError, Command, CommandError, Invocation, Reply, command_line, parse_arguments
from bot.frame.roles import Role
from bot.store.engine import retried

if TYPE_CHECKING:
    from bot.frame.audit import AuditLog
    from bot.frame.authz import Authorizer
    from bot.frame.config import Settings
    from bot.frame.registry import Context
    from bot.store.engine import Store


class Host(Protocol):
    """What the dispatcher uses of the composition root (bot/runtime.py), which the frame may not import."""

    settings: "Settings"
    store: "Store"
    authz: "Authorizer"
    audit: "AuditLog"
    commands: dict[str, Command]
    stack: Any  # the operated stack (bot/stack/stack.py); its config says which sections there are
    approvals: Any  # requests and their messages (bot/approvals/service.py)

    def context(self, invocation: Invocation, role: Role | None = None, progress: Callable[[str], None] | None = None,
                job_id: int | None = None) -> "Context": ...

log = logging.getLogger(__name__)

BREAK_GLASS = "--break-glass"


class Refused(Exception):
    """A step said no; the reply says why in one sentence (the audit row is already written)."""

    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


@dataclass
class Prepared:
    """A command that passed every check: exactly what will run, and for whom."""

    cmd: Command
    args: BaseModel
    role: Role
    invocation: Invocation
    break_glass: str | None = None

    @property
    def arguments(self) -> dict:
        return self.args.model_dump(mode="json")

    @property
    def needs_approval(self) -> bool:
        return self.cmd.approval_needed(self.args)

    def command_line(self) -> str:
        """The command as it will run, from the validated arguments (what an approver approves)."""
        return command_line(self.cmd.slash, self.arguments)


def _error_id() -> str:
    return secrets.token_hex(4)


class Dispatcher:
    def __init__(self, runtime: Host):
        self._runtime = runtime

    # ---- the whole path, inline (the console, tests) --------------------------------------------

    def dispatch(self, invocation: Invocation, progress: Callable[[str], None] | None = None) -> Reply:
        """Every reply and progress line passes the redactor: no handler can echo a token by mistake."""
        say = (lambda text: progress(redact(text))) if progress else None
        try:
            prepared = self.prepare(invocation)
            if prepared.needs_approval and not prepared.break_glass:
                return self.clean(self._runtime.approvals.request(prepared))
            if prepared.cmd.changes:
                return self.clean(self._runtime.approvals.run_now(prepared, say))
            return self.clean(self.execute(prepared, say))
        except Refused as refused:
            return self.clean(refused.reply)
        except Exception:
            return self.failed(invocation)

    @staticmethod
    def failed(invocation: Invocation) -> Reply:
        """The bot itself failed (its database, most likely): an error id for the user, the details in the log."""
        error_id = _error_id()
        log.exception("/%s failed in the bot [error id %s]", invocation.command[:64], error_id)
        return Reply(f"/{invocation.command[:64]} failed inside the bot (error id {error_id}); the details are in the bot's log.")

    @staticmethod
    def clean(reply: Reply) -> Reply:
        return dataclasses.replace(reply, text=redact(reply.text), blocks=redact_value(reply.blocks))

    # ---- the checks ------------------------------------------------------------------------------

    def prepare(self, invocation: Invocation) -> Prepared:
        """resolve -> authorize -> break-glass -> parse -> authorize the use -> check; raises Refused with the user's sentence."""
        cmd = self._resolve(invocation)
        role = self._authorize(invocation, cmd)
        text, reason = self._break_glass(invocation, cmd, role)
        args = self._parse(invocation, cmd, text)
        self._authorize_use(invocation, cmd, role, args)
        self._check(invocation, cmd, args)
        prepared = Prepared(cmd, args, role, invocation, reason)
        if reason is not None and not prepared.needs_approval:
            self._refuse(invocation, "rejected", f"{cmd.slash} with these arguments needs no approval; run it without {BREAK_GLASS}.")
        if reason is not None and cmd.may_approve is not None:
            self._refuse(invocation, "rejected", f"`{prepared.command_line()}` cannot be run with {BREAK_GLASS}; ask for its approval.")
        return prepared

    def restore(self, invocation: Invocation, arguments: dict, break_glass: str | None = None) -> Prepared:
        """A stored request, checked again when it runs: the requester may have lost their role meanwhile."""
        cmd = self._resolve(invocation)
        role = self._authorize(invocation, cmd)
        args = cmd.args.model_validate(arguments)
        self._authorize_use(invocation, cmd, role, args)
        return Prepared(cmd, args, role, invocation, break_glass)

    def _refuse(self, invocation: Invocation, outcome: str, sentence: str, *, error: str | None = None, **audit) -> None:
        self._record(invocation, outcome, error=error or sentence, **audit)
        raise Refused(Reply(sentence))

    def _record(self, invocation: Invocation, outcome: str, **fields) -> None:
        """An audit row; if the database cannot take it, the user gets an error id instead of a false answer."""
        try:
            self._runtime.audit.record(invocation, outcome, **fields)
        except Exception:
            error_id = _error_id()
            log.exception("audit write failed for /%s (%s) [error id %s]", invocation.command[:64], outcome, error_id)
            raise Refused(
                Reply(f"/{invocation.command[:64]} was not run because the audit log cannot be written (error id {error_id}).")
            ) from None

    def _resolve(self, invocation: Invocation) -> Command:
        cmd = self._runtime.commands.get(invocation.command)
        if cmd is None:
            self._refuse(invocation, "rejected", self._unknown(invocation.command), error="unknown command")
        return cmd

    def _authorize(self, invocation: Invocation, cmd: Command) -> Role:
        try:
            explained = self._runtime.authz.explain(invocation.user_id)
            role = explained.role
        except Exception:
            error_id = _error_id()
            log.exception("cannot look up the role of %s [error id %s]", invocation.user_id[:64], error_id)
            raise Refused(Reply(f"{cmd.slash} was not run because your role could not be checked (error id {error_id}).")) from None
        if (role is None or role < cmd.role) and explained.lookup_failed:
            self._refuse(
                invocation, "denied",
                f"{cmd.slash} was not run: your role could not be checked because Slack's user-group lookup failed; try again in a minute.",
                error="user-group lookup failed",
            )
        if role is None or role < cmd.role:
            having = f"you have {role.name}" if role else "you have no role yet; ask an admin for one"
            self._refuse(
                invocation, "denied", f"{cmd.slash} needs the {cmd.role.name} role and {having}.",
                error=f"needs {cmd.role.name}, has {role.name if role else 'no role'}",
            )
        return role

    def _authorize_use(self, invocation: Invocation, cmd: Command, role: Role, args: BaseModel) -> None:
        """Some uses of a command need more than the command itself (starting an incident vs adding a note)."""
        needed = cmd.role_needed(args)
        if role < needed:
            self._refuse(
                invocation, "denied", f"This use of {cmd.slash} needs the {needed.name} role and you have {role.name}.",
                error=f"needs {needed.name}, has {role.name}",
            )

    def _break_glass(self, invocation: Invocation, cmd: Command, role: Role) -> tuple[str, str | None]:
        """`--break-glass "REASON"` lets an admin run an approval command at once, loudly."""
        if BREAK_GLASS not in invocation.text:
            return invocation.text, None
        try:
            words = shlex.split(invocation.text)
        except ValueError:
            return invocation.text, None  # the parser reports the open quote
        if BREAK_GLASS not in words:
            return invocation.text, None
        at = words.index(BREAK_GLASS)
        reason = words[at + 1].strip() if at + 1 < len(words) else ""
        rest = words[:at] + words[at + 2 :]
        if not self._runtime.settings.break_glass:
            self._refuse(invocation, "rejected", "Break-glass is turned off on this bot (FLOWSTATE_BREAK_GLASS); ask an approver.")
        if role < Role.admin:
            self._refuse(invocation, "denied", f"Only an admin may use {BREAK_GLASS}; ask an approver instead.")
        if not reason or reason.startswith("--"):
            self._refuse(invocation, "rejected", f'{BREAK_GLASS} needs a reason in quotes, such as {BREAK_GLASS} "approvers asleep, site down".')
        return " ".join(shlex.quote(word) for word in rest), reason[:500]

    def _parse(self, invocation: Invocation, cmd: Command, text: str) -> BaseModel:
        try:
            return parse_arguments(cmd, text)
        except ArgumentError as error:
            message = str(error)
            self._refuse(invocation, "rejected", f"{message[0].upper()}{message[1:]}; usage: `{cmd.usage}`", error=message)
        except Exception as error:  # a validator that raised what pydantic does not turn into a message
            error_id = _error_id()
            log.exception("%s could not parse its arguments [error id %s]", cmd.slash, error_id)
            self._refuse(
                invocation, "rejected", f"{cmd.slash} could not read its arguments (error id {error_id}); the details are in the bot's log.",
                error=f"{type(error).__name__}: {error}", error_id=error_id,
            )

    def _check(self, invocation: Invocation, cmd: Command, args: BaseModel) -> None:
        """What can only fail is refused before anyone is asked to approve it: a missing section, then the command's own check."""
        for section in cmd.sections_needed(args):
            missing = missing_section(self._runtime.stack.config, section, self._runtime.settings.stack_file)
            if missing is not None:
                self._refuse(invocation, "rejected", f"{cmd.slash} cannot run: {missing}")
        if cmd.check is None:
            return
        try:
            cmd.check(self._runtime.context(invocation), args)
        except CommandError as error:
            self._refuse(invocation, "rejected", str(error))

    # ---- running -------------------------------------------------------------------------------

    def execute(self, prepared: Prepared, progress: Callable[[str], None] | None = None, job_id: int | None = None) -> Reply:
        """Audit, run the handler, audit its outcome; an unexpected error becomes an error id."""
        runtime, cmd, invocation = self._runtime, prepared.cmd, prepared.invocation
        arguments = prepared.arguments
        started = time.monotonic()
        try:
            self._record(invocation, "allowed", arguments=arguments, job_id=job_id)
        except Refused as refused:
            return refused.reply
        context = runtime.context(invocation, prepared.role, progress, job_id)
        error_text = error_id = None
        try:
            with runtime.store.session.begin() as session:
                context.session = session
                reply = cmd.handler(context, prepared.args)
        except CommandError as error:
            error_text = str(error)
            reply = Reply(error_text)
        except Exception as error:
            error_id = _error_id()
            error_text = f"{type(error).__name__}: {error}"
            log.exception("%s failed [error id %s]", cmd.slash, error_id)
            reply = Reply(f"{cmd.slash} failed unexpectedly (error id {error_id}); the details are in the bot's log.", error_id=error_id)
        duration_ms = round((time.monotonic() - started) * 1000)
        def record() -> None:
            runtime.audit.record(
                invocation,
                "failed" if error_text or reply.failed else "succeeded",
                arguments=arguments,
                duration_ms=duration_ms,
                error=error_text,
                error_id=error_id,
                job_id=job_id,
                details=reply.facts,
            )

        try:  # a change's outcome must be in the audit even after a store blip; a question's answer must not wait
            retried(record, f"the audit of {cmd.slash}") if cmd.changes else record()
        except Exception:
            log.exception("audit write failed after %s", cmd.slash)
        reply.failed = reply.failed or error_text is not None
        return reply

    def _unknown(self, name: str) -> str:
        shown = name[:40] + ("…" if len(name) > 40 else "")
        close = difflib.get_close_matches(name[:64], list(self._runtime.commands), n=1, cutoff=0.6)
        if close:
            return f"There is no /{shown} command; did you mean /{close[0]}?"
        return f"There is no /{shown} command; /help lists what you can run."
