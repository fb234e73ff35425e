"""Continuous archiving of the app's PostgreSQL: turning it on, base backups, and what the archive can restore.

`/backup setup-pitr` sets `archive_mode`, `archive_command` (which never overwrites a segment) and
`archive_timeout` with ALTER SYSTEM, restarts the [database] service, proves that a switched segment arrives in
the archive and takes the first base backup; each step has its way back to the settings PostgreSQL had.

A base backup is a tar of the data directory taken between `pg_backup_start` and `pg_backup_stop` (the
low-level API: it needs no replication entry in pg_hba.conf, which `pg_basebackup` does), with the
`backup_label` PostgreSQL returns appended as the tar's last member; it is written to the backup location like
a dump (hidden temporary file, SHA-256 on the way, renamed when complete). Its WAL comes from the archive.

`Archive` reads the archive folder: the window of times a restore can reach (since the end of the oldest base
backup from which every segment to the newest is archived), the gaps (a missing segment name between a base
backup's first segment and the newest) and whether a given time is reachable, with the base backup to start from.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import psycopg
from psycopg import sql
from sqlalchemy import select

from bot.backups.model import BASE, FAILED, OK, TAKING, Backup
from bot.backups.service import AtomicFile, BackupError, Progress, _quiet, private_directory
from bot.backups.tools import MAINTENANCE_APP, ContainerTools, last_lines
from bot.frame.faults import reached
from bot.frame.humanize import duration, elapsed, size as human_size
from bot.frame.redact import redact
from bot.stack.compose import StackError
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.backups.service import Backups
    from bot.frame.config import PitrSection
    from bot.stack.stack import Stack
    from bot.store.engine import Store

log = logging.getLogger(__name__)

SEGMENT_BYTES = 16 * 1024 * 1024  # PostgreSQL's default wal_segment_size; the archive's own files say otherwise
LOG_BYTES = 1 << 32  # a WAL file name's middle eight digits count 4 GiB "logs", its last eight the segments within one
WAL_NAME = re.compile(r"[0-9A-F]{24}")
LSN = re.compile(r"([0-9A-F]{1,8})/([0-9A-F]{1,8})")
SERVER_WAIT_SECONDS = 90.0  # how long a restarted PostgreSQL may take to accept connections again
# What a base backup leaves out of the data directory (PostgreSQL's documentation, "Making a Base Backup Using the
# Low Level API"): the WAL (it comes from the archive), the running server's own files, and temporary ones.
BASE_EXCLUDES = [
    "./pg_wal/*", "./postmaster.pid", "./postmaster.opts", "./backup_label", "./tablespace_map", "./pg_replslot/*",
    "./pg_dynshmem/*", "./pg_notify/*", "./pg_serial/*", "./pg_snapshots/*", "./pg_stat_tmp/*", "./pg_subtrans/*",
    "*/pgsql_tmp*",
]
SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_timeout")


class ArchiveError(StackError):
    """The archive cannot do what was asked; one sentence for the user."""


# ---- WAL segment names: timeline, log, segment, eight hex digits each ----------------------------------------------


def segment_name(timeline: int, number: int, segment_bytes: int = SEGMENT_BYTES) -> str:
    """The file name of the number-th segment of a timeline (number = byte position // segment size)."""
    per_log = LOG_BYTES // segment_bytes
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def parse_segment(name: str, segment_bytes: int = SEGMENT_BYTES) -> tuple[int, int]:
    """(timeline, number) of a segment's file name."""
    if not WAL_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a WAL segment's name")
    per_log = LOG_BYTES // segment_bytes
    return int(name[:8], 16), int(name[8:16], 16) * per_log + int(name[16:], 16)


def next_segment(name: str, segment_bytes: int = SEGMENT_BYTES) -> str:
    timeline, number = parse_segment(name, segment_bytes)
    return segment_name(timeline, number + 1, segment_bytes)


def lsn_bytes(lsn: str) -> int:
    match = LSN.fullmatch(lsn.strip().upper())
    if match is None:
        raise ValueError(f"{lsn!r} is not a WAL location")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def segment_of(lsn: str, timeline: int, segment_bytes: int = SEGMENT_BYTES) -> str:
    """The segment that holds a WAL location (as pg_walfile_name names it, for a location not on a boundary)."""
    return segment_name(timeline, lsn_bytes(lsn) // segment_bytes, segment_bytes)


def utc(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


# ---- what the archive holds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    name: str
    timeline: int
    number: int
    archived_at: datetime  # when its copy was written (its file's modification time)


@dataclass(frozen=True)
class Gap:
    """Missing segment names between a base backup's first segment and the newest archived one."""

    first: str  # the first missing name
    last: str  # the last missing name of this run
    count: int
    broken_from: datetime | None  # no restore from a base backup before the gap reaches a time after this
    broken_until: datetime | None  # the end of the first base backup taken after the gap; None: none yet
    base_after: int | None  # that base backup's number

    def sentence(self, show: Callable[[datetime], str] = utc) -> str:
        missing = f"WAL segment {self.first} is missing" if self.count == 1 else (
            f"{self.count} WAL segments, {self.first} to {self.last}, are missing"
        )
        since = f"from {show(self.broken_from)}" if self.broken_from else "after the base backups before it"
        until = (
            f"until base backup #{self.base_after} ended ({show(self.broken_until)})" if self.broken_until
            else "on, until a base backup is taken after it (/backup base)"
        )
        return f"🔴 Gap in the WAL archive: {missing}; no restore can reach a time {since} {until}."


@dataclass(frozen=True)
class Window:
    since: datetime | None  # the earliest time reachable through an unbroken archive to the newest segment
    newest: datetime | None  # the newest archived change: when the newest segment was archived
    gaps: list[Gap]
    bases: int  # complete base backups in the catalogue
    segments: int

    def line(self, now: datetime, show: Callable[[datetime], str] = utc) -> str:
        """The window in one line: "restorable to any second since 02:00; newest archived change 40 s old"."""
        if self.newest is None:
            return "Point-in-time: the WAL archive holds no segment yet."
        age = f"newest archived change {duration(max((now - self.newest).total_seconds(), 0))} old"
        if self.bases == 0:
            return f"Point-in-time: no base backup yet (/backup base takes one); {age}."
        if self.since is None:
            reachable = [gap.broken_from for gap in self.gaps if gap.broken_from]
            upto = f"only up to {show(reachable[0])}, before the gap" if reachable else "to no time, because of the gap"
            return f"🔴 Point-in-time: restorable {upto}; {age}."
        return f"Point-in-time: restorable to any second since {show(self.since)}; {age}."


class Archive:
    """The WAL archive folder (as the bot reads it) and the base backups of the catalogue."""

    def __init__(self, pitr: "PitrSection", store: "Store", stack_name: str, database: str):
        self.pitr, self._store, self._stack_name, self._database = pitr, store, stack_name, database
        self.directory = Path(pitr.archive_dir)
        self.segment_bytes = SEGMENT_BYTES  # until the archive's own files say otherwise

    def _files(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.directory) as entries:
                return [entry for entry in entries if entry.is_file(follow_symlinks=False)]
        except OSError as error:
            raise ArchiveError(f"The WAL archive {self.directory} cannot be read: {error.strerror}.") from None

    def segments(self) -> list[Segment]:
        """The complete segments, oldest first; a file still being copied (shorter than the others) is left out."""
        found = [(entry.name, entry.stat(follow_symlinks=False)) for entry in self._files() if WAL_NAME.fullmatch(entry.name)]
        if not found:
            return []
        sizes = Counter(stat.st_size for _name, stat in found)
        common = max(sizes, key=lambda size: (sizes[size], size))
        self.segment_bytes = common if common > 0 and LOG_BYTES % common == 0 else SEGMENT_BYTES
        segments = []
        for name, stat in found:
            if stat.st_size != self.segment_bytes:
                continue
            timeline, number = parse_segment(name, self.segment_bytes)
            segments.append(Segment(name, timeline, number, datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return sorted(segments, key=lambda s: (s.timeline, s.number))

    def bases(self) -> list[Backup]:
        """The complete base backups of this database, oldest first."""
        with self._store.session() as session:
            return list(
                session.scalars(
                    select(Backup)
                    .where(Backup.stack == self._stack_name, Backup.database == self._database, Backup.kind == BASE,
                           Backup.state == OK, Backup.base_ended_at.is_not(None), Backup.wal_start_file.is_not(None))
                    .order_by(Backup.base_ended_at)
                )
            )

    # ---- the window and its gaps ----------------------------------------------------------------------------

    def _survey(self) -> tuple[list[Segment], list[Backup], list[Gap], dict[int, int]]:
        """Segments of the newest timeline, base backups of it, the gaps, and each base backup's first segment number."""
        segments, bases = self.segments(), self.bases()
        if not segments:
            return [], bases, [], {}
        timeline = segments[-1].timeline
        segments = [s for s in segments if s.timeline == timeline]
        starts = {}
        for base in bases:
            base_timeline, number = parse_segment(base.wal_start_file, self.segment_bytes)
            if base_timeline == timeline:
                starts[base.id] = number
        bases = [base for base in bases if base.id in starts]
        if not bases:
            return segments, bases, [], starts
        present = {s.number: s for s in segments}
        newest = segments[-1].number
        gaps, missing_from = [], None
        for number in range(min(starts.values()), newest + 2):
            if number not in present and number <= newest:
                missing_from = number if missing_from is None else missing_from
                continue
            if missing_from is None:
                continue
            before = max((s for s in segments if s.number < missing_from), key=lambda s: s.number, default=None)
            after = next((b for b in bases if starts[b.id] >= number), None)
            gaps.append(Gap(
                segment_name(timeline, missing_from, self.segment_bytes), segment_name(timeline, number - 1, self.segment_bytes),
                number - missing_from, before.archived_at if before else None,
                after.base_ended_at if after else None, after.id if after else None,
            ))
            missing_from = None
        return segments, bases, gaps, starts

    def window(self) -> Window:
        segments, bases, gaps, starts = self._survey()
        if not segments:
            return Window(None, None, [], len(bases), 0)
        since = None
        for base in bases:  # oldest first: the first one with every segment from its start to the newest archived
            if not any(parse_segment(gap.last, self.segment_bytes)[1] >= starts[base.id] for gap in gaps):
                since = base.base_ended_at
                break
        return Window(since, segments[-1].archived_at, gaps, len(bases), len(segments))

    def check_reachable(self, target: datetime) -> Backup:
        """The base backup a restore to `target` starts from (the newest that ended before it), or ArchiveError
        saying in one sentence why the archive cannot reach it."""
        segments, bases, gaps, starts = self._survey()
        when = utc(target)
        if not segments:
            raise ArchiveError(f"{when} cannot be reached: the WAL archive {self.directory} holds no segment.")
        if not bases:
            raise ArchiveError(f"{when} cannot be reached: there is no base backup to start from yet (/backup base takes one).")
        if target < bases[0].base_ended_at:
            raise ArchiveError(
                f"{when} is before the oldest base backup (#{bases[0].id}) ended at {utc(bases[0].base_ended_at)}: "
                "the archive cannot reach it."
            )
        if target > segments[-1].archived_at:
            raise ArchiveError(
                f"{when} is past the newest archived change ({utc(segments[-1].archived_at)}): the archive cannot reach it yet."
            )
        base = [b for b in bases if b.base_ended_at <= target][-1]
        # The segments the recovery replays: from the base backup's first to the first one archived at or after target.
        last = next((s.number for s in segments if s.archived_at >= target), segments[-1].number)
        for gap in gaps:
            first, end = parse_segment(gap.first, self.segment_bytes)[1], parse_segment(gap.last, self.segment_bytes)[1]
            if end >= starts[base.id] and first <= last:
                missing = gap.first if gap.count == 1 else f"{gap.first} (and {gap.count - 1} after it)"
                since = f"after {utc(gap.broken_from)}" if gap.broken_from else f"after base backup #{base.id}"
                raise ArchiveError(
                    f"{when} cannot be reached: WAL segment {missing} is missing from the archive, which breaks every "
                    f"restore from base backup #{base.id} to a time {since}."
                )
        return base

    # ---- retention -------------------------------------------------------------------------------------------

    def prune_segments(self) -> list[str]:
        """Archived files older than the oldest kept base backup's first segment: no restore can use them."""
        bases = self.bases()
        if not bases:
            return []
        self.segments()  # learns the segment size
        oldest = min(parse_segment(base.wal_start_file, self.segment_bytes) for base in bases)
        removed = []
        for entry in self._files():
            name = entry.name[:24]
            if not WAL_NAME.fullmatch(name) or (entry.name != name and not entry.name.endswith((".backup", ".partial"))):
                continue
            if parse_segment(name, self.segment_bytes) < oldest:
                try:
                    os.unlink(entry.path)
                except OSError as error:
                    log.warning("retention could not remove %s from the WAL archive: %s", entry.name, error.strerror)
                    continue
                removed.append(entry.name)
        return sorted(removed)


NO_PITR = "The stack file has no [pitr] section; README.md shows one under \"Backups and restores\"."


def archive_for(stack: "Stack", store: "Store") -> Archive:
    if stack.config.pitr is None:
        raise ArchiveError(NO_PITR)
    return Archive(stack.config.pitr, store, stack.name, stack.config.database.name)


# ---- the server's side: its settings, its archiver ------------------------------------------------------------


def connect(stack: "Stack", timeout: int = 10) -> psycopg.Connection:
    return psycopg.connect(stack.config.database.dsn, connect_timeout=timeout, autocommit=True, application_name=MAINTENANCE_APP)


def archiving_state(stack: "Stack") -> tuple[bool, str | None]:
    """(archiving is on, a sentence when the archiver is failing or the server cannot be asked)."""
    try:
        with connect(stack, timeout=5) as conn:
            mode = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
            failed_wal, failed_at, archived_at = conn.execute(
                "SELECT last_failed_wal, last_failed_time, last_archived_time FROM pg_stat_archiver"
            ).fetchone()
    except psycopg.Error as error:
        return False, f"PostgreSQL could not be asked whether it archives: {str(error).splitlines()[0][:200]}"
    on = mode in ("on", "always")
    if on and failed_at is not None and (archived_at is None or failed_at > archived_at):
        return True, f"🔴 The archiver is failing: segment {failed_wal} could not be archived ({utc(failed_at)}); the server log says why."
    return on, None


def _archive_command(pitr: "PitrSection") -> str:
    """Never overwrites a segment, and a segment is either whole in the archive or not there: copied under a temporary
    name and renamed (a server that crashed mid-copy leaves a .part, never a short segment a restore would trust).
    A segment already archived with the same bytes is success (PostgreSQL retries one whose archiving it did not get
    to record, and a plain `test ! -f` would then fail it for ever and stall the archive); different bytes fail."""
    directory = pitr.server_archive_dir.rstrip("/") or ""
    return f"(test ! -f {directory}/%f && cp %p {directory}/%f.part && mv {directory}/%f.part {directory}/%f) || cmp -s %p {directory}/%f"


# ---- base backups ------------------------------------------------------------------------------------------------


class _HeldBack:
    """Writes a tar stream but its last 1024 bytes (GNU tar's end-of-archive with -b 1), so members can follow."""

    END = 2 * tarfile.BLOCKSIZE

    def __init__(self, out: AtomicFile):
        self._out, self._tail = out, b""

    def write(self, chunk: bytes) -> None:
        data = self._tail + chunk
        if len(data) > self.END:
            self._out.write(data[: -self.END])
            data = data[-self.END :]
        self._tail = data

    def finish(self, members: dict[str, bytes]) -> None:
        if self._tail != b"\0" * self.END:
            raise BackupError("tar's output did not end as a tar archive ends.")
        for name, data in members.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            info.uname = info.gname = "postgres"
            self._out.write(info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * ((-len(data)) % tarfile.BLOCKSIZE))
        self._out.write(b"\0" * self.END)


def _label_start(label: str) -> tuple[str, str]:
    """(start LSN, start segment) from a backup_label's "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"."""
    match = re.search(r"^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)$", label, re.MULTILINE)
    if match is None:
        raise BackupError("PostgreSQL's backup_label names no start location.")
    return match.group(1), match.group(2)


def take_base_backup(backups: "Backups", requested_by: str, *, note: str | None = None, job_id: int | None = None,
                     progress: Progress = _quiet) -> Backup:
    """A base backup (kind "base"): the data directory between pg_backup_start and pg_backup_stop, its backup_label
    appended, streamed to the backup location and checksummed; complete once its last WAL segment is archived."""
    archive = archive_for(backups._stack, backups._store)
    if not isinstance(backups.tools, ContainerTools):
        raise ArchiveError("A base backup reads the data directory in the PostgreSQL container; the [database] section names no compose_service.")
    on, trouble = archiving_state(backups._stack)
    if not on:
        raise ArchiveError(trouble or "PostgreSQL does not archive its WAL: /backup setup-pitr turns it on.")
    started_at, started = utcnow(), time.monotonic()
    backup = Backup(stack=backups._stack.name, database=backups.database, state=TAKING, kind=BASE, requested_by=requested_by,
                    note=note, job_id=job_id, started_at=started_at)
    with backups._store.session.begin() as session:
        session.add(backup)
        session.flush()
        backup_id = backup.id
    out = None
    try:
        out = AtomicFile(private_directory(backups._settings.backup_directory) / f"{backups.database}-{started_at:%Y%m%dT%H%M%SZ}-{backup_id}.base.tar")
        with connect(backups._stack) as conn:  # the backup lasts as long as this session: closing it aborts the backup
            data_directory, version = conn.execute("SELECT current_setting('data_directory'), current_setting('server_version')").fetchone()
            conn.execute("SELECT pg_backup_start(%s, true)", (f"flowstate base backup #{backup_id}",))
            base_started_at = utcnow()
            # One line, not a running byte count: a progress report that waits on Slack would hold the tar stream up.
            progress(f"Base backup #{backup_id}: copying the data directory…")
            writer = _HeldBack(out)
            argv = ["tar", "-b", "1", "-cf", "-", "-C", data_directory, *(f"--exclude={p}" for p in BASE_EXCLUDES),
                    "--warning=no-file-changed", "--warning=no-file-removed", "--warning=no-file-shrank", "."]
            outcome = backups.tools.stream(argv, writer.write)
            if outcome.exit_code not in (0, 1):  # 1: a file changed while it was read, which the WAL replay repairs
                raise BackupError(f"tar failed {backups.tools.where} (exit code {outcome.exit_code}): {last_lines(outcome.stderr)}")
            stop_lsn, label, tablespaces = conn.execute("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)").fetchone()
            base_ended_at = utcnow()
            end_segment = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", (stop_lsn,)).fetchone()[0]
        writer.finish({"backup_label": label.encode(), **({"tablespace_map": tablespaces.encode()} if tablespaces else {})})
        start_lsn, start_file = _label_start(label)
        progress(f"Base backup #{backup_id}: waiting for its last WAL segment {end_segment} in the archive…")
        _wait_for_segment(archive, end_segment, backups._stack.config.pitr.archive_timeout_seconds + 30.0)
        out.commit()
        copy_path = backups._copy(out.final, out.sha256.hexdigest(), progress)
    except BaseException as error:
        if out is not None:
            out.discard()
        reason = f"the connection to PostgreSQL failed: {str(error).splitlines()[0]}" if isinstance(error, psycopg.Error) else str(error)
        backups._update(backup_id, state=FAILED, finished_at=utcnow(), error=redact(reason)[:2000] or type(error).__name__)
        if isinstance(error, psycopg.Error):
            raise BackupError(reason) from None
        raise
    backups._update(
        backup_id, state=OK, finished_at=utcnow(), path=str(out.final), copy_path=copy_path, size=out.size,
        sha256=out.sha256.hexdigest(), duration_ms=round((time.monotonic() - started) * 1000), server_version=version,
        wal_start_file=start_file, wal_start_lsn=start_lsn, base_started_at=base_started_at, base_ended_at=base_ended_at,
    )
    return backups.get(backup_id)


def _wait_for_segment(archive: Archive, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(segment.name == name for segment in archive.segments()):
        if time.monotonic() >= deadline:
            raise ArchiveError(f"WAL segment {name} did not arrive in the archive {archive.directory} within {timeout:.0f} s.")
        time.sleep(0.5)


def prune_bases(backups: "Backups", invocation, job_id: int | None) -> tuple[list[Backup], list[str]]:
    """The base backups' retention (the dumps' rule, applied to base backups alone), then the segments no kept
    base backup needs."""
    pruned = backups.prune(invocation, job_id, kind=BASE)
    return pruned, archive_for(backups._stack, backups._store).prune_segments()


# ---- /backup setup-pitr ------------------------------------------------------------------------------------------


class Setup:
    """Archiving on: settings, restart, proof, first base backup. Each step that fails puts the old settings back
    and leaves PostgreSQL running with them, and says so."""

    def __init__(self, backups: "Backups", stack: "Stack", fault: Callable[[str], None], progress: Progress = _quiet):
        if stack.config.pitr is None:
            raise ArchiveError(NO_PITR)
        if stack.compose is None or not stack.config.database.compose_service:
            raise ArchiveError("/backup setup-pitr restarts PostgreSQL through Compose; the [database] section names no compose_service.")
        self._backups, self._stack, self._fault, self._progress = backups, stack, fault, progress
        self.pitr = stack.config.pitr
        self.service = stack.config.database.compose_service
        self.archive = Archive(self.pitr, backups._store, stack.name, backups.database)
        self.lines: list[str] = []
        self._old_auto: dict[str, str] = {}  # our settings as postgresql.auto.conf held them before
        self._old_running: dict[str, str] = {}
        self._auto_conf: bytes | None = None
        self._owner: tuple[int, int] | None = None
        self._data_directory = ""

    def _say(self, line: str) -> None:
        self.lines.append(line)
        self._progress(line)

    def _connect(self) -> psycopg.Connection:
        return connect(self._stack)

    def wanted(self) -> dict[str, str]:
        return {
            "archive_mode": "on", "archive_command": _archive_command(self.pitr),
            "archive_timeout": str(self.pitr.archive_timeout_seconds),
        }

    def run(self, requested_by: str, job_id: int | None) -> bool:
        started = time.monotonic()
        try:
            self._read_before()
        except (psycopg.Error, StackError) as error:
            self._say(f"🔴 1. PostgreSQL's settings could not be read: {_first(error)}")
            self._say("Nothing was changed.")
            return False
        already = self._old_running.get("archive_mode") in ("on", "always") and self._old_running.get("archive_command") == self.wanted()["archive_command"]
        if already:
            self._say(f"🟢 1. PostgreSQL archives into {self.pitr.server_archive_dir} already; nothing to change or restart.")
        else:
            try:
                self._alter(self._target_settings())
            except psycopg.Error as error:
                self._say(f"🔴 1. ALTER SYSTEM failed: {_first(error)}")
                self._say(self._put_back())
                return False
            self._say(f"🟢 1. Set wal_level, archive_mode, archive_command and archive_timeout with ALTER SYSTEM ({elapsed(started)})")
            reached(self._fault, "setup-pitr:after_settings")
            started = time.monotonic()
            problem = self._restart() or self._archiving_after_restart()
            if problem is not None:
                self._say(f"🔴 2. {problem}")
                self._say(self._put_back())
                return False
            self._say(f"🟢 2. Restarted {self.service}; PostgreSQL archives now ({elapsed(started)})")
            reached(self._fault, "setup-pitr:after_restart")
        started = time.monotonic()
        try:
            segment = self._prove()
        except (psycopg.Error, StackError) as error:
            self._say(f"🔴 3. Archiving does not work: {_first(error)}")
            self._say(self._put_back() if not already else "The settings were not changed by this request; they are left as they were.")
            return False
        self._say(f"🟢 3. Switched to a new WAL segment: {segment} arrived in {self.archive.directory} ({elapsed(started)})")
        started = time.monotonic()
        try:
            base = take_base_backup(self._backups, requested_by, note="first base backup (setup-pitr)", job_id=job_id, progress=self._progress)
        except StackError as error:
            self._say(f"🔴 4. The first base backup failed: {error}")
            self._say("Archiving stays on (it works); /backup base takes a base backup, and the nightly duty takes one too.")
            return False
        self._say(
            f"🟢 4. Base backup #{base.id}: {human_size(base.size)}, SHA-256 `{base.sha256}`, from WAL segment {base.wal_start_file} "
            f"({elapsed(started)})"
        )
        self._say(f"Point-in-time restores can reach any second from {utc(base.base_ended_at)} on.")
        return True

    # ---- the steps -------------------------------------------------------------------------------------------

    def _read_before(self) -> None:
        with self._connect() as conn:
            self._data_directory = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
            rows = conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(SETTINGS),)).fetchall()
            self._old_running = dict(rows)
            rows = conn.execute(
                "SELECT name, setting FROM pg_file_settings WHERE sourcefile LIKE %s AND name = ANY(%s) AND error IS NULL",
                ("%/postgresql.auto.conf", list(SETTINGS)),
            ).fetchall()
            self._old_auto = dict(rows)
            self._auto_conf = conn.execute("SELECT pg_read_binary_file('postgresql.auto.conf')").fetchone()[0]
        # archive_command reads "(disabled)" while archive_mode is off: the configured one is in the files.
        owner = self._backups.tools.check(["stat", "-c", "%u %g", f"{self._data_directory}/postgresql.auto.conf"], "stat")
        uid, gid = owner.split()
        self._owner = (int(uid), int(gid))

    def _target_settings(self) -> dict[str, str]:
        wal_level = self._old_running.get("wal_level")
        return {"wal_level": wal_level if wal_level in ("replica", "logical") else "replica", **self.wanted()}

    def _alter(self, values: dict[str, str | None]) -> None:
        """ALTER SYSTEM SET (or RESET for None), then a reload for what does not need a restart."""
        with self._connect() as conn:
            for name, value in values.items():
                if value is None:
                    conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                else:
                    conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            conn.execute("SELECT pg_reload_conf()")

    def _restart(self) -> str | None:
        """Restart the database service and wait until PostgreSQL answers; what went wrong, or None."""
        self._progress(f"2. Restarting {self.service}…")
        try:
            self._stack.compose.restart([self.service])
        except StackError as error:
            return f"Restarting {self.service} failed: {error}"
        except Exception as error:  # the engine's own refusal (docker.errors.APIError)
            return f"Restarting {self.service} failed: {_first(error)}"
        return self._wait_for_server()

    def _archiving_after_restart(self) -> str | None:
        try:
            with self._connect() as conn:
                mode = conn.execute("SELECT current_setting('archive_mode')").fetchone()[0]
        except psycopg.Error as error:
            return f"PostgreSQL could not be asked after the restart: {_first(error)}"
        if mode not in ("on", "always"):
            return (
                f"PostgreSQL restarted with archive_mode {mode}: a setting on its command line or in postgresql.conf wins "
                "over ALTER SYSTEM."
            )
        return None

    def _wait_for_server(self) -> str | None:
        deadline = time.monotonic() + SERVER_WAIT_SECONDS
        while True:
            try:
                with connect(self._stack, timeout=3) as conn:
                    conn.execute("SELECT 1")
                return None
            except psycopg.Error:
                pass
            try:
                stopped = [c for _s, c in self._stack.compose.containers(self.service) if c.status in ("exited", "dead")]
            except StackError:
                stopped = []
            if stopped or time.monotonic() >= deadline:
                why = self._server_log()
                state = "exited" if stopped else f"did not accept connections within {SERVER_WAIT_SECONDS:.0f} s"
                return f"PostgreSQL {state} after the restart{': ' + why if why else ''}"
            time.sleep(0.5)

    def _server_log(self) -> str:
        try:
            lines = list(self._stack.compose.logs(self.service, tail=20))
        except StackError:
            return ""
        text = "".join(lines).splitlines()
        fatal = [line for line in text if "FATAL" in line or "PANIC" in line]
        return (fatal[-1] if fatal else (text[-1] if text else "")).strip()[:300]

    def _prove(self) -> str:
        """A switched segment arriving in the archive folder; its name."""
        self._progress("3. Switching to a new WAL segment and waiting for it in the archive…")
        with self._connect() as conn:
            conn.execute("SELECT pg_logical_emit_message(false, 'flowstate', 'setup-pitr')")
            name = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
            try:
                _wait_for_segment(self.archive, name, 30.0)
            except ArchiveError as error:
                failed = conn.execute("SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver").fetchone()
                why = f" (the archiver failed on {failed[0]} at {utc(failed[1])}: the server log says why)" if failed[1] else ""
                raise ArchiveError(f"{str(error).rstrip('.')}{why}.") from None
        return name

    # ---- the way back ------------------------------------------------------------------------------------------

    def _put_back(self) -> str:
        """The settings as they were, and PostgreSQL running with them; what state it is in, in one sentence."""
        old = {name: self._old_auto.get(name) for name in SETTINGS}
        try:
            with connect(self._stack, timeout=3) as conn:
                conn.execute("SELECT 1")
            reachable = True
        except psycopg.Error:
            reachable = False
        if reachable:
            try:
                self._alter(old)
            except psycopg.Error as error:
                return f"🔴 Putting the old settings back failed too ({_first(error)}): check postgresql.auto.conf by hand."
            if self._running_as_before():
                return "PostgreSQL runs with its old settings; the changes are undone (it was not restarted with them)."
            problem = self._restart()
            if problem is None and self._running_as_before():
                return f"{self.service} was restarted again: PostgreSQL runs with its old settings."
            return (
                f"🔴 The old settings are written back but PostgreSQL still runs with the new ones ({problem or 'after a restart'}); "
                f"/restart {self.service} applies them."
            )
        if self._auto_conf is None or self._owner is None:
            return f"🔴 PostgreSQL does not answer and its old settings were never read; /health shows {self.service}."
        try:
            self._stack.compose.put_owned_file(self.service, self._data_directory, "postgresql.auto.conf", self._auto_conf, *self._owner)
            running = [c for _s, c in self._stack.compose.containers(self.service) if c.status == "running"]
            (self._stack.compose.restart if running else self._stack.compose.start)([self.service])
        except Exception as error:  # StackError, or the engine's own refusal (docker.errors.APIError)
            return f"🔴 PostgreSQL does not answer, and its old postgresql.auto.conf could not be put back and started: {_first(error)}"
        problem = self._wait_for_server()
        if problem is None and self._running_as_before():
            return f"Its old postgresql.auto.conf is put back and {self.service} started again: PostgreSQL runs with its old settings."
        return f"🔴 Its old postgresql.auto.conf is put back, but PostgreSQL is not running with it: {problem or 'its settings differ'}."

    def _running_as_before(self) -> bool:
        try:
            with connect(self._stack, timeout=3) as conn:
                now = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (["wal_level", "archive_mode"],)).fetchall())
        except psycopg.Error:
            return False
        return all(now.get(name) == self._old_running.get(name) for name in ("wal_level", "archive_mode"))


def _first(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0][:300]


def window_report(stack: "Stack", store: "Store", now: datetime, show: Callable[[datetime], str] = utc) -> tuple[list[str], bool]:
    """What /backups and the daily report say of point-in-time recovery, and whether it is trouble (a gap in the
    archive, the archiver failing, the archive unreadable) that must be said loudly."""
    on, trouble = archiving_state(stack)
    if not on:
        return [trouble or "Point-in-time: PostgreSQL does not archive its WAL; /backup setup-pitr turns it on."], False
    try:
        window = archive_for(stack, store).window()
    except ArchiveError as error:
        return [f"🔴 {error}"], True
    lines = [window.line(now, show), *(gap.sentence(show) for gap in window.gaps)]
    if trouble:
        lines.append(trouble)
    return lines, bool(window.gaps or trouble)


def recover_setup(stack: "Stack") -> str:
    """What an interrupted /backup setup-pitr left. Settings written but not yet restarted with are undone (set to
    what the server runs with, which are the old ones); a server that restarted with them archives, and says so."""
    try:
        with connect(stack, timeout=5) as conn:
            rows = conn.execute(
                "SELECT name, setting, pending_restart FROM pg_settings WHERE name = ANY(%s)", (["wal_level", "archive_mode"],)
            ).fetchall()
            waiting = {name: setting for name, setting, pending in rows if pending}
            for name, setting in waiting.items():
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(setting)))
            mode = dict((name, setting) for name, setting, _pending in rows).get("archive_mode", "off")
    except psycopg.Error as error:
        return f"It was turning archiving on; PostgreSQL does not answer now ({_first(error)}): /health shows it, /backup setup-pitr starts over."
    if waiting:
        return (
            f"It was turning archiving on and had not restarted PostgreSQL: the settings waiting for a restart are undone, "
            f"and PostgreSQL runs with archive_mode {mode} as before; /backup setup-pitr starts over."
        )
    if mode in ("on", "always"):
        return "It was turning archiving on: PostgreSQL archives now; /backups shows the archive, and /backup base takes a base backup if none is listed."
    return f"It was turning archiving on: PostgreSQL runs with archive_mode {mode}, as before; /backup setup-pitr starts over."
