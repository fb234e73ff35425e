"""The follow-up of a request: its approvers reminded, then the next group asked, and its requester told how it ended.

A request is posted to the channel first (service.py). If nobody decides within `remind_after`, the approvers (the
members of the policy's groups, else of FLOWSTATE_APPROVER_GROUP; never the requester) get a direct message; with no
group to ask, a reply in the request's thread says approvers are needed. After `escalate_after` the members of
`escalate_to` get one, and the request's message says it was escalated. Each happens at most once per request, across
replicas: one conditional UPDATE (`… WHERE reminded_at IS NULL`) decides who sends. The times are the policy's, else
the stack file's [approvals] section's; "now" is the scheduler's clock, passed in by the runners' sweep.

A Slack requester is told by direct message when their request is approved (and by whom), denied or expired, and
how the run ended. A failed direct message is logged and never fails a decision or a job. Without Slack (the
console) nothing is sent.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import or_, select, update

from bot.approvals.model import ApprovalVote
from bot.approvals.policy import policy_for
from bot.frame import blocks
from bot.frame.humanize import duration
from bot.frame.publish import direct_message, redacted
from bot.frame.registry import Reply
from bot.jobs.model import PENDING, Job

if TYPE_CHECKING:
    from bot.frame.config import Settings, StackConfig
    from bot.frame.publish import Notifier
    from bot.jobs.queue import JobQueue
    from bot.store.engine import Store

log = logging.getLogger(__name__)


def _never_raises(tell):
    """Telling someone is never a reason for a decision or a job to fail: whatever goes wrong is logged."""

    @functools.wraps(tell)
    def safely(self, *args) -> None:
        try:
            tell(self, *args)
        except Exception:
            log.exception("the follow-up step %s failed", tell.__name__)

    return safely


@dataclass(frozen=True)
class Timetable:
    """When a request's approvers are reminded and who is asked next; None: never."""

    remind_after: timedelta | None
    escalate_after: timedelta | None
    escalate_to: str | None
    groups: tuple[str, ...]  # the approvers' Slack user groups (empty: FLOWSTATE_APPROVER_GROUP's members)


def _seconds(value) -> timedelta | None:
    return timedelta(seconds=value) if value else None


def timetable(job: Job, stack: "StackConfig") -> Timetable:
    """The follow-up of one request: from the policy stored on its job row when there is one (the policies part's
    `policy` column), else from the stack file's policy for its command and arguments, then its [approvals] section."""
    stored = job.policy
    if stored is not None:
        return Timetable(
            _seconds(stored.get("remind_after")), _seconds(stored.get("escalate_after")), stored.get("escalate_to"),
            tuple(stored.get("groups") or ()),
        )
    section = stack.approvals
    policy = policy_for(stack, job.command, job.arguments or {})

    def pick(name: str):
        value = getattr(policy, name) if policy is not None else None
        return value if value is not None else getattr(section, name)

    remind, escalate = pick("remind_after"), pick("escalate_after")
    return Timetable(
        remind.delta if remind else None, escalate.delta if escalate else None, pick("escalate_to"),
        tuple(policy.groups) if policy is not None else (),
    )


class Host(Protocol):
    """What the follow-up uses of the composition root (bot/runtime.py)."""

    settings: "Settings"
    store: "Store"
    stack: Any  # the operated stack: its config has the [approvals] section
    jobs: "JobQueue"
    slack: Any  # the Web API client (slack_sdk's WebClient); None without Slack

    @property
    def messages(self) -> "Notifier | None": ...


class Desk(Protocol):
    """What the follow-up uses of the approvals desk (service.py): its words for a request and its message."""

    def when(self, moment: datetime) -> str: ...

    def command_line(self, job: Job) -> str: ...

    def show(self, job: Job, status: str, detail: list[str] | None = None) -> None: ...

    def waiting(self, job: Job) -> str: ...


