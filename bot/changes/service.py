"""The change card: what changed in the stack over a window, from four sources, each saying when it has nothing and
when it could not be read (never "nothing changed" when a source failed):

- the release ledger (bot/deploy): each release, its commit range and subjects;
- the Docker engine's events of the Compose project: restarts, exits with their code, OOM kills, health flips;
- the snapshots of the stack file and of services' environment (names only; values never, not even hashed);
- the audit table: the bot's commands that changed something, who and when.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.changes.model import ChangeSnapshot, NoticedChange
from bot.deploy.model import Release
from bot.frame import blocks
from bot.frame.audit import as_typed
from bot.frame.humanize import duration
from bot.frame.registry import Reply
from bot.stack.compose import EngineEvent, LastRun, StackError
from bot.store.engine import AuditEntry

if TYPE_CHECKING:
    from bot.deploy.service import Releases
    from bot.frame.config import Settings
    from bot.frame.registry import Command
    from bot.frame.publish import Notifier
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

ROLLBACK_LAST = "rollback_last"  # the card's button: /rollback typed by the clicker (bot/adapters/slack/listeners.py)
ROLLBACK_LABEL = "Roll back the last release"
DEFAULT_WINDOW = timedelta(hours=6)  # the card of an incident's start, a failing /health, a watch alert; /changes' default
SHOWN = 20  # lines of one section; the rest are counted
SUBJECTS = 5  # commit subjects of one release
# Commands that change something only in some of their uses, and which uses (the argument, its values; None: any
# value given); the others are those a change freeze stops (a backup takes the lock but changes nothing).
_SOMETIMES = {"role": ("action", ("grant", "revoke")), "freeze": ("what", None), "queries": ("action", ("cancel", "terminate")),
              "backup": ("words", (["setup-pitr"],))}  # it restarts PostgreSQL
_RAN = ("succeeded", "failed", "interrupted")
_FOLD = timedelta(seconds=60)  # a die this close before its container's restart (or after its OOM kill) is part of it


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    empty: str = ""  # what it says when it has nothing
    failed: str | None = None  # why its source could not be read
    notes: list[str] = field(default_factory=list)

    def text(self) -> list[str]:
        if self.failed:
            body = [f"⚠️ {self.failed}"]
        elif self.lines:
            body = self.lines[:SHOWN] + ([f"…and {len(self.lines) - SHOWN} more"] if len(self.lines) > SHOWN else [])
        else:
            body = [self.empty]
        return [f"*{self.title}*", *body, *self.notes]


@dataclass
class Card:
    title: str
    sections: list[Section]
    can_roll_back: bool

    @property
    def failed_sources(self) -> list[str]:
        return [section.title for section in self.sections if section.failed]

    def reply(self) -> Reply:
        parts = [self.title] + ["\n".join(section.text()) for section in self.sections]
        body = [blocks.header(self.title), *(block for section in self.sections for block in blocks.sections(section.text()))]
        if self.can_roll_back:
            body.append(blocks.command_buttons("changes", [(ROLLBACK_LABEL, ROLLBACK_LAST, "last")]))
            parts.append(f"→ {ROLLBACK_LABEL}: /rollback")
        return Reply("\n".join(parts), body, in_channel=True)


def _digest(salt: str, name: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\x00{name}\x00{value}".encode()).hexdigest()


class ChangeCards:
    def __init__(self, store: "Store", stack: "Callable[[], Stack]", settings: "Settings", commands: "dict[str, Command]",
                 releases: "Callable[[], Releases | None]", notifier: "Callable[[], Notifier | None]"):
        """`stack`, `releases` and `notifier` are asked for when used: tests and adapters put theirs in after the start."""
        self._store, self._stack_now, self._settings, self._commands = store, stack, settings, commands
        self._releases, self._notifier = releases, notifier

    @property
    def _stack(self) -> "Stack":
        return self._stack_now()

    # ---- the card ----------------------------------------------------------------------------------

    def card(self, window: timedelta, now: datetime, heading: str = "What changed") -> Card:
        since = now - window
        span = duration(window.total_seconds())
        when = self._when(window)
        try:
            watched = self.snapshot(now)
        except Exception as error:  # the bot's own database: the other sections may still say something
            watched = ([f"The stack file and environment could not be compared: {type(error).__name__}."], None)
        sections = [
            self._release_section(since, span, when),
            self._engine_section(since, now, span, when),
            self._file_section(since, span, when, watched),
            self._command_section(since, span, when),
        ]
        releases = self._releases()
        title = f"{heading} in {self._stack.name} in the last {span} (since {when(since)})"
        return Card(title, sections, can_roll_back=sections[0].failed is None and _running_release(releases))

    def post(self, channel: str, card: Card) -> bool:
        """Post the card to a channel (redacted on its way out); False without Slack (the console shows it instead)."""
        notifier = self._notifier()
        if notifier is None or not channel:
            return False
        try:
            notifier.post(channel, card.reply())
        except Exception:
            log.exception("could not post the change card")
        return True

    def _when(self, window: timedelta) -> Callable[[datetime], str]:
        tz, form = self._settings.tz, "%H:%M" if window <= timedelta(days=1) else "%a %d %b %H:%M"
        return lambda at: at.astimezone(tz).strftime(form)

    def _release_section(self, since: datetime, span: str, when) -> Section:
        section = Section("Releases", empty=f"No release in the last {span}.")
        releases = self._releases()
        if releases is None:
            section.empty = "No release ledger: the stack file has no [deploy] section."
            return section
        try:
            with self._store.session() as session:
                found = list(session.scalars(
                    select(Release).where(Release.stack == self._stack.name, Release.started_at >= since).order_by(Release.id)
                ))
                replaced = {r.id: r.commit for r in session.scalars(select(Release).where(Release.id.in_([f.replaced_id for f in found if f.replaced_id])))}
        except Exception as error:
            section.failed = f"The release ledger could not be read: {type(error).__name__}."
            return section
        for release in found:
            before = replaced.get(release.replaced_id)
            health = {"good": "🟢", "bad": "🔴"}.get(release.health, "⚪")
            who = f" by <@{release.requested_by}>" if release.requested_by else ""
            who += f", approved by <@{release.approved_by}>" if release.approved_by else ""
            state = " (running)" if release.finished_at is None else f" (exit {release.exit_code})" if release.exit_code not in (None, 0) else ""
            commits = f"`{before[:10]}..{release.short}`" if before and before != release.commit else f"`{release.short}`"
            section.lines.append(f"{when(release.started_at)} {health} #{release.id} {release.kind} {commits}{who}{state}")
            if before and before != release.commit:
                try:
                    subjects = releases.repo.subjects(before, release.commit, SUBJECTS + 1)
                except Exception:
                    subjects = ["(the commits between are no longer in the repository)"]
                section.lines += [f"    • {blocks.escape(s[:100])}" for s in subjects[:SUBJECTS]]
                if len(subjects) > SUBJECTS:
                    section.lines.append("    • …")
        return section

    def _engine_section(self, since: datetime, now: datetime, span: str, when) -> Section:
        section = Section("Containers (Docker events)", empty=f"No restart, exit, OOM kill or health change in the last {span}.")
        compose = self._stack.compose
        if compose is None:
            section.empty = "No Compose project in the stack file, so no Docker events."
            return section
        try:
            events, kept_from = compose.events(since, now)
        except StackError as error:
            section.failed = f"Docker events could not be read: {error}"
            return section
        except Exception as error:  # the card is shown with an alert: a surprise here must not hide the others
            section.failed = f"Docker events could not be read: {type(error).__name__}."
            return section
        found = _engine_lines(events)
        horizon = kept_from or now  # an engine that keeps no events at all: everything before now is gone
        if horizon > since:
            section.empty = f"No restart, exit, OOM kill or health change since {when(horizon)}, nor a container's last start or exit before."
            section.notes.append(
                f"Docker events before {when(horizon)} are no longer kept by the engine." if kept_from else "The engine keeps no events at all."
            )
            try:
                found += _before_events(compose.last_runs(), since, horizon)
            except Exception as error:
                section.notes.append(f"The containers' own last start and exit could not be read either: {error}")
            else:
                section.notes[-1] += " Before then, each container's own last start and exit are shown."
        section.lines = [f"{when(at)} {text}" for at, text in sorted(found, key=lambda line: line[0])]
        return section

    def _file_section(self, since: datetime, span: str, when, watched: tuple[list[str], datetime | None]) -> Section:
        problems, first = watched
        section = Section("Stack file and environment", empty=f"No change of the stack file or of services' environment in the last {span}.")
        try:
            with self._store.session() as session:
                noticed = list(session.scalars(
                    select(NoticedChange).where(NoticedChange.stack == self._stack.name, NoticedChange.at >= since).order_by(NoticedChange.at, NoticedChange.id)
                ))
        except Exception as error:
            section.failed = f"The snapshots could not be read: {type(error).__name__}."
            return section
        for change in noticed:
            what = f"{change.subject} {change.what} at {when(change.at)}" if change.what == "changed" else f"{when(change.at)} {change.subject}: {change.what}"
            section.lines.append(what)
        if problems:
            section.failed = " ".join(problems)
            section.failed += (" Noticed before that: " + "; ".join(section.lines)) if section.lines else ""
        elif first is not None and first > since:
            section.notes.append(f"Watched since {when(first)}: a change before then is not known.")
        return section

    def _command_section(self, since: datetime, span: str, when) -> Section:
        section = Section("Bot commands that changed something", empty=f"No command changed anything in the last {span}.")
        changing = [name for name, cmd in self._commands.items() if cmd.freezes] + list(_SOMETIMES)
        try:
            with self._store.session() as session:
                entries = list(session.scalars(
                    select(AuditEntry).where(AuditEntry.at >= since, AuditEntry.command.in_(changing), AuditEntry.outcome.in_(_RAN))
                    .order_by(AuditEntry.id)
                ))
        except Exception as error:
            section.failed = f"The audit log could not be read: {type(error).__name__}."
            return section
        for entry in entries:
            key, values = _SOMETIMES.get(entry.command, (None, None))
            if key is not None:
                said = (entry.arguments or {}).get(key)
                if not said or (values is not None and said not in values):
                    continue  # /role list, /freeze with nothing to freeze: it only showed
            typed = blocks.escape(as_typed(entry, self._commands))[:200]
            request = f" (request #{entry.job_id})" if entry.job_id else ""
            section.lines.append(f"{when(entry.at)} `{typed.replace('`', 'ʼ')}` by <@{blocks.escape(entry.user_id)}> → {entry.outcome}{request}")
        return section

    # ---- the snapshots -----------------------------------------------------------------------------

    def snapshot(self, now: datetime) -> tuple[list[str], datetime | None]:
        """Digest the stack file (and the compose file it names) and every service's environment; a digest that differs
        from the stored one is a noticed change (one conditional UPDATE decides who records it). Returns what could not
        be read, and when the watching began (the oldest snapshot)."""
        problems: list[str] = []
        for label, path in self._files():
            try:
                content = Path(path).read_bytes()
            except OSError as error:
                problems.append(f"The {label} could not be read: {error.strerror or type(error).__name__}.")
                continue
            self._compare(f"file:{path}", label, now, lambda _salt: {"file": hashlib.sha256(content).hexdigest()})
        compose = self._stack.compose
        if compose is not None:
            try:
                environments = compose.environments()
            except StackError as error:
                problems.append(f"Services' environment could not be read: {error}")
                environments = {}
            for service, env in sorted(environments.items()):
                self._compare(f"env:{service}", service, now, lambda salt, env=env: {name: _digest(salt, name, value) for name, value in env.items()})
        with self._store.session() as session:
            watched_from = session.scalars(
                select(ChangeSnapshot.watched_since).where(ChangeSnapshot.stack == self._stack.name).order_by(ChangeSnapshot.watched_since).limit(1)
            ).first()
        return problems, watched_from

    def _files(self) -> list[tuple[str, str]]:
        config = self._stack.config
        files = [("stack file", config.source)] if config.source else []
        compose_file = getattr(config.stack, "compose_file", None)
        if compose_file:
            path = Path(compose_file)
            if not path.is_absolute() and config.source:
                candidate = Path(config.source).parent / path
                path = candidate if candidate.exists() else path
            files.append(("compose file", str(path)))
        return files

    def _compare(self, key: str, subject: str, now: datetime, digests_with: Callable[[str], dict[str, str]]) -> None:
        stack = self._stack.name
        with self._store.session() as session:
            stored = session.get(ChangeSnapshot, (stack, key))
            seen = (stored.salt, dict(stored.digests), stored.version) if stored is not None else None
        if seen is None:
            salt = secrets.token_hex(16)
            try:
                with self._store.session.begin() as session:
                    session.execute(insert(ChangeSnapshot).values(stack=stack, key=key[:400], salt=salt, digests=digests_with(salt), version=1, taken_at=now, watched_since=now))
            except IntegrityError:
                pass  # another replica took the first snapshot: it is the baseline
            return
        salt, before, version = seen
        after = digests_with(salt)
        if after == before:
            return
        if key.startswith("file:"):
            whats = ["changed"]
            at = _modified(key[len("file:"):], now)
        else:
            whats = [f"env {name} changed" for name in sorted(set(before) & set(after)) if before[name] != after[name]]
            whats += [f"env {name} added" for name in sorted(set(after) - set(before))]
            whats += [f"env {name} removed" for name in sorted(set(before) - set(after))]
            at = now
        with self._store.session.begin() as session:
            won = session.execute(
                update(ChangeSnapshot)
                .where(ChangeSnapshot.stack == stack, ChangeSnapshot.key == key, ChangeSnapshot.version == version)
                .values(digests=after, version=version + 1, taken_at=now)
            ).rowcount == 1
            if won:  # one writer per change, however many replicas or cards looked at once
                session.add_all(NoticedChange(stack=stack, at=at, subject=subject[:400], what=what) for what in whats)


def _running_release(releases: "Releases | None") -> bool:
    """Whether there is a release to roll back: the ledger knows what runs."""
    try:
        return releases is not None and releases.current() is not None
    except Exception:
        return False


def _modified(path: str, now: datetime) -> datetime:
    """When a file changed: its modification time, unless that is in the future (a clock skew) or unreadable."""
    try:
        at = datetime.fromtimestamp(Path(path).stat().st_mtime, now.tzinfo)
    except OSError:
        return now
    return min(at, now)


def _engine_lines(events: list[EngineEvent]) -> list[tuple[datetime, str]]:
    """Restarts, exits (with the code), OOM kills and health flips, oldest first; the die of a restart or of an OOM kill
    is folded into it, and a health status repeated is not a flip."""
    lines: list[tuple[datetime, str]] = []
    health: dict[str, str] = {}
    for index, event in enumerate(events):
        name = blocks.escape(event.service)
        if event.action == "restart":
            lines.append((event.at, f"{name} restarted"))
        elif event.action == "oom":
            code = next((e.exit_code for e in events[index + 1:] if e.container == event.container and e.action == "die" and e.at - event.at <= _FOLD), None)
            lines.append((event.at, f"{name} was killed for going over its memory limit (OOM kill)" + (f", exit code {code}" if code is not None else "")))
        elif event.action == "die":
            later = events[index + 1:]
            earlier = events[:index]
            if any(e.container == event.container and e.action == "restart" and e.at - event.at <= _FOLD for e in later):
                continue
            if any(e.container == event.container and e.action == "oom" and event.at - e.at <= _FOLD for e in earlier):
                continue
            lines.append((event.at, f"{name} exited with code {event.exit_code if event.exit_code is not None else 'unknown'}"))
        elif event.action.startswith("health_status"):
            status = event.action.partition(":")[2].strip()
            if health.get(event.container) != status:
                health[event.container] = status
                lines.append((event.at, f"{name} became {blocks.escape(status)}"))
    return lines


def _before_events(runs: list[LastRun], since: datetime, kept_from: datetime) -> list[tuple[datetime, str]]:
    """The last start and exit of each container that fall where the engine no longer keeps its events."""
    lines = []
    for run in runs:
        name = blocks.escape(run.service)
        if run.finished_at is not None and since <= run.finished_at < kept_from:
            oom = " after going over its memory limit (OOM kill)" if run.oom_killed else ""
            lines.append((run.finished_at, f"{name} exited with code {run.exit_code}{oom}"))
        if run.started_at is not None and since <= run.started_at < kept_from:
            lines.append((run.started_at, f"{name} started" + ("" if run.running else " (it is not running now)")))
    return lines
