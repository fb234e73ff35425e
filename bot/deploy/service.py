"""Deploying a commit and gating it on health, recorded in the release ledger.

A rollback is a new release that points at an older commit: the checkout moves (detached), the deploy script
runs, every app service must be healthy again; if not, the checkout goes back to the commit it started from and
that is deployed again. The database does not roll back with the code. Each deploy's row is written before it
starts, so a bot killed mid-deploy knows on its next start what it left behind.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import or_, select, update

from bot.frame.blocks import code_block, escape
from bot.frame.config import DeploySection
from bot.deploy.git import GitError, Repo
from bot.deploy.model import BAD, GOOD, RECORDED, REVERT, UNKNOWN, Release
from bot.deploy.script import ScriptOutcome, read_output, run_script, writers_of
from bot.jobs.queue import ended_and_unlocked, identity_running, process_identity
from bot.stack.compose import StackError
from bot.frame.faults import reached
from bot.stack.health import gate
from bot.frame.humanize import duration
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.frame.config import Settings
    from bot.jobs.model import Job
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class DeployError(Exception):
    """A deploy cannot start (no [deploy] section, a dirty checkout, git failing); one sentence for the user."""


def output_file(settings, release_id: int) -> Path:
    """Where a release's deploy script writes while it runs (moved into the ledger when it ends)."""
    return settings.home / "deploys" / f"release-{release_id}.log"


def deploy_section(stack: "Stack") -> DeploySection:
    if stack.config.deploy is None:
        raise DeployError(NO_DEPLOY)
    return stack.config.deploy


NO_DEPLOY = "The stack file has no [deploy] section, so the bot knows no deploy script or repository."


@dataclass
class DeployResult:
    ok: bool
    lines: list[str] = field(default_factory=list)
    release: Release | None = None


