"""/backup [NOTE], /backup verify ID, /backup setup-pitr, /backup base, /backups and /restore BACKUP_ID: backups that are
proven, a restore that loses nothing."""

from __future__ import annotations

import re
import time
import unicodedata
from pathlib import Path

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from bot.frame import blocks
from bot.backups.service import Backups
from bot.backups import archive
from bot.backups.model import BASE, OK, Backup
from bot.backups.flows import BackupSource, Restore, kept_copies, recover
from bot.backups import undo as row_undo
from bot.stack.compose import StackError
from bot.frame.humanize import ago, duration, size
from bot.frame.durations import MomentField
from bot.frame.registry import CommandError, Option, Reply, SetByCheck, command
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


PITR_WORDS = ("setup-pitr", "base")  # turn continuous archiving on; take a base backup


class BackupArgs(BaseModel):
    words: list[str] = Field([], description=f"a note of at most {NOTE_LIMIT} characters, verify and a backup's number, "
                             "setup-pitr or base", examples=["before the migration"])

    @field_validator("words")
    @classmethod
    def _shape(cls, words: list[str]) -> list[str]:
        if len(words) == 1 and words[0] in PITR_WORDS:  # alone; with more words they begin a note
            return words
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
    def pitr(self) -> str | None:
        """setup-pitr or base (point-in-time recovery), or None."""
        return self.words[0] if len(self.words) == 1 and self.words[0] in PITR_WORDS else None

    @property
    def note(self) -> str | None:
        return " ".join(self.words) or None


def _check_backup(ctx: Ctx, args: BackupArgs) -> None:
    if args.verify is not None:
        if _existing(ctx, args.verify).kind == BASE:
            raise CommandError(f"Backup #{args.verify} is a base backup: /backup verify proves dumps; /backups shows what the archive can restore.")
    else:
        ctx.backups_or_refuse()
    if args.pitr == "setup-pitr":
        frozen = ctx.duties.freezes.frozen()  # /backup itself runs in a freeze; this use restarts PostgreSQL
        if frozen is not None:
            raise CommandError(f"/backup setup-pitr is refused: changes are {frozen}; it restarts PostgreSQL, so ask after the freeze.")
        try:
            archive.Setup(ctx.backups_or_refuse(), ctx.stack, ctx.fault)
        except StackError as error:
            raise CommandError(str(error)) from None


def _describe_backup(ctx: Ctx, args: BackupArgs) -> list[str]:
    pitr, service = ctx.stack.config.pitr, ctx.stack.config.database.compose_service
    return [
        f"Turns on continuous archiving of `{ctx.stack.config.database.name}`'s PostgreSQL into {pitr.server_archive_dir} "
        f"(the bot reads it at {pitr.archive_dir}), a segment at least every {pitr.archive_timeout_seconds} s.",
        f"Restarts {service}: the app loses its database connections for a few seconds; then a base backup is taken.",
        "If a step fails, PostgreSQL's old settings are put back and it runs with them.",
    ]


def _recover_backup(ctx: Ctx, job) -> str:
    abandoned = ctx.backups_or_refuse().abandon(job.id)
    if job.text.split()[:1] == ["setup-pitr"]:
        return archive.recover_setup(ctx.stack)
    if abandoned:
        return f"Backup #{abandoned[0]} was not finished: it is marked failed and its partial file is gone. The database was not changed."
    return "The database was not changed; any scratch database of a verification is dropped."


@command(
    "backup",
    summary="Back up the app's database (pg_dump, checksummed); `verify ID` proves a backup by a test restore; "
    "`setup-pitr` turns on WAL archiving, `base` takes a base backup.",
    usage="/backup [NOTE | verify ID | setup-pitr | base]",
    role=Role.operator,
    args=BackupArgs,
    needs_approval=lambda args: args.pitr == "setup-pitr",  # it restarts PostgreSQL
    changes=True,
    # A backup reads the database and changes nothing the app serves: a freeze is the time to take one. Not setup-pitr.
    freezes=False,
    needs=lambda args: ("database", "pitr") if args.pitr else ("database",),
    check=_check_backup,
    describe=_describe_backup,
    recover=_recover_backup,
)
def backup(ctx: Ctx, args: BackupArgs) -> Reply:
    backups = ctx.backups_or_refuse()
    if args.verify is not None:
        return _verify(ctx, backups, args.verify)
    if args.pitr == "setup-pitr":
        return _setup_pitr(ctx, backups)
    if args.pitr == "base":
        return _base_backup(ctx, backups)
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


