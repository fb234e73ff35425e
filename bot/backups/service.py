"""Taking, checking, verifying and pruning backups; the catalogue rows say what each file must be.

A backup is `pg_dump -Fc` streamed to a hidden temporary file (mode 0600, directory 0700), hashed on
the way, fsynced and only then renamed to its name: a file with a backup's name is always complete.
Its row counts come from the very snapshot the dump reads. Only a restore proves a backup, so
`verify` restores it into a scratch database that is dropped whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

import psycopg
from sqlalchemy import select, update

from bot.backups.model import BASE, DELETED, FAILED, OK, TAKING, Backup
from bot.backups.tools import CHUNK, Staged, last_lines, tools_for
from bot.stack.compose import StackError
from bot.frame.humanize import elapsed, size as human_size
from bot.frame.redact import redact
from bot.frame.registry import Invocation
from bot.stack.database import StackDatabase
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.frame.audit import AuditLog
    from bot.frame.config import Settings
    from bot.stack.stack import Stack
    from bot.store.engine import Store

Progress = Callable[[str], None]
SCRATCH_PREFIX = "flowstate_verify_"
# What pg_restore applies: all or nothing, without the roles, grants and comments of the source server.
RESTORE_OPTIONS = ["--single-transaction", "--no-owner", "--no-acl", "--no-comments"]


class BackupError(StackError):
    """A backup cannot be used or taken; one sentence for the user."""


def _quiet(_text: str) -> None:
    pass


class Meter:
    """Bytes so far and their rate, told at most once a second."""

    def __init__(self, progress: Progress, label: str):
        self._progress, self._label = progress, label
        self._started = self._last = time.monotonic()
        self.bytes = 0

    def add(self, count: int) -> None:
        self.bytes += count
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            rate = self.bytes / max(now - self._started, 1e-6)
            self._progress(f"{self._label}: {human_size(self.bytes)} so far ({human_size(rate)}/s)…")


class AtomicFile:
    """Written under a hidden temporary name (0600), hashed as written, fsynced, then renamed."""

    def __init__(self, final: Path):
        self.final = final
        self.partial = final.with_name(f".{final.name}.partial")
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._fd = os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view):]
        self.sha256.update(chunk)
        self.size += len(chunk)

    def commit(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.partial, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def discard(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.partial.unlink(missing_ok=True)


def private_directory(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def read_chunks(source: BinaryIO, sha256, meter: Meter | None = None) -> Iterator[bytes]:
    while chunk := source.read(CHUNK):
        sha256.update(chunk)
        if meter is not None:
            meter.add(len(chunk))
        yield chunk


class Backups:
    def __init__(self, store: "Store", stack: "Stack", settings: "Settings", audit: "AuditLog"):
        self._store, self._stack, self._settings, self._audit = store, stack, settings, audit
        self.tools = tools_for(stack)
        self.database = stack.config.database.name
        self.dsn = stack.config.database.dsn
        self.db = StackDatabase(self.dsn)

    # ---- the catalogue ---------------------------------------------------------------------------

    def get(self, backup_id: int) -> Backup | None:
        with self._store.session() as session:
            backup = session.get(Backup, backup_id)
        return backup if backup is not None and backup.stack == self._stack.name else None

    def latest(self, limit: int = 20) -> list[Backup]:
        with self._store.session() as session:
            return list(
                session.scalars(
                    select(Backup)
                    .where(Backup.stack == self._stack.name, Backup.state != DELETED)
                    .order_by(Backup.id.desc())
                    .limit(limit)
                )
            )

    def _update(self, backup_id: int, **values) -> None:
        with self._store.session.begin() as session:
            session.execute(update(Backup).where(Backup.id == backup_id).values(**values))

    # ---- taking ----------------------------------------------------------------------------------

    def take(self, requested_by: str, *, note: str | None = None, kind: str = "manual", job_id: int | None = None,
             progress: Progress = _quiet) -> Backup:
        started_at, started = utcnow(), time.monotonic()
        backup = Backup(
            stack=self._stack.name, database=self.database, state=TAKING, kind=kind, requested_by=requested_by,
            note=note, job_id=job_id, started_at=started_at,
        )
        with self._store.session.begin() as session:
            session.add(backup)
            session.flush()
            backup_id = backup.id
        directory = private_directory(self._settings.backup_directory)
        out = None
        try:
            out = AtomicFile(directory / f"{self.database}-{started_at:%Y%m%dT%H%M%SZ}-{backup_id}.dump")
            meter = Meter(progress, f"Dumping {self.database} ({'safety backup' if kind == 'safety' else 'backup'} #{backup_id})")

            def write(chunk: bytes) -> None:
                out.write(chunk)
                meter.add(len(chunk))

            with self.db.exported_snapshot() as snapshot:
                argv = ["pg_dump", *self.tools.connection(), "--format=custom", f"--snapshot={snapshot.id}", f"--dbname={self.database}"]
                outcome = self.tools.stream(argv, write)
                if outcome.exit_code != 0:
                    raise BackupError(f"pg_dump failed {self.tools.where} (exit code {outcome.exit_code}): {last_lines(outcome.stderr)}")
                if out.size == 0:
                    raise BackupError(f"pg_dump wrote nothing {self.tools.where}.")
                counts = snapshot.counts()
            out.commit()
            copy_path = self._copy(out.final, out.sha256.hexdigest(), progress)
        except psycopg.Error as error:  # the server went away mid-dump: one sentence, like any other failure
            if out is not None:
                out.discard()
            reason = f"the connection to {self.database} failed: {str(error).splitlines()[0]}"
            self._update(backup_id, state=FAILED, finished_at=utcnow(), error=redact(reason)[:2000])
            raise BackupError(reason) from None
        except BaseException as error:
            if out is not None:
                out.discard()
            self._update(backup_id, state=FAILED, finished_at=utcnow(), error=redact(str(error))[:2000] or type(error).__name__)
            raise
        self._update(
            backup_id, state=OK, finished_at=utcnow(), path=str(out.final), copy_path=copy_path, size=out.size,
            sha256=out.sha256.hexdigest(), duration_ms=round((time.monotonic() - started) * 1000),
            server_version=snapshot.server_version, table_counts=counts,
        )
        return self.get(backup_id)

    def _copy(self, source: Path, sha256: str, progress: Progress) -> str | None:
        """The second location (the guide's "separate location"), written the same careful way and checked."""
        target_dir = self._settings.backup_copy_dir
        if target_dir is None:
            return None
        copy = AtomicFile(private_directory(target_dir) / source.name)
        try:
            meter = Meter(progress, "Copying to the second location")
            with source.open("rb") as original:
                for chunk in read_chunks(original, hashlib.sha256(), meter):
                    copy.write(chunk)
            if copy.sha256.hexdigest() != sha256:
                raise BackupError(f"the copy in {target_dir} does not match the backup's SHA-256")
            copy.commit()
        except BaseException:
            copy.discard()
            raise
        return str(copy.final)

    # ---- checking: is this file the backup it claims to be? ----------------------------------------

    def check(self, backup: Backup, progress: Progress = _quiet) -> tuple[Staged, int]:
        """Size, SHA-256 and `pg_restore --list` of the very bytes the tools will read (copied into the
        container on the way, or the file opened once and handed on open); returns where they are and the number of
        entries in the dump's table of contents."""
        if backup.state != OK:
            raise BackupError(f"{backup.label} is {backup.state}: it has no usable file.")
        if backup.database != self.database:
            raise BackupError(f"{backup.label} is of database {backup.database}, not {self.database}.")
        path = Path(backup.path)
        try:
            source = path.open("rb")
        except OSError:
            raise BackupError(f"The file of {backup.label} is missing ({path.name}).") from None
        with source:
            size = os.fstat(source.fileno()).st_size
            if size != backup.size:
                raise BackupError(
                    f"The file of {backup.label} is {size} bytes instead of {backup.size}: it is truncated or was changed."
                )
            sha256 = hashlib.sha256()
            staged = self.tools.stage(source, size, read_chunks(source, sha256, Meter(progress, f"Checking {backup.label}")))
        try:
            if sha256.hexdigest() != backup.sha256:
                raise BackupError(f"The SHA-256 of {backup.label} does not match what was recorded: the file was changed or is damaged.")
            outcome, toc = self.tools.run(["pg_restore", "--list", staged.path])
            if outcome.exit_code != 0:
                raise BackupError(f"pg_restore cannot read {backup.label}: {last_lines(outcome.stderr)}")
            dumped = re.search(r"^;\s+dbname: (.*)$", toc, re.MULTILINE)
            if dumped is None or dumped.group(1).strip() != backup.database:
                found = dumped.group(1).strip() if dumped else "no database name"
                raise BackupError(f"The file of {backup.label} is a dump of {found[:64]}, not of {backup.database}.")
        except BaseException:
            self.tools.unstage(staged)
            raise
        entries = sum(1 for line in toc.splitlines() if line and not line.startswith(";"))
        return staged, entries

    # ---- verifying: only a restore proves a backup -------------------------------------------------

    def verify(self, backup: Backup, job_id: int | None = None, progress: Progress = _quiet) -> tuple[bool, list[str]]:
        started = time.monotonic()
        try:
            staged, entries = self.check(backup, progress)
        except BackupError as error:
            self._verified(backup.id, False, str(error))
            raise
        lines = [f"🟢 File present, {human_size(backup.size)}, SHA-256 matches; pg_restore lists {entries} entries."]
        problems: list[str] = []
        scratch = f"{SCRATCH_PREFIX}j{job_id or 0}_{secrets.token_hex(4)}"
        try:
            self.tools.check(["createdb", *self.tools.connection(), scratch], "createdb")
            try:
                progress(f"Test restore of {backup.label} into scratch database {scratch}…")
                outcome, _out = self.tools.run(["pg_restore", *self.tools.connection(), f"--dbname={scratch}", *RESTORE_OPTIONS, staged.path])
                if outcome.exit_code != 0:
                    problems.append(f"🔴 The test restore failed: {last_lines(outcome.stderr)}")
                else:
                    lines.append(f"🟢 Test restore into a scratch database succeeded in {elapsed(started)}.")
                    problems += self._compare_counts(backup, scratch, lines)
            finally:
                self.drop_scratch(scratch)
        finally:
            self.tools.unstage(staged)
        lines.append(f"Scratch database {scratch} dropped.")
        ok = not problems
        self._verified(backup.id, ok, "\n".join(problems or lines[:-1]))
        return ok, problems + lines

    def _compare_counts(self, backup: Backup, scratch: str, lines: list[str]) -> list[str]:
        recorded = {(schema, table): rows for schema, table, rows in backup.table_counts or []}
        restored = self.db.count_tables(list(recorded), database=scratch)
        wrong = [
            f"{schema}.{table}: {restored[(schema, table)]} rows restored, {rows} recorded"
            for (schema, table), rows in recorded.items()
            if restored[(schema, table)] != rows
        ]
        if wrong:
            return ["🔴 Row counts differ: " + "; ".join(wrong)]
        shown = ", ".join(f"{table} {rows}" for (_schema, table), rows in list(recorded.items())[:5])
        lines.append(f"🟢 Row counts of the {len(recorded)} largest tables match ({shown}).")
        return []

    def drop_scratch(self, name: str) -> None:
        self.tools.check(["dropdb", *self.tools.connection(), "--if-exists", "--force", name], f"dropdb {name}")

    def _verified(self, backup_id: int, ok: bool, text: str) -> None:
        self._update(backup_id, verified_at=utcnow(), verified_ok=ok, verification=redact(text)[:4000])

    # ---- after a crash -----------------------------------------------------------------------------

    def abandon(self, job_id: int) -> list[int]:
        """A job's backups still being taken when its bot died: failed, their partial files and scratch databases gone."""
        with self._store.session() as session:
            taking = list(session.scalars(select(Backup).where(Backup.job_id == job_id, Backup.state == TAKING)))
        for backup in taking:
            for directory in filter(None, [self._settings.backup_directory, self._settings.backup_copy_dir]):
                for partial in directory.glob(f".{self.database}-*-{backup.id}.*.partial"):  # .dump, .base.tar
                    partial.unlink(missing_ok=True)
            self._update(backup.id, state=FAILED, finished_at=utcnow(), error="the bot stopped while it was taken")
        for scratch in self.db.databases_like(f"{SCRATCH_PREFIX}j{job_id}_"):
            self.drop_scratch(scratch)
        return [backup.id for backup in taking]

    # ---- retention ---------------------------------------------------------------------------------

    def prune(self, invocation: Invocation, job_id: int | None, kind: str | None = None) -> list[Backup]:
        """After a backup succeeded: keep the newest N and all younger than D days, never the newest verified one.
        Dumps and base backups (kind "base") are kept apart: each by the rule, among its own."""
        settings = self._settings
        same_kind = Backup.kind == BASE if kind == BASE else Backup.kind != BASE
        with self._store.session() as session:
            good = list(
                session.scalars(
                    select(Backup)
                    .where(Backup.stack == self._stack.name, Backup.database == self.database, Backup.state == OK, same_kind)
                    .order_by(Backup.id.desc())
                )
            )
        young = utcnow() - timedelta(days=settings.backup_keep_days)
        keep = {backup.id for backup in good[: settings.backup_keep]} | {b.id for b in good if b.started_at >= young}
        newest_verified = next((b for b in good if b.verified_ok), None)
        if newest_verified is not None:
            keep.add(newest_verified.id)
        pruned = []
        for backup in reversed(good):  # oldest first
            if backup.id in keep:
                continue
            with self._store.session.begin() as session:
                won = session.execute(
                    update(Backup).where(Backup.id == backup.id, Backup.state == OK).values(state=DELETED, deleted_at=utcnow())
                ).rowcount
            if not won:
                continue
            for path in filter(None, [backup.path, backup.copy_path]):
                Path(path).unlink(missing_ok=True)
            self._audit.record(
                invocation, "pruned", job_id=job_id,
                arguments={
                    "backup_id": backup.id, "file": Path(backup.path).name, "taken_at": backup.started_at.isoformat(),
                    "rule": f"beyond the newest {settings.backup_keep} and older than {settings.backup_keep_days:g} days",
                },
            )
            pruned.append(backup)
        return pruned