class FollowUp:
    def __init__(self, runtime: Host, desk: Desk):
        self._rt, self._desk = runtime, desk
        window = timedelta(minutes=runtime.settings.approval_minutes)
        section = runtime.stack.config.approvals
        for rule in [section, *section.policy]:
            late = [f"{name} = {value}" for name in ("remind_after", "escalate_after")
                    if (value := getattr(rule, name)) is not None and value.delta >= window]
            if late:
                where = f"the policy of /{rule.command}" if hasattr(rule, "command") else "[approvals]"
                log.warning("%s: %s comes after a request expires (FLOWSTATE_APPROVAL_MINUTES=%g), so it never happens",
                            where, ", ".join(late), runtime.settings.approval_minutes)

    # ---- reminding and escalating (the runners' sweep) ---------------------------------------------------

    def sweep(self, now: datetime) -> None:
        """Remind and escalate what is due at `now` (the scheduler's clock). Nothing without Slack to send it with."""
        if self._rt.slack is None or not self._any_times():
            return
        with self._rt.store.session() as session:
            waiting = session.scalars(
                select(Job).where(Job.state == PENDING, or_(Job.reminded_at.is_(None), Job.escalated_at.is_(None))).order_by(Job.id)
            ).all()
        for job in waiting:
            try:
                self._follow(job, now)
            except Exception:
                log.exception("the follow-up of %s failed", job.label)

    def _any_times(self) -> bool:
        """Whether the stack file sets a follow-up time anywhere: without one, the sweep does not even look."""
        section = self._rt.stack.config.approvals
        rules = [section, *section.policy]
        return any(rule.remind_after is not None or rule.escalate_after is not None for rule in rules)

    def _follow(self, job: Job, now: datetime) -> None:
        rule = timetable(job, self._rt.stack.config)
        if job.reminded_at is None and rule.remind_after is not None and now >= job.created_at + rule.remind_after:
            if self._mark(job.id, Job.reminded_at, now):
                self._remind(job, rule)
        due = rule.escalate_after is not None and now >= job.created_at + rule.escalate_after
        if job.escalated_at is None and rule.escalate_to and due:
            if self._mark(job.id, Job.escalated_at, now):
                self._escalate(job, rule)

    def _mark(self, job_id: int, column, now: datetime) -> bool:
        """The one conditional UPDATE that makes this process the one that sends. It is written before anything is
        sent: a crash between the two loses that reminder, and never sends it twice."""
        with self._rt.store.session.begin() as session:
            result = session.execute(
                update(Job).where(Job.id == job_id, Job.state == PENDING, column.is_(None)).values({column.key: now})
            )
            return result.rowcount == 1

    def _remind(self, job: Job, rule: Timetable) -> None:
        groups = rule.groups or ((self._rt.settings.approver_group,) if self._rt.settings.approver_group else ())
        people = self._members(groups) - {job.requester} - self._voted(job)  # who already approved is not asked again
        waited = duration(rule.remind_after.total_seconds())
        log.info("reminding %s approvers of %s (waiting %s)", len(people), job.label, waited)
        self._desk.show(self._rt.jobs.get(job.id), self._desk.waiting_status(job))  # its message says they were reminded
        if not people:  # no group to ask, or nobody in it: the channel is told, in the request's thread
            self._in_thread(
                job,
                f"⏰ {job.label.capitalize()} has waited {waited} without a decision: someone with the approver role is "
                f"needed to approve or deny it before {self._desk.when(job.expires_at)}.",
            )
            return
        for person in sorted(people):
            self.direct(
                person,
                f"⏰ {self._about(job)} has waited {waited} for your approval; approve or deny it on its message"
                f"{self._where(job)}, or run /approvals approve {job.id} before {self._desk.when(job.expires_at)}.",
            )

    def _voted(self, job: Job) -> set[str]:
        with self._rt.store.session() as session:
            return set(session.scalars(select(ApprovalVote.user_id).where(ApprovalVote.job_id == job.id)))

    def _escalate(self, job: Job, rule: Timetable) -> None:
        people = self._members((rule.escalate_to,)) - {job.requester}
        waited = duration(rule.escalate_after.total_seconds())
        log.info("escalating %s to %s (%s people; waiting %s)", job.label, rule.escalate_to, len(people), waited)
        self._desk.show(self._rt.jobs.get(job.id), self._desk.waiting_status(job))  # its message now says it was escalated
        for person in sorted(people):
            self.direct(
                person,
                f"📣 {self._about(job)} has had no decision for {waited}, so it is escalated to you "
                f"(<!subteam^{rule.escalate_to}>); approve or deny it on its message{self._where(job)}, "
                f"or run /approvals approve {job.id} before {self._desk.when(job.expires_at)}.",
            )

    def lines(self, job: Job) -> list[str]:
        """What a waiting request's message says of its follow-up (service.py's render)."""
        said = []
        if job.reminded_at is not None:
            said.append(f"⏰ Approvers reminded at {self._desk.when(job.reminded_at)}.")
        if job.escalated_at is not None:
            rule = timetable(job, self._rt.stack.config)
            to = f"<!subteam^{rule.escalate_to}>" if rule.escalate_to else "the next group"
            said.append(f"📣 Escalated to {to} at {self._desk.when(job.escalated_at)}: nobody had decided in time.")
        return said

    # ---- telling the requester -------------------------------------------------------------------------------

    @_never_raises
    def approved(self, job: Job, approvers: list[str]) -> None:
        by = " and ".join(f"<@{user}>" for user in approvers)
        self._tell(job, f"✅ {self._yours(job)} was approved by {by}; it runs now, and you will get its result here.")

    @_never_raises
    def denied(self, job: Job, by: str) -> None:
        self._tell(job, f"⛔ {self._yours(job)} was denied by <@{by}>, so nothing ran; ask again if it is still needed.")

    @_never_raises
    def expired(self, job: Job) -> None:
        self._tell(
            job,
            f"⌛ {self._yours(job)} expired at {self._desk.when(job.expires_at)} "
            f"{'before it could start: approved, it waited too long for the changes before it' if job.waits_on else 'without a decision'}"
            ", so nothing ran; "
            "ask again if it is still needed.",
        )

    @_never_raises
    def ran(self, job_id: int) -> None:
        """An approved request has ended: its requester is told how (the pipeline's finish step, once per job)."""
        job = self._rt.jobs.get(job_id)
        if job is None or job.approver is None or job.source != "slack":
            return
        where = f"; its message{self._where(job)} has the details" if job.message_ts else ""
        by = f" (approved by <@{job.approver}>)"
        if job.state == "succeeded":
            said = f"🟢 {self._yours(job)}{by} has run and succeeded{where}."
        elif job.state == "failed":
            said = f"🔴 {self._yours(job)}{by} has run and failed{where}."
        elif job.state == "refused":
            said = f"⛔ {self._yours(job)}{by} was not run: {(job.result or 'it was refused').splitlines()[0]}"
        else:
            return
        self._tell(job, said)

    # ---- Slack -----------------------------------------------------------------------------------------------

    def _tell(self, job: Job, text: str) -> None:
        if job.source == "slack":  # a console request has no one to message
            self.direct(job.requester, text)

    def direct(self, user: str, text: str) -> bool:
        """A direct message, redacted; False when it could not be sent, which is logged and changes nothing else."""
        return direct_message(self._rt.slack, self._rt.messages, user, text)

    def _in_thread(self, job: Job, text: str) -> None:
        slack = self._rt.slack
        if slack is None or not job.message_ts:
            log.warning("%s: nobody to remind and no message to remind in", job.label)
            return
        reply = redacted(Reply(text))
        try:
            slack.chat_postMessage(channel=job.message_channel, thread_ts=job.message_ts, text=reply.text)
        except Exception as error:
            log.warning("could not remind in the thread of %s: %s", job.label, _why(error))

    def _members(self, groups) -> set[str]:
        """The members of these Slack user groups; a group Slack cannot list is logged and left out."""
        people: set[str] = set()
        for group in groups:
            try:
                people |= set(self._rt.slack.usergroups_users_list(usergroup=group)["users"])
            except Exception as error:
                log.warning("cannot read the members of user group %s: %s", group, _why(error))
        return people

    # ---- words -----------------------------------------------------------------------------------------------

    def _about(self, job: Job) -> str:
        return f"Request #{job.id} `{self._desk.command_line(job)}` (asked by <@{job.requester}>)"

    def _yours(self, job: Job) -> str:
        return f"Your request #{job.id} `{self._desk.command_line(job)}`"

    @staticmethod
    def _where(job: Job) -> str:
        channel = job.message_channel or job.channel_id
        return f" in <#{channel}>" if channel else ""


def _why(error: Exception) -> str:
    response = getattr(error, "response", None)
    code = response.get("error") if response is not None and hasattr(response, "get") else None
    return str(code or type(error).__name__)[:64]
