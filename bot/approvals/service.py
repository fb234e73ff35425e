"""Two-person approval: a request waits as a job; a second person with the approver role lets it run once.

Every decision is one conditional update on the job row (queue.py), so a double click, two approvers
at once, a replayed click or two bot processes give exactly one winner. The request's channel
message is updated in place at every step; every step is an audit row linked to the job.
This desk keeps requests, decisions, expiry and the message; running an approved request is the request
pipeline's (bot/frame/pipeline.py, bot/frame/changes.py), which it never calls: an approval queues the job and rings.
A request keeps the rule it was asked under (bot/approvals/policy.py: a quorum of distinct approvers, a least role,
user groups, a reason); each approval is a vote row (one per person), and the vote that completes the rule makes the
one conditional update pending -> queued. A deny by anyone who may decide wins at once.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bot.approvals.followup import FollowUp
from bot.approvals.model import APPROVE_VOTE, DENY_VOTE, ApprovalVote
from bot.approvals.policy import Rule, Standing, effective_rule, standing
from bot.frame import blocks
from bot.frame.humanize import count
from bot.jobs.model import PENDING, QUEUED, RUNNING, WAITING, Job
from bot.frame.registry import CommandError, Decided, Invocation, Notifier, Reply, command_line
from bot.frame.roles import Role
from bot.frame.faults import reached
from bot.store.engine import retried, utcnow

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bot.frame.audit import AuditLog
    from bot.frame.authz import Authorizer
    from bot.frame.config import Settings
    from bot.frame.registry import Command, Context
    from bot.jobs.queue import ChangeLocks, JobQueue
    from bot.store.engine import Store

log = logging.getLogger(__name__)

APPROVE, DENY, CANCEL = "approval_approve", "approval_deny", "approval_cancel"


class Host(Protocol):
    """What approvals use of the composition root (bot/runtime.py), which a domain may not import."""

    settings: "Settings"
    audit: "AuditLog"
    authz: "Authorizer"
    store: "Store"
    stack: Any  # the operated stack: its config holds the approval policies
    commands: "dict[str, Command]"
    jobs: "JobQueue"
    locks: "ChangeLocks"
    notifier: "Notifier | None"
    holder: str
    wake: Callable[[], None]

    @property
    def stack_name(self) -> str: ...

    @property
    def messages(self) -> "Notifier | None": ...

    def context(self, invocation: Invocation, role: Role | None = None, progress: Callable[[str], None] | None = None,
                job_id: int | None = None) -> "Context": ...

    def at_fault(self, point: str) -> None: ...  # test-only fault injection (bot/frame/faults.py)


class Approvals:
    def __init__(self, runtime: Host):
        self._rt = runtime
        self.followup = FollowUp(runtime, self)  # reminders, escalation, the requester told (followup.py)

    # ---- what the channel sees ------------------------------------------------------------------

    def when(self, moment) -> str:
        return moment.astimezone(self._rt.settings.tz).strftime("%H:%M %Z")

    def render(self, job: Job, status: str, *, detail: list[str] | None = None) -> Reply:
        """The request's one message: what will run, for whom, on what; then where it stands."""
        line = self.command_line(job)
        settings = self._rt.settings
        head = f"*Request #{job.id}*: `{line}`"
        facts = f"Stack: {self._rt.stack_name} · asked by <@{job.requester}> at {self.when(job.created_at)}"
        parts = [blocks.section(head), blocks.context(facts), *blocks.sections([*self._reason(job), *self.details(job)])]
        if job.state == PENDING:
            rule = Rule.of(job.policy)
            who = f"<!subteam^{settings.approver_group}> " if settings.approver_group else f"Someone with the {rule.approver_role.name} role "
            needs = "" if rule.plain else f"{self.standing(job).needs()} "
            parts.append(blocks.context(f"{needs}{who}may approve until {self.when(job.expires_at)}; the requester may cancel."))
            parts.extend(blocks.context(line) for line in self.followup.lines(job))
        parts.append(blocks.section(status))
        if detail:
            parts.extend(blocks.sections(detail))
        if job.state == WAITING:  # approved: only its requester's Cancel is left
            parts.append({
                "type": "actions", "block_id": f"approval:{job.id}",
                "elements": [{"type": "button", "action_id": CANCEL, "text": {"type": "plain_text", "text": "Cancel"}, "value": str(job.id)}],
            })
        if job.state == PENDING:
            value = str(job.id)
            parts.append(
                {
                    "type": "actions",
                    "block_id": f"approval:{job.id}",
                    "elements": [
                        {"type": "button", "action_id": APPROVE, "text": {"type": "plain_text", "text": "Approve"}, "style": "primary", "value": value},
                        {"type": "button", "action_id": DENY, "text": {"type": "plain_text", "text": "Deny"}, "style": "danger", "value": value},
                        {"type": "button", "action_id": CANCEL, "text": {"type": "plain_text", "text": "Cancel"}, "value": value},
                    ],
                }
            )
        return Reply(f"Request #{job.id}: {line}: {status}", parts, in_channel=True)

    @staticmethod
    def waiting_status(job: Job) -> str:
        """The status of a request still waiting for a decision (what it still needs is on the line above it)."""
        return "⏳ Waiting for approval."

    @staticmethod
    def _reason(job: Job) -> list[str]:
        return [f"*Reason:* {blocks.escape(job.reason)}"] if job.reason else []

    def standing(self, job: Job) -> Standing:
        """Who approved the request so far, and what its rule still needs."""
        with self._rt.store.session() as session:
            votes = session.execute(
                select(ApprovalVote.user_id, ApprovalVote.groups)
                .where(ApprovalVote.job_id == job.id, ApprovalVote.vote == APPROVE_VOTE, ApprovalVote.user_id != job.requester)
                .order_by(ApprovalVote.id)
            ).all()
        return standing(Rule.of(job.policy), [(user, list(groups or [])) for user, groups in votes])

    def waiting(self, job: Job) -> list[str]:
        """What /approvals shows under a pending request: its reason, what it still needs, what its command says."""
        rule = Rule.of(job.policy)
        needs = [] if rule.plain else [self.standing(job).needs()]
        return [*self._reason(job), *needs, *self.details(job)]

    def rule(self, cmd: "Command", args: "BaseModel") -> dict | None:
        """The rule a checked request is asked under (a policy of the stack file, else the command's own); None: no approval."""
        return effective_rule(self._rt.stack.config, cmd, args)

    def details(self, job: Job) -> list[str]:
        """What the command itself says an approver should know (a restore: the backup and what it replaces): the one
        source of the request's message in Slack, and of the request as the console and /approvals show it."""
        cmd = self._rt.commands.get(job.command)
        if cmd is None or cmd.describe is None or job.arguments is None:
            return []
        try:
            return cmd.describe(self._rt.context(job.invocation(), job_id=job.id), cmd.args.model_validate(job.arguments))
        except Exception:
            log.exception("could not describe %s", job.label)
            return []

    def command_line(self, job: Job) -> str:
        """The command as it will run: from the checked arguments once there are some, else as typed."""
        cmd = self._rt.commands.get(job.command)
        if job.arguments is None or cmd is None:
            return f"/{job.command} {job.text}".strip()
        return command_line(cmd, cmd.args.model_validate(job.arguments).model_dump(mode="json"))

    def change_banner(self) -> str | None:
        """What /health and /stats open with while a change runs: errors now may be the change, not an outage."""
        held = self._rt.locks.held(self._rt.stack_name)
        if held is None:
            return None
        return (
            f"⏳ Change in progress: `{held.command}` by <@{held.requester}> since {self.when(held.acquired_at)} "
            f"(request #{held.job_id}): errors now may be the change, not an outage."
        )

    def with_change_banner(self, reply: Reply) -> Reply:
        """A report opened with the change in progress, if one runs (what /health and /stats return)."""
        banner = self.change_banner()
        if banner is None:
            return reply
        return dataclasses.replace(reply, text=f"{banner}\n{reply.text}", blocks=[blocks.section(banner), *reply.blocks])

    def show(self, job: Job, status: str, detail: list[str] | None = None) -> None:
        """Update the request's message in place, if it has one; a Slack hiccup never fails the job."""
        messages = self._rt.messages
        if messages is None or not job.message_ts:
            return
        try:
            messages.update(job.message_channel, job.message_ts, self.render(job, status, detail=detail))
        except Exception:
            log.exception("could not update the message of %s", job.label)

    def announce(self, channel: str | None, text: str) -> None:
        if self._rt.messages is None or not channel:
            return
        try:
            self._rt.messages.post(channel, Reply(text, [blocks.section(text)], in_channel=True))
        except Exception:
            log.exception("could not post to %s", channel)

    # ---- asking --------------------------------------------------------------------------------

    def request(self, invocation: Invocation, arguments: dict, line: str, *, job_id: int | None = None, holder: str | None = None,
                rule: dict | None = None, reason: str | None = None) -> Reply:
        """Hold a checked command (`line`, from `arguments`) as a request (a new job, or the runner's job turned pending)
        and post it; it keeps its rule (what the approval-rule step resolved) and its reason."""
        rt = self._rt
        expires = utcnow() + timedelta(minutes=rt.settings.approval_minutes)
        if job_id is None:
            job_id = rt.jobs.submit(invocation, state=PENDING, arguments=arguments, expires_at=expires, policy=rule, reason=reason)
        elif not rt.jobs.to_pending(job_id, holder, arguments, expires, policy=rule, reason=reason):
            raise RuntimeError(f"request #{job_id} was taken from its runner")
        job = rt.jobs.get(job_id)
        ts = None
        if rt.messages is not None and job.channel_id:
            try:
                ts = rt.messages.post(job.channel_id, self.render(job, self.waiting_status(job)))
            except Exception:
                log.exception("could not post %s for approval", job.label)
            if ts:
                # Posted: the request is live and its buttons work. A store blip from here on is waited out, not
                # turned into "failed" for a request an approver can still run, on a card nobody could update.
                reached(rt.at_fault, "request:after_post")
                retried(lambda: rt.jobs.set_message(job_id, job.channel_id, ts), f"where {job.label}'s message is")
                log.info("posted %s for approval in %s (ts %s)", job.label, job.channel_id, ts)
        details = {**({"reason": reason} if reason else {}), **({"message": {"channel": job.channel_id, "ts": ts}} if ts else {})}
        retried(lambda: rt.audit.record(invocation, "requested", arguments=arguments, job_id=job_id, details=details or None),
                f"the audit of {job.label}")
        how = "click Approve on its message, or another approver runs" if rt.notifier else "another approver runs"
        kept = Rule.of(rule)
        needs = "a second person's approval" if kept.plain else f"{count(kept.approvals, 'approval')}{standing(kept, []).from_groups()}"
        said = f"Request #{job_id}: `{line}` needs {needs} (until {self.when(expires)}); {how} /approvals approve {job_id}."
        if ts:
            return Reply(said)  # its message in the channel shows the details
        details = [*self._reason(job), *self.details(job)]
        return Reply("\n".join([said, *details]), [blocks.section(said), *blocks.sections(details)])

    # ---- deciding -------------------------------------------------------------------------------

    def approve(self, job_id: int, invocation: Invocation, role: Role) -> Reply:
        rt = self._rt
        job = self._decidable(job_id, invocation, role, "approve")
        rule = Rule.of(job.policy)
        new = self._vote(job, invocation.user_id, APPROVE_VOTE, self._member_groups(job, rule, invocation))
        now = self.standing(job)
        if not now.met:  # recorded; the request waits for the rest of its rule
            current = rt.jobs.get(job_id)
            if current.state != PENDING:  # denied, cancelled or expired since this click was checked
                return self._not_open(current, invocation, job_id)
            if not new:
                self._record(invocation, "rejected", job_id, "already approved by them")
                return Reply(f"You have already approved {job.label}; it still needs {now.missing()}.")
            self._record(invocation, "approved", job_id, details={"approvals": f"{len(now.approvers)} of {rule.approvals}"})
            self.show(current, "⏳ Waiting for approval.")
            return Reply(f"You approved {job.label}; it still needs {now.missing()}.")
        if not rt.jobs.approve(job_id, invocation.user_id):
            return self._not_open(rt.jobs.get(job_id), invocation, job_id)
        self._record(invocation, "approved", job_id, details=None if rule.plain else {"approvals": f"{len(now.approvers)} of {rule.approvals}"})
        job = rt.jobs.get(job_id)
        approvers = now.approvers or [invocation.user_id]
        self.show(job, f"✅ Approved by {' and '.join(f'<@{user}>' for user in approvers)}; starting…")
        self.followup.approved(job, approvers)
        rt.wake()
        return self._approved(job)

    def _approved(self, job: Job) -> Reply:
        """What the approver reads: it runs now, or (another change holding the stack) when that one has finished;
        its runner decides which, and its message says so."""
        cmd = self._rt.commands.get(job.command)
        held = self._rt.locks.held(self._rt.stack_name) if cmd is not None and cmd.changes else None
        if held is None or held.job_id == job.id:
            return Reply(f"You approved {job.label}; it runs now.")
        where = "its message" if job.message_ts else "/approvals"
        return Reply(
            f"You approved {job.label}; it waits for `{held.command}` (request #{held.job_id}, asked by <@{held.requester}>) "
            f"to finish, then runs; {where} shows where it stands."
        )

    def deny(self, job_id: int, invocation: Invocation, role: Role) -> Reply:
        job = self._decidable(job_id, invocation, role, "deny")
        if not self._rt.jobs.decide(job_id, "denied", invocation.user_id):
            return self._not_open(self._rt.jobs.get(job_id), invocation, job_id)
        self._vote(job, invocation.user_id, DENY_VOTE, [])
        self._record(invocation, "declined", job_id)
        self.show(self._rt.jobs.get(job_id), f"⛔ Denied by <@{invocation.user_id}>; nothing ran.")
        self.followup.denied(job, invocation.user_id)
        return Reply(f"You denied {job.label}; nothing ran.")

    def cancel(self, job_id: int, invocation: Invocation) -> Reply:
        job = self._rt.jobs.get(job_id)
        if job is None:
            raise Decided(self._no_such(invocation, job_id).text)
        if job.requester != invocation.user_id:
            self._record(invocation, "denied", job_id, "only the requester may cancel")
            raise Decided(f"Only <@{job.requester}>, who asked for {job.label}, may cancel it; an approver may deny it.")
        if job.state == WAITING:  # approved, waiting for the stack's lock: its requester may still withdraw it
            if not self._rt.jobs.cancel_waiting(job_id, invocation.user_id):
                raise Decided(self._not_open(self._rt.jobs.get(job_id), invocation, job_id).text)
        elif not self._rt.jobs.decide(job_id, "cancelled", invocation.user_id, only_requester=True):
            raise Decided(self._not_open(self._rt.jobs.get(job_id), invocation, job_id).text)
        self._record(invocation, "cancelled", job_id)
        self.show(self._rt.jobs.get(job_id), f"🚫 Cancelled by <@{invocation.user_id}>; nothing ran.")
        return Reply(f"You cancelled {job.label}; nothing ran.")

    def _vote(self, job: Job, user: str, vote: str, groups: list[str]) -> bool:
        """This person's vote on the request, once (the unique key): False when they had voted already. A deny
        replaces an approval (the deny has won by then)."""
        try:
            with self._rt.store.session.begin() as session:
                session.add(ApprovalVote(job_id=job.id, user_id=user[:64], vote=vote, groups=groups, at=utcnow()))
            return True
        except IntegrityError:
            if vote == DENY_VOTE:
                with self._rt.store.session.begin() as session:
                    session.execute(
                        update(ApprovalVote).where(ApprovalVote.job_id == job.id, ApprovalVote.user_id == user[:64]).values(vote=vote, at=utcnow())
                    )
            return False

    def _member_groups(self, job: Job, rule: Rule, invocation: Invocation) -> list[str]:
        """The rule's user groups the approver is a member of (Slack's answer, cached); a lookup that fails refuses
        the click, nothing recorded."""
        mine = []
        for group in rule.groups:
            members = self._rt.authz.members_of(group)
            if members is None:
                self._record(invocation, "denied", job.id, f"user-group lookup failed for {group}")
                raise CommandError(
                    f"Your approval of {job.label} was not recorded: Slack's member list of <!subteam^{group}> could not be "
                    "read; try again in a minute."
                )
            if invocation.user_id in members:
                mine.append(group)
        return mine

    def _record(self, invocation: Invocation, outcome: str, job_id: int, error: str | None = None, details: dict | None = None) -> None:
        try:
            self._rt.audit.record(invocation, outcome, job_id=job_id, error=error, details=details)
        except Exception:
            log.exception("audit write failed for %s of request #%s", outcome, job_id)

    def _no_such(self, invocation: Invocation, job_id: int) -> Reply:
        self._record(invocation, "rejected", job_id, "no such request")
        return Reply(f"There is no request #{job_id}; /approvals lists the pending ones.")

    def _decidable(self, job_id: int, invocation: Invocation, role: Role, verb: str) -> Job:
        """The job, if this person may decide on it now; else CommandError with why (and an audit row)."""
        job = self._rt.jobs.get(job_id)
        if job is None:
            raise CommandError(self._no_such(invocation, job_id).text)
        if job.state != PENDING:
            raise CommandError(self._not_open(job, invocation, job_id).text)
        if job.requester == invocation.user_id:
            self._record(invocation, "denied", job_id, f"the requester may not {verb} their own request")
            hint = " (use Cancel to withdraw it)" if verb == "deny" else ""
            raise CommandError(f"You asked for {job.label}, so a second person must {verb} it{hint}.")
        needed = Rule.of(job.policy).approver_role
        if role < needed:
            self._record(invocation, "denied", job_id, f"needs {needed.name}, has {role.name}")
            raise CommandError(f"To {verb} {job.label} you need the {needed.name} role and you have {role.name}.")
        cmd = self._rt.commands.get(job.command)
        if verb == "approve" and cmd is not None and cmd.may_approve is not None:
            why = cmd.may_approve(cmd.args.model_validate(job.arguments), invocation.user_id, role)
            if why is not None:
                self._record(invocation, "denied", job_id, why)
                raise CommandError(f"You cannot approve {job.label}: {why}.")
        if job.expires_at <= utcnow():
            self.expire_due()
            raise CommandError(self._not_open(self._rt.jobs.get(job_id), invocation, job_id).text)
        return job

    def _not_open(self, job: Job, invocation: Invocation, job_id: int) -> Reply:
        """Why a decision changed nothing: the request is no longer waiting."""
        if job.state == PENDING:  # it expired this very moment, or the requester clicked
            if job.requester == invocation.user_id:
                return Reply(f"You asked for {job.label}, so a second person must decide on it.")
            self.expire_due()
            job = self._rt.jobs.get(job_id)
        self._record(invocation, "rejected", job_id, f"request is {job.state}")
        who = f" by <@{job.approver}>" if job.approver else ""
        when = f" at {self.when(job.decided_at or job.finished_at or job.created_at)}"
        said = {
            QUEUED: f"was already approved{who}{when}",
            RUNNING: f"was already approved{who}{when} and is running",
            WAITING: f"was already approved{who}{when} and waits for the change before it to finish",
            "succeeded": f"was approved{who} and has run",
            "failed": f"was approved{who} and has run (it failed)",
            "interrupted": "was interrupted while it ran",
            "denied": f"was denied{who}{when}",
            "cancelled": f"was cancelled{when}",
            "expired": f"expired at {self.when(job.expires_at)}",
        }.get(job.state, f"is {job.state}")
        return Reply(f"Request #{job.id} {said}; nothing changed. Ask again if it is still needed.")

    # ---- sweeping and recovering ----------------------------------------------------------------

    def expire_due(self) -> list[Job]:
        """Requests past their time turn to expired, clicked or not; their buttons go."""
        expired = self._rt.jobs.expire_due()
        for job in expired:
            self._record(job.invocation(), "expired", job.id)
            if job.waits_on is not None:
                self.show(job, f"⌛ Expired at {self.when(job.expires_at)}: approved, it waited for the changes before it "
                               "too long and never started; nothing ran, so ask again if it is still needed.")
            else:
                self.show(job, f"⌛ Expired at {self.when(job.expires_at)} without approval; nothing ran.")
            self.followup.expired(job)
        return expired

    def ran(self, job_id: int) -> None:
        """An approved request has ended (the pipeline's finish step): its requester is told how."""
        self.followup.ran(job_id)

    def interrupted(self, jobs: list[Job]) -> None:
        """Jobs whose holder died: never run again; the lock goes, the channel is told."""
        for job in jobs:
            self._record(job.invocation(), "interrupted", job.id)
            cmd = self._rt.commands.get(job.command)
            if cmd is not None and cmd.recover is not None:
                # Its recovery may wait for the stack (a restore still running in its container): not on this thread.
                self.show(job, "⚠️ Interrupted: the bot process running it stopped; checking what it left…")
                threading.Thread(target=self._recover, args=(job, cmd.recover), name=f"recover-{job.id}").start()
            else:
                self._rt.locks.release(job.id)
                self._tell_interrupted(job, None)

    def _recover(self, job: Job, recover: Callable) -> None:
        try:
            state = recover(self._rt.context(job.invocation(), job_id=job.id), job)
        except Exception:
            log.exception("recovering after %s failed", job.label)
            state = "The bot could not check what it left behind (the details are in its log); check /health now."
        finally:
            self._rt.locks.release(job.id)
        self._tell_interrupted(job, state)

    def _tell_interrupted(self, job: Job, state: str | None) -> None:
        after = state or "Check /health and ask again if it is still needed."
        text = (
            f"⚠️ {job.label} `{self.command_line(job)}` (asked by <@{job.requester}>) was interrupted: the bot process "
            f"running it stopped. It was not run again. {after}"
        )
        self.show(job, "⚠️ Interrupted: the bot process running it stopped; it was not run again.", [state] if state else None)
        if job.source == "slack":
            self.announce(job.channel_id, text)

    def dropped(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._record(job.invocation(), "dropped", job.id)
            if job.source == "slack":
                self.announce(
                    job.channel_id,
                    f"/{job.command} asked by <@{job.requester}> at {self.when(job.created_at)} was not run: the bot was "
                    "down then, and a late answer would mislead. Ask again.",
                )

    def post_status(self, job: Job, status: str) -> Job:
        """A change that had no request message (break-glass, or no approval needed) gets one for its progress."""
        try:
            ts = self._rt.messages.post(job.channel_id, self.render(job, status))
        except Exception:
            log.exception("could not post the progress message of %s", job.label)
            return job
        if ts:
            self._rt.jobs.set_message(job.id, job.channel_id, ts)
        return self._rt.jobs.get(job.id)