def _setup_pitr(ctx: Ctx, backups: Backups) -> Reply:
    try:
        setup = archive.Setup(backups, ctx.stack, ctx.fault, ctx.progress)
    except StackError as error:
        raise CommandError(str(error)) from None
    ok = setup.run(ctx.invocation.user_id, ctx.job_id)
    title = "✅ Continuous archiving is on" if ok else "❌ /backup setup-pitr did not finish"
    return Reply("\n".join([title, *setup.lines]), [blocks.section(f"*{title}*"), *blocks.sections(setup.lines)], in_channel=True, failed=not ok)


def _base_backup(ctx: Ctx, backups: Backups) -> Reply:
    started = time.monotonic()
    try:
        taken = archive.take_base_backup(backups, ctx.invocation.user_id, job_id=ctx.job_id, progress=ctx.progress)
    except StackError as error:
        raise CommandError(f"The base backup failed, and no file was left: {error}") from None
    lines = [
        f"Base backup #{taken.id} of {taken.database}'s server: {size(taken.size)} in {time.monotonic() - started:.1f} s, "
        f"from WAL segment {taken.wal_start_file} ({taken.wal_start_lsn})",
        f"SHA-256 `{taken.sha256}`",
        f"File {Path(taken.path).name}" + (f"; copy in {Path(taken.copy_path).parent}" if taken.copy_path else ""),
    ]
    pruned, segments = archive.prune_bases(backups, ctx.invocation, ctx.job_id)
    if pruned:
        lines.append("Retention deleted base backups " + ", ".join(f"#{b.id} ({_taken(ctx, b)})" for b in pruned) + ".")
    if segments:
        lines.append(f"Retention removed {len(segments)} archived WAL files older than the oldest kept base backup ({segments[0]} to {segments[-1]}).")
    title = f"✅ Base backup #{taken.id} taken"
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


@command("backups", summary="The backups, newest first, with their checksum and last verification, and the point-in-time window.",
         usage="/backups", role=Role.viewer)
def backups_list(ctx: Ctx, _args) -> Reply:
    backups = ctx.backups_or_refuse()
    found = backups.latest()
    window = []
    if ctx.stack.config.pitr is not None:
        now = utcnow()
        window, _trouble = archive.window_report(ctx.stack, ctx.store, now, lambda moment: _moment(ctx, moment, now))
    if not found:
        return Reply("\n".join([f"There is no backup of {ctx.stack.name} yet; /backup takes one.", *window]))
    lines = []
    for b in found:
        note = f' · "{b.note}"' if b.note else ""
        kind = {"safety": " · safety", BASE: f" · base backup, WAL from {b.wal_start_file}"}.get(b.kind, "")
        amount = f" · {size(b.size)}" if b.size is not None else ""
        lines.append(
            f"*#{b.id}* {_taken(ctx, b)}{amount} · <@{b.requested_by}>{kind}{note} · {_file_state(b)} · {_verification(b)}"
        )
    lines = [*window, *lines, *_kept_copies(ctx)]
    return Reply("\n".join(lines), [blocks.section(f"*Backups of {ctx.stack.name}*"), *blocks.sections(lines)])


def _kept_copies(ctx: Ctx) -> list[str]:
    """The databases a swap restore kept in place of a safety backup, until the duty drops them after retention."""
    try:
        kept = kept_copies(ctx.backups_or_refuse(), ctx.store, ctx.settings.backup_keep_days)
    except StackError as error:
        return [f"Kept copies of the database before a restore: unknown ({error})"]
    return [
        f"*Kept copy* `{k.name}` · {size(k.size)} · the data before /restore request #{k.job_id} brought back {k.restored} "
        f"({_when(ctx, k.kept_since)}) · dropped after {_when(ctx, k.dropped_after)}"
        for k in kept
    ]


