"""The gate's run of a change or an approved request: a held job under the stack's lock, its progress on its message.

A change runs as a job row held by whoever runs it (a runner, the console): approved, taken over from a
runner, or run at once (break-glass, loudly; or a change that needs no approval). It holds the stack's lock
until every process it started has ended, whatever failed around it; a change that raises unexpectedly is an
interruption, its recovery run at once, still under the lock. Its message (the request's, or one posted
for its progress) is updated in place at most once a second, and shows its outcome: `MessageUpdate`, the
publisher of a change. The request's message itself (what it shows, where) is the approvals desk's.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Callable

from bot.frame import blocks
from bot.frame.pipeline import Host, Refused, Request, RequestDesk
from bot.frame.publish import Publisher
from bot.frame.registry import Reply
from bot.jobs.model import RUNNING, Job
from bot.store.engine import retried, utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between two chat.update calls of one message (Slack's Tier 3)
WAIT_LIMIT = timedelta(hours=1)  # an approved request waiting for the stack's lock longer than this expires


class Changes:
    def __init__(self, runtime: "Host"):
        self._rt = runtime

    @property
    def desk(self) -> RequestDesk:
        return self._rt.approvals

    def on_message(self, request: "Request") -> "MessageUpdate":
        """A held change's publisher: its outcome on its message, or (with none) where the caller's would go."""
        if isinstance(request.publisher, MessageUpdate):
            return request.publisher
        return MessageUpdate(self._rt, self.desk, request, request.publisher)

    def run(self, request: "Request", next: Callable[["Request"], Reply]) -> Reply:
        rt, desk = self._rt, self.desk
        if request.job is None:  # typed in the console: the change becomes a job this process holds
            request.holder = rt.holder
            job_id = rt.jobs.submit(
                request.invocation, state=RUNNING, arguments=request.arguments, break_glass=request.break_glass,
                holder=request.holder, started_at=utcnow(), policy=request.rule, reason=request.reason,
            )
            request.job = rt.jobs.get(job_id)
        elif not request.stored:  # a runner's job that needs no (more) approval: it keeps what was checked
            rt.jobs.update_held(
                request.job, request.holder, arguments=request.arguments, break_glass=request.break_glass, policy=request.rule,
                reason=request.reason,
            )
            request.job = rt.jobs.get(request.job.id)
        job = request.job
        if request.break_glass and not request.stored:
            broke = f", breaking the change freeze (changes are {request.broken_freeze})" if request.broken_freeze else ""
            self._record(job, "break-glass", request.break_glass + (f" [broke the change freeze: {request.broken_freeze}]" if broke else ""))
            notice = (f"🚨 *Break-glass*: <@{request.invocation.user_id}> runs `{request.command_line()}` without a second "
                      f"person's approval{broke}. Reason: {request.break_glass}")
            desk.announce(request.invocation.channel_id, notice)
            if rt.messages is None:  # no channel to announce it in (the console): the one who typed it reads it here
                request.say(notice)  # redacted as every progress line: the reason is the requester's own text
        changes = request.cmd.changes  # an approved request that changes nothing (a role) needs no lock
        held = rt.locks.acquire(rt.stack_name, job, request.command_line()) if changes else None
        if held is not None and request.stored and job.approver and not job.break_glass:
            return self._wait(request, held)
        if held is not None:
            text = (
                f"{request.cmd.slash} was not run: `{held.command}` (request #{held.job_id}, asked by <@{held.requester}>) "
                f"has been changing {rt.stack_name} since {desk.when(held.acquired_at)}; try again when it has finished."
            )
            self._record(job, "rejected", "stack busy")
            request.publisher = self.on_message(request)
            raise Refused(Reply(text), status=f"⛔ {text}")
        by = f"approved by <@{job.approver}>" if job.approver else ("break-glass" if job.break_glass else "")
        if not job.message_ts and job.source == "slack" and job.channel_id and rt.messages is not None:
            request.job = job = desk.post_status(job, f"▶️ Running ({by})…" if by else "▶️ Running…")
        publisher = request.publisher = self.on_message(request)
        publisher.start(by)
        try:
            reply = next(request)  # kept alive by this process's one runner heartbeat while it runs
            if reply.error_id and request.cmd.recover is not None:
                reply = self._recover_unexpected(job, request.cmd.recover, reply)
        finally:
            if changes:
                retried(lambda: rt.locks.release(job.id), f"the release of {job.label}'s lock")
        return reply

    def _wait(self, request: "Request", held) -> Reply:
        """An approved request finds another change on the stack: it waits for the lock, held by no process (so a
        restart keeps it), until that change lets the lock go and hands it over (ChangeLocks); it is checked again
        then. It expires if it has not started within WAIT_LIMIT: an approval that old is no longer today's."""
        rt, desk, job = self._rt, self.desk, request.job
        until = job.expires_at if job.waits_on else utcnow() + WAIT_LIMIT  # waiting again (its turn was lost): no new hour
        if not rt.jobs.to_waiting(job.id, request.holder, rt.stack_name, until):
            raise RuntimeError(f"{job.label} was taken from its runner")
        request.parked = True
        self._record(job, "waiting", f"stack busy with request #{held.job_id}")
        status = (
            f"⏳ Approved by <@{job.approver}>; waiting for `{held.command}` (request #{held.job_id}, asked by "
            f"<@{held.requester}>) to finish, then it is checked again and runs; it expires if it has not started by "
            f"{desk.when(until)}, and <@{job.requester}> may cancel it."
        )
        request.job = job = rt.jobs.get(job.id)
        desk.show(job, status)
        rt.locks.hand_over_free([rt.stack_name])  # the lock let go between our look and our wait: its holder saw no waiter
        return Reply(f"Request #{job.id}: {status}")

    def _record(self, job: Job, outcome: str, error: str | None = None) -> None:
        try:
            self._rt.audit.record(job.invocation(), outcome, job_id=job.id, error=error)
        except Exception:
            log.exception("audit write failed for %s of request #%s", outcome, job.id)

    def _recover_unexpected(self, job: Job, recover: Callable, reply: Reply) -> Reply:
        """A change that raised is an interruption: what it left is checked and put right as after a kill, still
        under the lock, and the channel is told the stack's state."""
        self._record(job, "interrupted", f"unexpected error (error id {reply.error_id})")
        try:
            state = recover(self._rt.context(job.invocation(), job_id=job.id), job)
        except Exception:
            log.exception("recovering after %s failed", job.label)
            state = "The bot could not check what it left behind (the details are in its log); check /health now."
        desk = self.desk
        if job.source == "slack":
            desk.announce(
                job.channel_id,
                f"⚠️ {job.label} `{desk.command_line(job)}` (asked by <@{job.requester}>) stopped on an unexpected error "
                f"(error id {reply.error_id}). {state}",
            )
        text = f"{reply.text}\n{state}"
        return Reply(text, [blocks.section(text)], in_channel=True, failed=True, error_id=reply.error_id)


