"""The one request pipeline: a command from Slack, the console or a duty walks the same ordered steps.

The steps are built once (`Pipeline.steps`): publish, finish, resolve, authorize, break-glass, reason, parse,
approval rule, authorize the use, check, freeze, gate, execute. Each is `step(request, next) -> Reply` (bolt's middleware shape):
it goes on by returning `next(request)`, or refuses by raising `Refused` with the user's one sentence (its
audit row written). An exception in a step is a refusal with an error id, never a pass: the walker catches
it at that step. The gate parks a request for approval, or runs a change as a held job under the stack's
one-change lock (bot/frame/changes.py); a request stored at approval time enters the same steps, its
arguments taken as checked and its caller authorized again. Publish redacts the reply once and hands it
to the caller's Publisher. /help and /whoami walk the same steps as a dry run (errbot's `dry_run`): no audit
row, nothing parsed or run, only whether the caller may.
"""

from __future__ import annotations

import difflib
import logging
import secrets
import shlex
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Protocol

from pydantic import BaseModel

from bot.frame.authz import SYSTEM_USERS
from bot.frame.config import missing_section
from bot.frame.faults import reached
from bot.frame.publish import Publisher, Returned, redacted
from bot.frame.redact import redact
from bot.frame.registry import ArgumentError, Command, CommandError, Context, Decided, Invocation, Reply, command_line, parse_arguments
from bot.frame.roles import Role
from bot.jobs.model import Job
from bot.store.engine import retried, utcnow

if TYPE_CHECKING:
    from bot.frame.audit import AuditLog
    from bot.frame.authz import Authorizer
    from bot.frame.config import Settings
    from bot.frame.publish import Notifier

log = logging.getLogger(__name__)

BREAK_GLASS = "--break-glass"
DRY_ANSWERS_KEPT = 1000  # may_run's answers kept (commands x roles; a typo'd name asked of it is one more each)
REASON = "--reason"

Step = Callable[["Request", Callable[["Request"], Reply]], Reply]


class Refused(Exception):
    """A step said no; the reply says why in one sentence (the audit row is already written). `status` is what
    the request's message says, when it has one."""

    def __init__(self, reply: Reply, status: str | None = None):
        super().__init__(reply.text)
        self.reply = reply
        self.status = status


@dataclass
class Request:
    """One walk of the pipeline: what came in, and what the steps found out about it."""

    invocation: Invocation
    publisher: Publisher
    job: Job | None = None  # the job row it runs as, held by `holder` (a runner's, a duty's, an approved request's)
    holder: str | None = None
    stored: bool = False  # an approved (or taken over) request: its arguments were checked when it was asked
    dry_run: bool = False  # only whether the caller may: no audit row, nothing run
    text: str = ""
    cmd: Command | None = None
    role: Role | None = None
    args: BaseModel | None = None
    break_glass: str | None = None
    broken_freeze: str | None = None  # the change freeze a break-glass broke ("frozen until … by …: reason")
    reason: str | None = None  # --reason "TEXT": why it is asked (redacted), kept on its job, shown to its approvers
    # The approval rule it is asked under (bot/approvals/policy.py, stored on its job), None when it needs none;
    # resolved by the approval-rule step once the arguments are known.
    rule: dict | None = None
    ruled: bool = False
    parked: bool = False  # the gate turned it into a request waiting for approval, or for the stack's lock
    refused: Refused | None = None
    outcome: dict | None = None  # a question's outcome audit row, written after its reply (finish)
    afterwards: Callable[[], None] | None = None  # that bookkeeping, run once the reply is published

    @property
    def changes(self) -> bool:
        """It changes something (or runs as an approved request): its outcome is written before its reply."""
        return self.stored or (self.cmd is not None and self.cmd.changes)

    @property
    def arguments(self) -> dict:
        return self.args.model_dump(mode="json")

    @property
    def needs_approval(self) -> bool:
        if self.ruled:
            return self.rule is not None and self.rule["approvals"] >= 1
        return self.cmd.approval_needed(self.args)

    def command_line(self) -> str:
        """The command as it will run, from the validated arguments (what an approver approves)."""
        return command_line(self.cmd, self.arguments)

    def say(self, text: str) -> None:
        """A progress line, redacted on its way to whatever publishes it (read at call time: the gate may swap it)."""
        self.publisher.progress(redact(text))