class Releases:
    def __init__(self, store: "Store", stack: "Stack", settings: "Settings", fault: Callable[[str], None]):
        self._store, self._stack, self._settings, self._fault = store, stack, settings, fault
        self.deploy = deploy_section(stack)
        self.repo = Repo(self.deploy.workdir)

    # ---- the ledger ------------------------------------------------------------------------------

    def latest(self, count: int) -> list[Release]:
        with self._store.session() as session:
            return list(session.scalars(select(Release).where(Release.stack == self._stack.name).order_by(Release.id.desc()).limit(count)))

    def current(self) -> Release | None:
        """What is deployed: the newest release whose deploy finished (or was found checked out)."""
        with self._store.session() as session:
            return session.scalars(
                select(Release).where(Release.stack == self._stack.name, Release.finished_at.is_not(None)).order_by(Release.id.desc()).limit(1)
            ).first()

    def previous_good(self) -> Release | None:
        """Where /rollback with no REF goes: back in the history of what runs, never forward. The newest release with good
        health whose commit is an earlier commit of the running one (its ancestor in Git): after rolling back from v3 to
        v1, v3 is newer in the ledger but later in history, so it is not proposed."""
        current = self.current()
        if current is None:
            return None
        with self._store.session() as session:
            candidates = session.scalars(
                select(Release)
                .where(Release.stack == self._stack.name, Release.id < current.id, Release.health == GOOD, Release.commit != current.commit)
                .order_by(Release.id.desc())
            )
            tried: set[str] = set()
            for release in candidates:
                if release.commit in tried:
                    continue
                tried.add(release.commit)
                if self.repo.resolve(release.commit) is not None and self.repo.is_ancestor(release.commit, current.commit):
                    return release
        return None

    def released(self, commit: str) -> bool:
        """Whether the commit ran here: found checked out, or its deploy script finished well (a checkout that failed,
        or a script that failed or was interrupted, deployed nothing)."""
        with self._store.session() as session:
            found = session.scalars(
                select(Release.id)
                .where(Release.stack == self._stack.name, Release.commit == commit, or_(Release.kind == RECORDED, Release.exit_code == 0))
                .limit(1)
            )
            return found.first() is not None

    def record_checked_out(self) -> Release | None:
        """At start: the commit checked out now becomes the first release when the ledger has none."""
        if self.current() is not None:
            return None
        commit = self.repo.head()
        health = self._health_now()
        now = utcnow()
        release = Release(stack=self._stack.name, commit=commit, kind=RECORDED, started_at=now, finished_at=now, health=health)
        with self._store.session.begin() as session:
            session.add(release)
        log.info("recorded the checked-out commit %s as the first release (health %s)", commit[:10], health)
        return release

    def _health_now(self) -> str:
        docker = self._stack.compose
        if docker is None:
            return UNKNOWN
        try:
            states = {state.service: state for state in docker.states()}
        except StackError:
            return UNKNOWN
        services = self.app_services(list(states))
        return GOOD if services and all(s in states and states[s].ok for s in services) else BAD

    def app_services(self, known: list[str] | None = None) -> list[str]:
        """The services whose health gates a deploy: the stack file's app_services, else every service."""
        if self._stack.app_services:
            return list(self._stack.app_services)
        if known is not None:
            return known
        return self._stack.compose.services() if self._stack.compose is not None else []

    def output_file(self, release_id: int) -> Path:
        return output_file(self._settings, release_id)

    def _update(self, release_id: int, **values) -> None:
        with self._store.session.begin() as session:
            session.execute(update(Release).where(Release.id == release_id).values(**values))

    def get(self, release_id: int) -> Release | None:
        with self._store.session() as session:
            return session.get(Release, release_id)

    # ---- deploying ---------------------------------------------------------------------------------

    def refuse_dirty(self) -> None:
        dirty = self.repo.uncommitted()
        if dirty:
            shown = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
            raise DeployError(
                f"The repository {self.deploy.workdir} has uncommitted changes ({shown}); commit or discard them first, "
                "so that what is deployed is a commit."
            )

    def run(self, kind: str, *, target: str | None, ref: str | None, job_id: int | None, requested_by: str,
            approved_by: str | None, progress: Progress) -> DeployResult:
        """Deploy `target` (None: the commit checked out now) and gate it on health; a bad rollback goes back."""
        start = self.repo.head()
        if target is not None:
            self.refuse_dirty()
        self.record_checked_out()
        result = DeployResult(ok=False)
        release = self._one(kind, target or start, ref, job_id, requested_by, approved_by, progress, result, move=target is not None)
        result.release = release
        result.ok = release.health == GOOD and release.exit_code == 0
        if not result.ok and target is not None and target != start:
            result.lines.append(f"↩️ Going back to {start[:10]}, the commit it started from, and deploying it again…")
            progress(result.lines[-1])
            back = self._one(REVERT, start, None, job_id, requested_by, approved_by, progress, result, move=True, replaced=release.id)
            result.lines.append(
                f"{'🟢' if back.health == GOOD else '🔴'} Back on {start[:10]}: release #{back.id}, health {back.health}."
            )
        return result

    def _one(self, kind: str, commit: str, ref: str | None, job_id: int | None, requested_by: str, approved_by: str | None,
             progress: Progress, result: DeployResult, *, move: bool, replaced: int | None = None) -> Release:
        current = self.current()
        release = Release(
            stack=self._stack.name, commit=commit, ref=ref, kind=kind, requested_by=requested_by, approved_by=approved_by,
            job_id=job_id, started_at=utcnow(), health=UNKNOWN, replaced_id=replaced or (current.id if current else None),
        )
        with self._store.session.begin() as session:
            session.add(release)
            session.flush()
            release_id = release.id
        say = lambda line: (result.lines.append(line), progress(line))  # noqa: E731
        if move:
            try:
                self.repo.checkout(commit)
            except GitError as error:
                say(f"🔴 {error}")
                self._update(release_id, finished_at=utcnow(), health=BAD, note=str(error))
                return self.get(release_id)
            subject = escape(self.repo.commit(commit).subject[:80])
            say(f"Checked out {commit[:10]} ({subject}) in {self.deploy.workdir}.")
            reached(self._fault, "deploy:after_checkout")
        name = os.path.basename(self.deploy.command[0])
        progress(f"Running {name}…")
        log_path = self.output_file(release_id)

        script: dict = {}  # who it is, written again at the end in case the store refused it at the start

        def started(pid: int) -> None:
            script.update(pid=pid, process=process_identity(pid))
            reached(self._fault, "deploy:after_start")
            self._update(release_id, **script)

        outcome = run_script(
            self.deploy,
            log_path,
            lambda tail: progress(output_tail(name, tail)),
            on_start=started,
        )
        log_path.unlink(missing_ok=True)  # kept with the release from here on
        say(self._script_line(name, outcome))
        reached(self._fault, "deploy:after_script")
        health, health_line = self._gate(progress)
        say(health_line)
        note = "timed out" if outcome.timed_out else (outcome.error or None)
        self._update(
            release_id, finished_at=utcnow(), health=health if outcome.ok else BAD, exit_code=outcome.exit_code,
            duration_ms=round(outcome.seconds * 1000), output=outcome.output, note=note, **script,
        )
        return self.get(release_id)

    def _script_line(self, name: str, outcome: ScriptOutcome) -> str:
        if outcome.error:
            return f"🔴 {outcome.error}"
        if outcome.timed_out:
            return f"🔴 {name} did not finish within {duration(self.deploy.timeout)}: its process group was killed."
        mark = "🟢" if outcome.ok else "🔴"
        return f"{mark} {name} exited with code {outcome.exit_code} after {outcome.seconds:.1f} s."

    def _gate(self, progress: Progress) -> tuple[str, str]:
        """The one health gate (bot/stack/health.py): every check holds for stable_seconds, or it fails naming them."""
        if self._stack.compose is None and not self._stack.config.probes:
            return UNKNOWN, "⚪ Health unknown: the stack file names no Compose project."
        outcome = gate(self._stack, progress)
        return (GOOD if outcome.ok else BAD), outcome.line


