"""/backup [NOTE], /backup verify ID, /backups and /restore BACKUP_ID: backups that are proven, a restore that loses nothing."""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from bot.frame import blocks
from bot.backups.service import Backups
from bot.backups.model import OK, Backup
from bot.backups.flows import Restore, recover
from bot.stack.compose import StackError
from bot.frame.humanize import ago, duration, size
from bot.frame.registry import CommandError, Option, Reply, command
from bot.frame.roles import Role
from bot.store.engine import utcnow
from commands import restore_to
from commands.context import Ctx

NOTE_LIMIT = 200


def _backup_number(value: object) -> object:
    """A backup's number and nothing else: no sign, no decimals, no words after it."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,10}", value):
        raise ValueError(f"{value[:40]!r} is not a backup's number; /backups lists them, such as 12")
    if int(value) < 1 or int(value) > 2**31 - 1:
        raise ValueError(f"there is no backup #{value}; /backups lists them")
    return int(value)


BackupNumber = Annotated[int, BeforeValidator(_backup_number)]


def _existing(ctx: Ctx, backup_id: int) -> Backup:
    backup = ctx.backups_or_refuse().get(backup_id)
    if backup is None:
        raise CommandError(f"There is no backup #{backup_id} of {ctx.stack.name}; /backups lists them.")
    return backup


def _taken(ctx: Ctx, backup: Backup) -> str:
    return f"{backup.started_at.astimezone(ctx.tz):%Y-%m-%d %H:%M %Z}"


# ---- /backup [NOTE] and /backup verify ID ---------------------------------------------------------------


class BackupArgs(BaseModel):
    words: list[str] = Field([], description=f"a note of at most {NOTE_LIMIT} characters, or verify and a backup's number",
                             examples=["before the migration"])

    @field_validator("words")
    @classmethod
    def _shape(cls, words: list[str]) -> list[str]:
        if words[:1] == ["verify"]:
            if len(words) != 2:
                raise ValueError("verify takes the backup's number, such as /backup verify 12")
            return ["verify", str(_backup_number(words[1]))]
        note = " ".join(words)
        if len(note) > NOTE_LIMIT:
            raise ValueError(f"a note may be at most {NOTE_LIMIT} characters")
        if any(ch in "<>&`" or unicodedata.category(ch).startswith("C") for ch in note):
            raise ValueError("a note is plain words: no < > & ` or control characters")
        return words

    @property
    def verify(self) -> int | None:
        return int(self.words[1]) if self.words[:1] == ["verify"] else None

    @property
    def note(self) -> str | None:
        return " ".join(self.words) or None


def _check_backup(ctx: Ctx, args: BackupArgs) -> None:
    if args.verify is not None:
        _existing(ctx, args.verify)
    else:
        ctx.backups_or_refuse()


def _recover_backup(ctx: Ctx, job) -> str:
    abandoned = ctx.backups_or_refuse().abandon(job.id)
    if abandoned:
        return f"Backup #{abandoned[0]} was not finished: it is marked failed and its partial file is gone. The database was not changed."
    return "The database was not changed; any scratch database of a verification is dropped."


@command(
    "backup",
    summary="Back up the app's database (pg_dump, checksummed); `verify ID` proves a backup by a test restore.",
    usage="/backup [NOTE | verify ID]",
    role=Role.operator,
    args=BackupArgs,
    changes=True,
    freezes=False,  # a backup reads the database and changes nothing the app serves: a freeze is the time to take one
    needs=("database",),
    check=_check_backup,
    recover=_recover_backup,
)
def backup(ctx: Ctx, args: BackupArgs) -> Reply:
    backups = ctx.backups_or_refuse()
    if args.verify is not None:
        return _verify(ctx, backups, args.verify)
    started = time.monotonic()
    try:
        taken = backups.take(ctx.invocation.user_id, note=args.note, job_id=ctx.job_id, progress=ctx.progress)
    except StackError as error:
        raise CommandError(f"The backup failed, and no file was left: {error}") from None
    took = time.monotonic() - started
    lines = [
        f"Backup #{taken.id} of {taken.database}: {size(taken.size)} in {took:.1f} s ({size(taken.size / max(took, 1e-3))}/s), "
        f"PostgreSQL {taken.server_version}",
        f"SHA-256 `{taken.sha256}`",
        f"File {Path(taken.path).name}" + (f"; copy in {Path(taken.copy_path).parent}" if taken.copy_path else ""),
    ]
    pruned = backups.prune(ctx.invocation, ctx.job_id)
    if pruned:
        lines.append("Retention deleted " + ", ".join(f"#{b.id} ({_taken(ctx, b)})" for b in pruned) + ".")
    title = f"✅ Backup #{taken.id} taken"
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True)


def _verify(ctx: Ctx, backups: Backups, backup_id: int) -> Reply:
    backup = _existing(ctx, backup_id)
    try:
        ok, lines = backups.verify(backup, ctx.job_id, ctx.progress)
    except StackError as error:
        raise CommandError(f"Backup #{backup_id} failed verification: {error}") from None
    title = f"✅ Backup #{backup_id} verified by a test restore" if ok else f"❌ Backup #{backup_id} failed verification"
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=not ok)


# ---- /backups --------------------------------------------------------------------------------------------


def _file_state(backup: Backup) -> str:
    if backup.state != OK:
        reason = (backup.error or "no file").splitlines()[0][:120]
        return f"{backup.state}: {reason}"
    try:
        actual = Path(backup.path).stat().st_size
    except OSError:
        return "🔴 file missing"
    if actual != backup.size:
        return f"🔴 file is {size(actual)}, not {size(backup.size)}"
    return f"sha256 {backup.sha256[:12]}…, file present"


def _verification(backup: Backup) -> str:
    if backup.verified_at is None:
        return "never verified"
    mark = "🟢 verified" if backup.verified_ok else "🔴 verification failed"
    return f"{mark} {ago(backup.verified_at, utcnow())}"


@command("backups", summary="The backups, newest first, with their checksum and last verification.", usage="/backups", role=Role.viewer)
def backups_list(ctx: Ctx, _args) -> Reply:
    found = ctx.backups_or_refuse().latest()
    if not found:
        return Reply(f"There is no backup of {ctx.stack.name} yet; /backup takes one.")
    lines = []
    for b in found:
        note = f' · "{b.note}"' if b.note else ""
        kind = " · safety" if b.kind == "safety" else ""
        amount = f" · {size(b.size)}" if b.size is not None else ""
        lines.append(
            f"*#{b.id}* {_taken(ctx, b)}{amount} · <@{b.requested_by}>{kind}{note} · {_file_state(b)} · {_verification(b)}"
        )
    return Reply("\n".join(lines), [blocks.section(f"*Backups of {ctx.stack.name}*"), *blocks.sections(lines)])


# ---- /restore BACKUP_ID ----------------------------------------------------------------------------------


class RestoreArgs(BaseModel):
    backup_id: BackupNumber | None = Field(None, description="a backup's number, as /backups lists them", examples=[12])
    to: Annotated[str | None, Option("--to", "TIME")] = Field(
        None, description="a point in time, such as 2026-12-05T14:03:05 (ISO 8601, in the bot's zone or with an offset)")
    before: Annotated[str | None, Option("--before", "INC-N")] = Field(None, description="just before an incident started")
    before_release: Annotated[str | None, Option("--before-release", "N")] = Field(None, description="just before a release was deployed")

    @model_validator(mode="after")
    def _one(self) -> "RestoreArgs":
        given = [self.backup_id is not None, self.to is not None, self.before is not None, self.before_release is not None]
        if sum(given) == 0:
            raise ValueError("BACKUP_ID is missing")
        if sum(given) > 1:
            raise ValueError("give one of BACKUP_ID, --to TIME, --before INC-N or --before-release N")
        return self


def _check_restore(ctx: Ctx, args: RestoreArgs) -> None:
    if restore_to.wanted(args):
        return restore_to.check(ctx, args, lambda: _check_services(ctx))
    backup = _existing(ctx, args.backup_id)
    if ctx.stack.compose is None:
        raise CommandError("The stack file names no Compose project, so /restore cannot stop the app services.")
    if backup.state != OK:
        raise CommandError(f"Backup #{backup.id} is {backup.state}; only a complete backup can be restored (/backups lists them).")
    target = ctx.stack.config.database.name
    if backup.database != target:
        raise CommandError(f"Backup #{backup.id} is of database {backup.database}, not {target}; it cannot replace it.")
    _check_services(ctx)


def _check_services(ctx: Ctx) -> None:
    compose = ctx.stack.compose
    if compose is None:
        raise CommandError("The stack file names no Compose project, so /restore cannot stop the app services.")
    try:
        known = compose.services()
    except StackError as error:
        raise CommandError(str(error)) from None
    missing = [service for service in ctx.settings.restore_services if service not in known]
    if missing:
        raise CommandError(
            f"FLOWSTATE_RESTORE_SERVICES names {', '.join(missing)}, not services of {compose.project}; fix the setting first."
        )


def _describe_restore(ctx: Ctx, args: RestoreArgs) -> list[str]:
    if restore_to.wanted(args):
        return restore_to.describe(ctx, args)
    backup = ctx.backups_or_refuse().get(args.backup_id)
    if backup is None:
        return [f"Backup #{args.backup_id} is no longer in the catalogue."]
    kind = " (a safety backup)" if backup.kind == "safety" else ""
    return [
        f"*Backup #{backup.id}*{kind} of `{backup.database}`, taken {_taken(ctx, backup)} "
        f"({duration((utcnow() - backup.started_at).total_seconds())} ago) by <@{backup.requested_by}>",
        f"Size {size(backup.size or 0)} · SHA-256 `{backup.sha256}`",
        f"Note: {backup.note or '(none)'}",
        f"Replaces database `{ctx.stack.config.database.name}` on {ctx.stack.name}; a safety backup of it is taken first, and "
        f"{', '.join(ctx.settings.restore_services)} will be stopped while it runs.",
    ]


@command(
    "restore",
    summary="Replace the app's database with a verified backup (after a safety backup of it), or with its state at a moment.",
    usage="/restore BACKUP_ID | --to TIME | --before INC-N | --before-release N",
    role=Role.operator,
    args=RestoreArgs,
    needs_approval=True,
    needs=("database",),
    check=_check_restore,
    describe=_describe_restore,
    recover=lambda ctx, job: restore_to.recover(ctx, job) or recover(ctx.backups_or_refuse(), ctx.stack, ctx.store, job),
)
def restore(ctx: Ctx, args: RestoreArgs) -> Reply:
    if restore_to.wanted(args):
        ok, source, lines = restore_to.run(ctx, args)
        title = f"✅ Restored {source.label} into {ctx.stack.config.database.name}" if ok else f"❌ The restore of {source.label} failed"
        return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=not ok)
    try:
        run = Restore(ctx.backups_or_refuse(), ctx.stack, ctx.store, ctx.settings.restore_services, ctx.fault,
                      ctx.job_id, ctx.invocation.user_id, ctx.progress)
    except StackError as error:
        raise CommandError(str(error)) from None
    backup = _existing(ctx, args.backup_id)
    ok = run.run(backup)
    title = f"✅ Restored backup #{backup.id} into {backup.database}" if ok else f"❌ The restore of backup #{backup.id} failed"
    return Reply("\n".join([title, *run.lines]), [blocks.section(f"*{title}*"), *blocks.sections(run.lines)], in_channel=True, failed=not ok)
