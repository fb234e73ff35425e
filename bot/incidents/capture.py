"""The timeline captures itself: audit rows in an incident's channel become events, and so do Slack messages.

Commands and approval steps are not instrumented one by one: every one of them already writes an audit
row (with its job), so the audit log's observer is the single place that turns them into timeline events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bot.incidents.model import APPROVAL, COMMAND
from bot.incidents.timeline import OPEN_ID_OF_ROW, Event, Timeline
from bot.incidents.when import from_ts
from bot.frame.registry import FOUND, command_line
from bot.frame.audit import NOT_ASKED, AuditRow

if TYPE_CHECKING:
    from bot.frame.registry import Command
    from bot.jobs.model import Job
    from bot.jobs.queue import JobQueue


class CommandLines(Protocol):
    def command_line(self, job: "Job") -> str: ...


class AuditHost(Protocol):
    """What the capture uses of the composition root (bot/runtime.py), which a domain may not import."""

    jobs: "JobQueue"
    commands: "dict[str, Command]"
    approvals: CommandLines

COMMAND_OUTCOMES = ("succeeded", "failed", "denied", "rejected")
APPROVAL_STEPS = ("requested", "approved", "waiting", "declined", "cancelled", "expired", "break-glass", "interrupted")
# Their own steps are on the timeline already (a status change, a note, an approval): not again as commands.
SELF_RECORDED = ("incident", "incidents", "postmortem", "approvals", "actions")


class AuditCapture:
    question = OPEN_ID_OF_ROW  # asked by each audit row's INSERT: the open incident of the row's channel

    def __init__(self, runtime: AuditHost, timeline: Timeline):
        self._rt = runtime
        self._timeline = timeline

    def __call__(self, entry: AuditRow) -> None:
        if entry.outcome in APPROVAL_STEPS and entry.job_id is not None:
            job = self._rt.jobs.get(entry.job_id)
            incident = self._timeline.open_id(job.channel_id if job else entry.channel_id)
            if incident is not None and job is not None:
                self._timeline.add(incident, self._approval_step(entry, job))
            return
        if entry.command in SELF_RECORDED or entry.outcome not in (*COMMAND_OUTCOMES, "allowed"):
            return
        # The channel's open incident, read by the row's INSERT (AuditLog.ask_with_each_row).
        incident = self._timeline.open_id(entry.channel_id) if entry.asked is NOT_ASKED else entry.asked
        if incident is None:
            return
        job = self._rt.jobs.get(entry.job_id) if entry.job_id is not None else None
        if entry.outcome == "allowed":
            if job is not None and (job.approver or job.break_glass):  # a request starts to run
                self._timeline.add(incident, self._run_started(entry, job))
            return
        self._timeline.add(incident, self._command(entry, job))

    def _line(self, entry: AuditRow) -> str:
        arguments = entry.arguments or {}
        if set(arguments) == {"text"}:  # not parsed (rejected, denied): as typed
            return f"/{entry.command} {arguments['text']}".strip()
        cmd = self._rt.commands.get(entry.command)
        return command_line(cmd, arguments) if cmd is not None else f"/{entry.command}"

    def _command(self, entry: AuditRow, job: "Job | None") -> Event:
        details = {"outcome": entry.outcome, "duration_ms": entry.duration_ms, "command": self._line(entry)}
        found = (entry.details or {}).get(FOUND)
        if entry.details:
            details["facts"] = entry.details
        cmd = self._rt.commands.get(entry.command)
        if cmd is not None and not cmd.changes and entry.outcome == "succeeded" and not found:
            details["key"] = False  # a look that found nothing wrong is on the timeline, not a key action
        if entry.error:
            details["error"] = entry.error
        if job is not None:
            details["job_id"] = job.id
            if job.approver:
                details["approved_by"] = job.approver
            if job.break_glass:
                details["break_glass"] = job.break_glass
        said = f"found {found}" if found and entry.outcome == "succeeded" else entry.outcome
        return Event(COMMAND, entry.at, f"`{self._line(entry)}` {said}", entry.user_id, details, entry.channel_id)

    def _run_started(self, entry: AuditRow, job: "Job") -> Event:
        line = self._rt.approvals.command_line(job)
        how = f"approved by <@{job.approver}>" if job.approver else "break-glass"
        details = {"step": "running", "job_id": job.id, "command": line}
        return Event(APPROVAL, entry.at, f"Request #{job.id} `{line}` started ({how})", entry.user_id, details, job.channel_id)

    def _approval_step(self, entry: AuditRow, job: "Job") -> Event:
        line = self._rt.approvals.command_line(job)
        said = {
            "requested": f"Request #{job.id} `{line}` asked for approval by <@{entry.user_id}>",
            "approved": f"Request #{job.id} `{line}` approved by <@{entry.user_id}>",
            "declined": f"Request #{job.id} `{line}` denied by <@{entry.user_id}>",
            "cancelled": f"Request #{job.id} `{line}` cancelled by <@{entry.user_id}>",
            "waiting": f"Request #{job.id} `{line}` waits for the change before it to finish",
            "expired": f"Request #{job.id} `{line}` expired " + ("before it could start" if job.approver else "without approval"),
            "break-glass": f"Break-glass: <@{entry.user_id}> ran `{line}` without approval; reason: {entry.error or ''}",
            "interrupted": f"Request #{job.id} `{line}` was interrupted: the bot process running it stopped",
        }[entry.outcome]
        details = {"step": entry.outcome, "job_id": job.id, "command": line}
        if entry.outcome == "break-glass":
            details["break_glass"] = entry.error or ""
        actor = None if entry.outcome in ("waiting", "expired", "interrupted") else entry.user_id
        return Event(APPROVAL, entry.at, said, actor, details, job.channel_id)


def message_event(kind: str, channel: str, message: dict, *, permalink: str | None, details: dict | None = None) -> Event:
    """A Slack message as a timeline event, at the time it was posted; its author is the actor."""
    facts = dict(details or {})
    if message.get("bot_id") or message.get("subtype") == "bot_message":
        facts["bot"] = message.get("username") or (message.get("bot_profile") or {}).get("name") or message.get("user") or "a bot"
    if message.get("edited"):
        facts["edited"] = True
    files = [f.get("name") or f.get("title") or "a file" for f in message.get("files") or []]
    if files:
        facts["files"] = files
    thread_ts = message.get("thread_ts") if message.get("thread_ts") != message["ts"] else None
    return Event(
        kind, from_ts(message["ts"]), message.get("text") or "", message.get("user"), facts or None,
        channel, message["ts"], thread_ts, permalink,
    )
