"""The single door: an invocation comes in, a reply goes out; adapters know nothing else."""

from __future__ import annotations

import difflib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Callable

from bot.redact import redact, redact_value
from bot.registry import ArgumentError, CommandError, Context, Invocation, Reply, parse_arguments

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


class Dispatcher:
    def __init__(self, runtime: "Runtime"):
        self._runtime = runtime

    def dispatch(self, invocation: Invocation, progress: Callable[[str], None] | None = None) -> Reply:
        """Every reply and progress line passes the redactor: no handler can echo a token by mistake."""
        say = (lambda text: progress(redact(text))) if progress else None
        reply = self._dispatch(invocation, say)
        return Reply(redact(reply.text), redact_value(reply.blocks), reply.in_channel)

    def _dispatch(self, invocation: Invocation, progress: Callable[[str], None] | None) -> Reply:
        runtime = self._runtime
        audit = runtime.audit
        cmd = runtime.commands.get(invocation.command)
        if cmd is None:
            audit.record(invocation, "rejected", error="unknown command")
            return Reply(self._unknown(invocation.command))

        role = runtime.authz.role_of(invocation.user_id)
        if role is None or role < cmd.role:
            audit.record(invocation, "denied", error=f"needs {cmd.role.name}, has {role.name if role else 'no role'}")
            having = f"you have {role.name}" if role else "you have no role yet; ask an admin for one"
            return Reply(f"{cmd.slash} needs the {cmd.role.name} role and {having}.")

        try:
            args = parse_arguments(cmd, invocation.text)
        except ArgumentError as error:
            audit.record(invocation, "rejected", error=str(error))
            message = str(error)
            return Reply(f"{message[0].upper()}{message[1:]}; usage: `{cmd.usage}`")

        if cmd.approval_needed(args):
            audit.record(invocation, "rejected", error="approvals are not available")
            return Reply(f"{cmd.slash} needs a second person's approval, and this bot has no approval flow yet.")

        arguments = args.model_dump(mode="json")
        started = time.monotonic()
        try:
            audit.record(invocation, "allowed", arguments=arguments)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("audit write failed before %s [error id %s]", cmd.slash, error_id)
            return Reply(f"{cmd.slash} was not run because the audit log cannot be written (error id {error_id}).")

        context = Context(invocation, role, runtime, progress or (lambda _text: None))
        error_text = error_id = None
        try:
            with runtime.store.session.begin() as session:
                context.session = session
                reply = cmd.handler(context, args)
        except CommandError as error:
            error_text = str(error)
            reply = Reply(error_text)
        except Exception as error:
            error_id = secrets.token_hex(4)
            error_text = f"{type(error).__name__}: {error}"
            log.exception("%s failed [error id %s]", cmd.slash, error_id)
            reply = Reply(f"{cmd.slash} failed unexpectedly (error id {error_id}); the details are in the bot's log.")
        duration_ms = round((time.monotonic() - started) * 1000)
        try:
            audit.record(
                invocation,
                "failed" if error_text else "succeeded",
                arguments=arguments,
                duration_ms=duration_ms,
                error=error_text,
                error_id=error_id,
            )
        except Exception:
            log.exception("audit write failed after %s", cmd.slash)
        return reply

    def _unknown(self, name: str) -> str:
        known = list(self._runtime.commands)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        if close:
            return f"There is no /{name} command; did you mean /{close[0]}?"
        return f"There is no /{name} command; /help lists what you can run."