def _error_id() -> str:
    return secrets.token_hex(4)


def _option(text: str, flag: str) -> tuple[str, str] | None:
    """(its value, the text without the two) when `flag` is one of the typed words; None when it is not (or a
    quote is open: the parser reports that)."""
    if flag not in text:
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if flag not in words:
        return None
    at = words.index(flag)
    value = words[at + 1].strip() if at + 1 < len(words) else ""
    return value, " ".join(shlex.quote(word) for word in words[:at] + words[at + 2 :])



class Host(Protocol):
    """What the pipeline uses of the composition root (bot/runtime.py), which the frame may not import."""

    settings: "Settings"
    audit: "AuditLog"
    authz: "Authorizer"
    commands: "dict[str, Command]"
    holder: str
    stack: Any  # the operated stack (bot/stack/stack.py): its config says which sections there are
    jobs: Any  # the job queue (bot/jobs/queue.py)
    locks: Any  # the stack's one-change lock (bot/jobs/queue.py)
    approvals: Any  # the approvals desk (bot/approvals/service.py), behind RequestDesk
    duties: Any  # the scheduler (bot/duties/service.py): its `freezes` say whether changes are frozen
    fault: Callable[[str], None]  # the test-only fault hook (bot/frame/faults.py)

    @property
    def messages(self) -> "Notifier | None": ...

    @property
    def stack_name(self) -> str: ...

    def context(self, invocation: Invocation, role: Role | None = None, progress: Callable[[str], None] | None = None,
                job_id: int | None = None) -> Context: ...

class RequestDesk(Protocol):
    """What the pipeline asks of the approvals desk (bot/approvals): to hold a request, and to keep its message."""

    def request(self, invocation: Invocation, arguments: dict, line: str, *, job_id: int | None = None, holder: str | None = None,
                rule: dict | None = None, reason: str | None = None) -> Reply: ...

    def rule(self, cmd: Command, args: BaseModel) -> dict | None: ...

    def show(self, job: Job, status: str, detail: list[str] | None = None) -> None: ...

    def post_status(self, job: Job, status: str) -> Job: ...

    def announce(self, channel: str | None, text: str) -> None: ...

    def command_line(self, job: Job) -> str: ...

    def when(self, moment: datetime) -> str: ...

    def ran(self, job_id: int) -> None: ...


class ChangeStep(Protocol):
    """The gate's run of a change (bot/frame/changes.py `Changes`), which the composition root builds and hands in:
    the pipeline does not import it, so the two are no circle."""

    @property
    def desk(self) -> RequestDesk: ...

    def on_message(self, request: Request) -> Publisher: ...

    def run(self, request: Request, next: Callable[[Request], Reply]) -> Reply: ...