def output_tail(name: str, tail: list[str]) -> str:
    """The script's last lines in the request's message: a code block its output can neither close nor fill with
    live markup (a mention, a link), whatever the script or the commits it prints say."""
    return f"📜 {name} output (last lines):\n" + code_block("\n".join(tail)[-2500:])


# ---- after the bot was killed mid-deploy ---------------------------------------------------------------


def recover(releases: "Releases | None", store: "Store", job: "Job") -> str:
    """What an interrupted deploy left: waits for a deploy script still running, then says which commit is checked out."""
    if releases is None:  # the stack file has no [deploy] section
        return "Check /health and ask again if it is still needed."
    with store.session() as session:
        running = list(session.scalars(select(Release).where(Release.job_id == job.id, Release.finished_at.is_(None))))
    if not running:
        return "Check /health and ask again if it is still needed."
    parts = []
    for release in running:
        # Only the very process it started (a bare pid may since name a thread, or another host's process); when
        # its start was not recorded, the process still writing the release's output file is it.
        log_path = releases.output_file(release.id)
        scripts = [release.process] if release.process else writers_of(log_path)
        alive = lambda: any(identity_running(script) for script in scripts)  # noqa: E731
        pid = release.pid or (scripts[0].split("/")[1] if scripts else None)
        if alive():
            deadline = time.monotonic() + releases.deploy.timeout
            while alive() and time.monotonic() < deadline:
                time.sleep(0.5)
            parts.append(f"Its deploy script (pid {pid}) was still running and has {'not ended yet' if alive() else 'ended'}.")
        elif pid:
            parts.append(f"Its deploy script (pid {pid}) had ended.")
        health, _said = releases._gate(lambda _text: None)
        releases._update(release.id, finished_at=utcnow(), health=health, output=read_output(log_path),
                         note="interrupted: the bot stopped during this deploy")
        log_path.unlink(missing_ok=True)
        parts.append(f"Release #{release.id} ({release.kind} of {release.short}) is marked interrupted, health {health}.")
    try:
        head = releases.repo.head()
        subject = escape(releases.repo.commit(head).subject[:80])
        parts.insert(0, f"The repository {releases.deploy.workdir} has {head[:10]} ({subject}) checked out.")
    except GitError as error:
        parts.insert(0, f"Which commit is checked out is unknown: {error}")
    parts.append("/releases shows the ledger; /restart runs the deploy script again.")
    return " ".join(parts)


def finish_abandoned(store: "Store", settings: "Settings") -> None:
    """The runners' sweep: a release its job left running in the ledger (the store refused its last write, its
    recovery failed) is finished, health unknown, with what its script wrote; /rollback trusts only finished ones."""
    with store.session() as session:
        open_releases = list(session.scalars(select(Release).where(Release.finished_at.is_(None), *ended_and_unlocked(Release.job_id))))
    for release in open_releases:
        log_path = output_file(settings, release.id)
        with store.session.begin() as session:
            session.execute(update(Release).where(Release.id == release.id, Release.finished_at.is_(None)).values(
                finished_at=utcnow(), output=release.output or read_output(log_path),
                note="closed by the bot: its request had ended without finishing it",
            ))
        log_path.unlink(missing_ok=True)


def record_at_start(releases: "Releases | None") -> None:
    """The bot starting: the checked-out commit becomes the first release if the ledger has none; never fatal."""
    if releases is None:
        return
    try:
        releases.record_checked_out()
    except Exception as error:  # a missing checkout must not keep the bot from answering
        log.warning("could not record the checked-out commit as a release: %s", error)