class MessageUpdate:
    """A change's publisher: its progress (the last lines) and its outcome on its message, in place; the caller's
    publisher still gets every progress line, and the reply when there is no message to put it on."""

    def __init__(self, runtime: "Host", desk: RequestDesk, request: "Request", inner: Publisher):
        self._rt, self._desk, self._request, self._inner = runtime, desk, request, inner
        self._by = ""
        self._lines: list[str] = []
        self._throttle = _Throttle(self._show_progress)

    def start(self, by: str) -> None:
        self._by = by
        self._throttle.now()

    def _status(self, head: str) -> str:
        return f"{head} ({self._by})" if self._by else head

    def _show_progress(self) -> None:
        job = self._request.job
        self._desk.show(self._rt.jobs.get(job.id), self._status("▶️ Running") + "…", self._lines[-8:])

    def progress(self, text: str) -> None:
        # A multi-line entry with the same first line as the last one replaces it: a stream's tail, in place.
        lines = self._lines
        if "\n" in text and lines and text.partition("\n")[0] == lines[-1].partition("\n")[0]:
            lines[-1] = text
        else:
            lines.append(text)
        self._throttle.maybe()
        self._inner.progress(text)

    def publish(self, reply: Reply) -> None:
        job = self._rt.jobs.get(self._request.job.id)
        refused = self._request.refused
        if self._request.parked:
            pass  # waiting for the stack's lock: its message said so before the lock could be handed to it
        elif refused is not None and not reply.failed:
            self._desk.show(job, refused.status or f"⛔ Not run: {reply.text}")
        else:
            self._desk.show(job, self._status("❌ Failed" if reply.failed else "✅ Done"), reply.text.splitlines()[:30])
        if not job.message_ts:
            self._inner.publish(reply)


class _Throttle:
    """At most one message update a second: the first at once, the last never lost to the limit."""

    def __init__(self, flush: Callable[[], None]):
        self._flush = flush
        self._last = 0.0
        self._lock = threading.Lock()

    def now(self) -> None:
        with self._lock:
            self._last = time.monotonic()
        self._flush()

    def maybe(self) -> None:
        with self._lock:
            if time.monotonic() - self._last < PROGRESS_INTERVAL:
                return
            self._last = time.monotonic()
        self._flush()