class Pipeline:
    def __init__(self, runtime: "Host", changes: ChangeStep):
        self._runtime = runtime
        self.changes = changes
        # The one place the order is decided.
        self.steps: list[Step] = [
            self.publish, self.finish, self.resolve, self.authorize, self.break_glass, self.reason, self.parse,
            self.approval_rule, self.authorize_use, self.check, self.freeze, self.gate, self.execute,
        ]
        self._sources: dict[str, Callable[[Job, str], Reply]] = {}
        self._dry_answers: dict[tuple[str, Role | None], str | None] = {}  # may_run's, for a command asked bare

    def run_source(self, source: str, run: Callable[[Job, str], Reply]) -> None:
        """Jobs of this source are not a typed command (a scheduled duty): resolve hands them to `run`."""
        self._sources[source] = run

    # ---- the doors -------------------------------------------------------------------------------------

    def run(self, work: Invocation | Job, publisher: Publisher | None = None, *, holder: str | None = None) -> Reply:
        """Walk the steps for a typed command (an Invocation) or a held job (a runner's claim); the published reply."""
        publisher = publisher or Returned()
        if isinstance(work, Job):
            request = Request(work.invocation(), publisher, job=work, holder=holder, stored=work.arguments is not None)
        else:
            request = Request(work, publisher)
        request.text = request.invocation.text
        return self._walk(request, 0)

    def dispatch(self, invocation: Invocation, progress: Callable[[str], None] | None = None) -> Reply:
        """run() for a caller that takes the reply itself (tests, benches, a duty's /health)."""
        return self.run(invocation, Returned(progress))

    def may_run(self, invocation: Invocation, role: Role | None) -> str | None:
        """A dry run for /help and /whoami: None when this caller (of this role) may run the command, else why not.

        In a dry run the steps answer from the command, the typed text and the role alone (no audit, no store, no
        clock: the freeze and everything after the parse step stand aside), so the answer for a command asked bare
        is kept per role: /whoami asks it of every command (27 walks: 150 us of CPU per /whoami otherwise, 41 us kept)."""
        key = (invocation.command, role) if not invocation.text else None
        if key is not None and key in self._dry_answers:
            return self._dry_answers[key]
        request = Request(invocation, Returned(), dry_run=True, role=role)
        request.text = invocation.text
        reply = self._walk(request, 0)
        answer = reply.text if request.refused else None
        if key is not None and not reply.failed and len(self._dry_answers) < DRY_ANSWERS_KEPT:  # a step that broke: asked again
            self._dry_answers[key] = answer
        return answer

    def _walk(self, request: Request, at: int) -> Reply:
        step = self.steps[at]
        try:
            return step(request, lambda following: self._walk(following, at + 1))
        except Refused as refused:
            request.refused = refused
            return refused.reply
        except Exception:  # fail closed: a step that breaks refuses, with an id for the log
            error_id = _error_id()
            name = request.invocation.command[:64]
            log.exception("/%s failed in the bot's %s step [error id %s]", name, getattr(step, "__name__", step), error_id)
            request.refused = Refused(Reply(""))
            return Reply(
                f"/{name} failed inside the bot (error id {error_id}); the details are in the bot's log.", failed=True, error_id=error_id
            )

    # ---- the steps, in order ---------------------------------------------------------------------------

    def publish(self, request: Request, next) -> Reply:
        """Redact once, hand the reply to its publisher; then the bookkeeping a question's answer does not wait for."""
        reply = next(request)
        if request.dry_run:  # nobody reads it but the command asking (/help, /whoami): nothing to redact
            return reply
        reply = redacted(reply)
        try:
            request.publisher.publish(reply)
        finally:
            if request.afterwards is not None:
                reached(self._runtime.fault, "reply:after_delivery")
                request.afterwards()
        return reply

    def finish(self, request: Request, next) -> Reply:
        """The job row it ran as gets its outcome (a parked request stays pending); a refused change lets its lock go.

        A change's outcome is written before its reply goes out. What changed nothing is answered first: its outcome
        row and its job's end are written after the reply is published, in one transaction (`afterwards`). Should the
        process die in between, the sweep finds the job running under a dead runner and interrupts it: never run
        again, its reply never sent twice."""
        reply = next(request)
        job, rt = request.job, self._runtime
        outcome = request.outcome  # a question's outcome row, not yet written (execute)
        if job is None or request.parked or request.dry_run:
            if outcome is not None:
                request.afterwards = lambda: self._record_outcome(request, outcome)
            return reply
        state = "failed" if reply.failed else "refused" if request.refused is not None else "succeeded"
        if not request.changes:
            ended = rt.jobs.finish_step(job.id, request.holder, state, reply.text, reply.error_id)
            request.afterwards = lambda: self._record_outcome(request, outcome, ended)
            return reply
        if request.refused is not None:  # the lock an approval took (a busy stack's is not ours: no-op)
            retried(lambda: rt.locks.release(job.id), f"the release of {job.label}'s lock")
        finished = retried(lambda: rt.jobs.finish(job.id, request.holder, state, reply.text, reply.error_id), f"the outcome of {job.label}")
        if finished and request.stored:  # an approved request: its requester is told how it ended (never raises)
            self.changes.desk.ran(job.id)
        return reply

    def _record_outcome(self, request: Request, outcome: dict | None, ended: tuple | None = None) -> None:
        """After a question's reply: its outcome audit row and its job's end (`ended`, a step of the store's writer),
        in one transaction; the job's end alone when there is no row to write (a refusal's was written) or it failed."""
        rt, name = self._runtime, request.invocation.command[:64]
        try:
            if outcome is not None:
                rt.audit.record(request.invocation, also=(ended,) if ended else (), **outcome)
                return
        except Exception:
            log.exception("audit write failed after /%s", name)
        try:
            if ended is not None:
                rt.jobs.finish_written(ended)
        except Exception:
            log.exception("the end of /%s's job could not be written; the sweep interrupts it", name)

    def resolve(self, request: Request, next) -> Reply:
        job = request.job
        if job is not None and job.source in self._sources:  # a duty: the scheduler's own work, audited there
            return self._sources[job.source](job, request.holder)
        if request.stored:  # an approved request's outcome, a refusal included, lands on its message
            request.publisher = self.changes.on_message(request)
        request.cmd = self._runtime.commands.get(request.invocation.command)
        if request.cmd is None:
            self._refuse(request, "rejected", self._unknown(request.invocation.command), error="unknown command")
        return next(request)

    def authorize(self, request: Request, next) -> Reply:
        cmd, invocation = request.cmd, request.invocation
        if request.dry_run:  # the caller's role is known (the one /help runs with)
            if request.role is None or request.role < cmd.role:
                raise Refused(Reply(self._role_sentence(cmd, request.role)))
            return next(request)
        try:
            explained = self._runtime.authz.explain(invocation.user_id)
            role = explained.role
        except Exception:
            error_id = _error_id()
            log.exception("cannot look up the role of %s [error id %s]", invocation.user_id[:64], error_id)
            raise Refused(Reply(f"{cmd.slash} was not run because your role could not be checked (error id {error_id}).")) from None
        if (role is None or role < cmd.role) and explained.lookup_failed:
            self._refuse(
                request, "denied",
                f"{cmd.slash} was not run: your role could not be checked because Slack's user-group lookup failed; try again in a minute.",
                error="user-group lookup failed",
            )
        if role is None or role < cmd.role:
            self._refuse(
                request, "denied", self._role_sentence(cmd, role), error=f"needs {cmd.role.name}, has {role.name if role else 'no role'}"
            )
        request.role = role
        return next(request)

    @staticmethod
    def _role_sentence(cmd: Command, role: Role | None) -> str:
        having = f"you have {role.name}" if role else "you have no role yet; ask an admin for one"
        return f"{cmd.slash} needs the {cmd.role.name} role and {having}."

    def break_glass(self, request: Request, next) -> Reply:
        """`--break-glass "REASON"` lets an admin run an approval command at once, loudly."""
        if request.stored:
            request.break_glass = request.job.break_glass
            return next(request)
        found = _option(request.text, BREAK_GLASS)
        if found is None:
            return next(request)
        reason, rest = found
        if not self._runtime.settings.break_glass:
            self._refuse(request, "rejected", "Break-glass is turned off on this bot (FLOWSTATE_BREAK_GLASS); ask an approver.")
        if request.role < Role.admin:
            self._refuse(request, "denied", f"Only an admin may use {BREAK_GLASS}; ask an approver instead.")
        if not reason or reason.startswith("--"):
            self._refuse(request, "rejected", f'{BREAK_GLASS} needs a reason in quotes, such as {BREAK_GLASS} "approvers asleep, site down".')
        request.text, request.break_glass = rest, reason[:500]
        return next(request)

    def reason(self, request: Request, next) -> Reply:
        """`--reason "TEXT"`: why it is asked (a ticket), kept with the request, shown to its approvers and audited."""
        if request.stored:
            request.reason = request.job.reason
            return next(request)
        found = _option(request.text, REASON)
        if found is None:
            return next(request)
        reason, rest = found
        if not reason or reason.startswith("--"):
            self._refuse(request, "rejected", f'{REASON} needs the reason in quotes, such as {REASON} "INC-42: disk full on db-1".')
        request.text, request.reason = rest, redact(" ".join(reason.split()))[:500]
        return next(request)

    def parse(self, request: Request, next) -> Reply:
        cmd = request.cmd
        if request.dry_run:
            return Reply("")  # a dry run asks who may, not what was typed
        if request.stored:
            request.args = cmd.args.model_validate(request.job.arguments)
            return next(request)
        try:
            request.args = parse_arguments(cmd, request.text)
        except ArgumentError as error:
            message = str(error)
            self._refuse(request, "rejected", f"{message[0].upper()}{message[1:]}; usage: `{cmd.usage}`", error=message)
        except Exception as error:  # a validator that raised what pydantic does not turn into a message
            error_id = _error_id()
            log.exception("%s could not parse its arguments [error id %s]", cmd.slash, error_id)
            self._refuse(
                request, "rejected", f"{cmd.slash} could not read its arguments (error id {error_id}); the details are in the bot's log.",
                error=f"{type(error).__name__}: {error}", error_id=error_id,
            )
        return next(request)

    def approval_rule(self, request: Request, next) -> Reply:
        """Which approval rule this use is asked under: the first matching policy of the stack file, else the
        command's own (the approvals desk resolves it; the request keeps it). A rule may ask for a reason."""
        cmd = request.cmd
        if request.stored:
            request.rule = request.job.policy
            return next(request)
        request.rule, request.ruled = self.changes.desk.rule(cmd, request.args), True
        # During a change freeze even a change that needs no approval may be forced through, loudly.
        if request.break_glass is not None and not request.needs_approval and not (cmd.freezes and self._frozen() is not None):
            self._refuse(request, "rejected", f"{cmd.slash} with these arguments needs no approval; run it without {BREAK_GLASS}.")
        if request.break_glass is not None and cmd.may_approve is not None:
            self._refuse(request, "rejected", f"`{request.command_line()}` cannot be run with {BREAK_GLASS}; ask for its approval.")
        if request.rule is not None and request.rule.get("reason") and not request.reason and request.break_glass is None:
            self._refuse(
                request, "rejected",
                f'`{request.command_line()}` needs a reason: add {REASON} "TEXT" (why, or a ticket) and ask again; /policy {cmd.name} shows its rule.',
            )
        return next(request)

    def authorize_use(self, request: Request, next) -> Reply:
        """Some uses of a command need more than the command itself (starting an incident vs adding a note)."""
        needed = request.cmd.role_needed(request.args)
        if request.role < needed:
            self._refuse(
                request, "denied", f"This use of {request.cmd.slash} needs the {needed.name} role and you have {request.role.name}.",
                error=f"needs {needed.name}, has {request.role.name}",
            )
        return next(request)

    def check(self, request: Request, next) -> Reply:
        """What can only fail is refused before anyone is asked to approve it: a missing section, then the command's own check.
        A stored request was checked when it was asked; one that waited for the stack's lock is checked again, since
        the stack may have changed while it waited."""
        if request.stored and request.job.waits_on is None:
            return next(request)
        cmd, args = request.cmd, request.args
        linked = {"job_id": request.job.id} if request.stored else {}  # a request's refusal is one of its steps
        for section in cmd.sections_needed(args):
            missing = missing_section(self._runtime.stack.config, section, self._runtime.settings.stack_file)
            if missing is not None:
                self._refuse(request, "rejected", f"{cmd.slash} cannot run: {missing}", **linked)
        if cmd.check is not None:
            try:
                # The request's job: a check may prepare what the request shows under its number (/restore --to's recovery).
                job_id = request.job.id if request.job is not None else None
                cmd.check(self._runtime.context(request.invocation, request.role, job_id=job_id), args)
            except CommandError as error:
                self._refuse(request, "rejected", str(error), **linked)
        return next(request)

    def freeze(self, request: Request, next) -> Reply:
        """During a change freeze a change is refused, typed or approved, naming who froze it, why and until when;
        an admin's --break-glass breaks it (loudly, bot/frame/changes.py). The scheduler's own work (its backups) runs."""
        if request.dry_run or not request.cmd.freezes or request.invocation.user_id in SYSTEM_USERS:
            return next(request)
        frozen = self._frozen()
        if frozen is None:
            return next(request)
        if request.break_glass and not request.stored:
            request.broken_freeze = frozen
            return next(request)
        self._refuse(
            request, "rejected",
            f"{request.cmd.slash} is refused: changes are {frozen}. An admin may still run it with {BREAK_GLASS} \"REASON\".",
            error=f"change freeze: {frozen}",
        )

    def _frozen(self) -> str | None:
        return self._runtime.duties.freezes.frozen()

    def gate(self, request: Request, next) -> Reply:
        """Ask a second person, or run: a change as a held job under the stack's lock, anything else as it is."""
        if request.needs_approval and not request.break_glass and not request.stored:
            request.parked = True
            job = request.job
            return self.changes.desk.request(
                request.invocation, request.arguments, request.command_line(),
                job_id=job.id if job is not None else None, holder=request.holder, rule=request.rule, reason=request.reason,
            )
        if request.cmd.changes or request.stored:
            return self.changes.run(request, next)
        return next(request)  # a held job is kept alive by its runner's one heartbeat (bot/jobs/heartbeat.py)

    def execute(self, request: Request, next) -> Reply:
        """Audit, run the handler, audit its outcome; an unexpected error becomes an error id."""
        runtime, cmd, invocation = self._runtime, request.cmd, request.invocation
        arguments = request.arguments
        job_id = request.job.id if request.job is not None else None
        started = time.monotonic()
        # The timeline notes a run's start only for an approved or break-glass request (bot/incidents/capture.py): a
        # command run as asked spares the observers' query (one per job, on its outcome row).
        observed = request.stored or request.break_glass is not None
        reason = {"reason": request.reason} if request.reason else None
        self._record(request, "allowed", arguments=arguments, job_id=job_id, details=reason, observed=observed)
        context = self._context(request, job_id)
        error_text = error_id = None
        try:
            with runtime.store.session.begin() as session:
                context.session = session
                reply = cmd.handler(context, request.args)
        except Decided as refusal:  # audited where it was decided
            return Reply(str(refusal), failed=True)
        except CommandError as error:
            error_text = str(error)
            reply = Reply(error_text)
        except Exception as error:
            error_id = _error_id()
            error_text = f"{type(error).__name__}: {error}"
            log.exception("%s failed [error id %s]", cmd.slash, error_id)
            reply = Reply(f"{cmd.slash} failed unexpectedly (error id {error_id}); the details are in the bot's log.", error_id=error_id)
        duration_ms = round((time.monotonic() - started) * 1000)

        outcome = dict(
            outcome="failed" if error_text or reply.failed else "succeeded", arguments=arguments, duration_ms=duration_ms,
            error=error_text, error_id=error_id, job_id=job_id, details=reply.facts, at=utcnow(),  # when it ended, not when written
        )
        reply.failed = reply.failed or error_text is not None
        if not request.changes:  # a question's answer does not wait for its outcome row: written after it (finish)
            request.outcome = outcome
            return reply
        try:  # a change's outcome must be in the audit even after a store blip
            retried(lambda: runtime.audit.record(invocation, **outcome), f"the audit of {cmd.slash}")
        except Exception:
            log.exception("audit write failed after %s", cmd.slash)
        return reply

    def _context(self, request: Request, job_id: int | None) -> Context:
        """What a handler gets (one place, so what it gets can change in one place)."""
        return self._runtime.context(request.invocation, request.role, request.say, job_id)

    # ---- refusing ----------------------------------------------------------------------------------------

    def _refuse(self, request: Request, outcome: str, sentence: str, *, error: str | None = None, **audit) -> None:
        if not request.dry_run:
            self._record(request, outcome, error=error or sentence, **audit)
        raise Refused(Reply(sentence), status=f"⛔ Not run: {sentence}")

    def _record(self, request: Request, outcome: str, **fields) -> None:
        """An audit row; if the database cannot take it, the user gets an error id instead of a false answer."""
        invocation = request.invocation
        try:
            self._runtime.audit.record(invocation, outcome, **fields)
        except Exception:
            error_id = _error_id()
            log.exception("audit write failed for /%s (%s) [error id %s]", invocation.command[:64], outcome, error_id)
            raise Refused(
                Reply(f"/{invocation.command[:64]} was not run because the audit log cannot be written (error id {error_id}).")
            ) from None

    def _unknown(self, name: str) -> str:
        shown = name[:40] + ("…" if len(name) > 40 else "")
        close = difflib.get_close_matches(name[:64], list(self._runtime.commands), n=1, cutoff=0.6)
        if close:
            return f"There is no /{shown} command; did you mean /{close[0]}?"
        return f"There is no /{shown} command; /help lists what you can run."