def _when(ctx: Ctx, moment) -> str:
    return f"{moment.astimezone(ctx.tz):%Y-%m-%d %H:%M %Z}"


def _moment(ctx: Ctx, moment, now) -> str:
    """A time in the configured zone: "02:00:05" today, with its date before."""
    local = moment.astimezone(ctx.tz)
    return f"{local:%H:%M:%S}" if local.date() == now.astimezone(ctx.tz).date() else f"{local:%Y-%m-%d %H:%M:%S %Z}"


# ---- /restore BACKUP_ID ----------------------------------------------------------------------------------


class RestoreArgs(BaseModel):
    backup_id: BackupNumber | None = Field(
        None, description="a backup's number, as /backups lists them (with --table: where the rows come from, a backup or a time)",
        examples=[12],
    )
    table: Annotated[str | None, Option("--table", "TABLE")] = Field(
        None, description="undo rows of this table only, not the whole database", examples=["users"]
    )
    where: Annotated[str | None, Option("--where", "EXPR")] = Field(
        None, description="with --table: the rows to bring back (columns, comparisons, IN, IS NULL, BETWEEN, AND/OR/NOT)",
        examples=["id IN (4, 9)"], max_length=row_undo.MAX_WHERE,
    )
    rows_deleted_since: Annotated[MomentField | None, Option("--rows-deleted-since", "TIME")] = Field(
        None, description="with --table: the rows deleted since then (not before the backup)"
    )
    from_time: Annotated[MomentField | None, SetByCheck()] = None  # FROM a time rather than a backup (with --table)
    to: Annotated[str | None, Option("--to", "TIME")] = Field(
        None, description="a point in time, such as 2026-12-05T14:03:05 (ISO 8601, in the bot's zone or with an offset)")
    before: Annotated[str | None, Option("--before", "INC-N")] = Field(None, description="just before an incident started")
    before_release: Annotated[str | None, Option("--before-release", "N")] = Field(None, description="just before a release was deployed")

    @model_validator(mode="before")
    @classmethod
    def _from(cls, data: object) -> object:
        """With --table, FROM may be a time instead of a backup's number."""
        if isinstance(data, dict) and data.get("table") and isinstance(data.get("backup_id"), str) \
                and not data["backup_id"].isdigit():
            data = {**data, "from_time": data["backup_id"], "backup_id": None}
        return data

    @model_validator(mode="after")
    def _shape(self) -> "RestoreArgs":
        moments = [self.to is not None, self.before is not None, self.before_release is not None]
        if self.table is None:
            if self.where is not None or self.rows_deleted_since is not None:
                raise ValueError("--where and --rows-deleted-since undo rows of one table: add --table TABLE")
            given = [self.backup_id is not None, *moments]
            if sum(given) == 0:
                raise ValueError("BACKUP_ID is missing")  # as the frame says it of a missing argument
            if sum(given) > 1:
                raise ValueError("give one of BACKUP_ID, --to TIME, --before INC-N or --before-release N")
            return self
        if any(moments):
            raise ValueError("--table takes where its rows come from as FROM (a backup's number or a time), not --to, --before or --before-release")
        if (self.where is None) == (self.rows_deleted_since is None):
            raise ValueError('--table takes either --where "EXPR" or --rows-deleted-since TIME, to say which rows')
        if self.backup_id is None and self.from_time is None:
            raise ValueError("say where the rows come from: a backup's number or a time, such as /restore --table users --where \"id = 4\" 12")
        return self


def _check_restore(ctx: Ctx, args: RestoreArgs) -> None:
    if args.table is not None:
        return _check_undo(ctx, args)
    if restore_to.wanted(args):
        return restore_to.check(ctx, args, lambda: _check_services(ctx))
    backup = _existing(ctx, args.backup_id)
    if ctx.stack.compose is None:
        raise CommandError("The stack file names no Compose project, so /restore cannot stop the app services.")
    if backup.state != OK:
        raise CommandError(f"Backup #{backup.id} is {backup.state}; only a complete backup can be restored (/backups lists them).")
    if backup.kind == BASE:
        raise CommandError(f"Backup #{backup.id} is a base backup for point-in-time restores, not a dump; /backups lists the dumps.")
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
    if args.table is not None:
        return _undo(ctx, args).describe(_undo_ask(ctx, args))
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
        f"Replaces database `{ctx.stack.config.database.name}` on {ctx.stack.name}: the backup is restored into a new database beside "
        f"it while the app keeps running, then {', '.join(ctx.settings.restore_services)} will be stopped for the swap by rename; "
        f"the data it replaces is kept as a copy for {ctx.settings.backup_keep_days:g} days (when a swap cannot be made, a safety "
        f"backup is taken first and the restore goes in place).",
    ]


@command(
    "restore",
    summary="Replace the app's database with a verified backup or with its state at a moment, by a swap keeping the data it replaces; or, with --table, undo rows of one table.",
    usage='/restore BACKUP_ID | --to TIME | --before INC-N | --before-release N | --table TABLE (--where "EXPR" | --rows-deleted-since TIME) FROM',
    role=Role.operator,
    args=RestoreArgs,
    needs_approval=True,
    needs=("database",),
    check=_check_restore,
    describe=_describe_restore,
    recover=lambda ctx, job: (row_undo.recover(ctx.backups_or_refuse(), ctx.store, job) if (job.arguments or {}).get("table")
                              else restore_to.recover(ctx, job) or recover(ctx.backups_or_refuse(), ctx.stack, ctx.store, job)),
)
def restore(ctx: Ctx, args: RestoreArgs) -> Reply:
    if args.table is not None:
        return _run_undo(ctx, args)
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
    ok = run.run(BackupSource(run.backups, backup))
    title = f"✅ Restored backup #{backup.id} into {backup.database}" if ok else f"❌ The restore of backup #{backup.id} failed"
    return Reply("\n".join([title, *run.lines]), [blocks.section(f"*{title}*"), *blocks.sections(run.lines)], in_channel=True, failed=not ok)


# ---- /restore --table T (--where "EXPR" | --rows-deleted-since TIME) FROM: undo rows (bot/backups/undo.py) -----------


def _undo(ctx: Ctx, args: RestoreArgs) -> row_undo.RowUndo:
    return row_undo.RowUndo(ctx.backups_or_refuse(), ctx.store, ctx.stack.name, ctx.job_id, ctx.progress, ctx.fault)


def _undo_ask(ctx: Ctx, args: RestoreArgs) -> row_undo.UndoAsk:
    now = utcnow()
    return row_undo.UndoAsk(
        table=args.table, where=args.where, backup=_existing(ctx, args.backup_id) if args.backup_id is not None else None,
        deleted_since=args.rows_deleted_since.resolve(ctx.tz, now) if args.rows_deleted_since is not None else None,
        target=args.from_time.resolve(ctx.tz, now) if args.from_time is not None else None,
    )


def _check_undo(ctx: Ctx, args: RestoreArgs) -> None:
    ask = _undo_ask(ctx, args)
    if ask.backup is not None and ask.backup.state != OK:
        raise CommandError(f"Backup #{ask.backup.id} is {ask.backup.state}; only a complete backup can be restored (/backups lists them).")
    if ask.backup is not None and ask.backup.database != ctx.stack.config.database.name:
        raise CommandError(f"Backup #{ask.backup.id} is of database {ask.backup.database}, not {ctx.stack.config.database.name}.")
    try:
        _undo(ctx, args).check(ask)
    except StackError as error:
        raise CommandError(str(error)) from None


def _run_undo(ctx: Ctx, args: RestoreArgs) -> Reply:
    ask = _undo_ask(ctx, args)
    ok, lines = _undo(ctx, args).run(ask)
    title = (f"✅ Rows of {args.table} written back from {ask.source_label}" if ok
             else f"❌ The undo of rows of {args.table} from {ask.source_label} failed")
    return Reply("\n".join([title, *lines]), [blocks.section(f"*{title}*"), *blocks.sections(lines)], in_channel=True, failed=not ok)
