"""Point-in-time recovery: a scratch PostgreSQL server, recovered to a moment, beside the live one.

The scratch instance is a second server in the [database] container: its data directory under
/var/lib/postgresql/data/flowstate-pitr-<job>/ (the live data's volume, so a base backup unpacks on the same
filesystem), its socket in its own directory there, no TCP port at all (listen_addresses = ''), archiving off (it
never writes into the live archive). It starts from a base backup's tar with recovery.signal, restore_command from
the WAL archive, recovery_target_time and recovery_target_action = 'promote', and is ready once promoted; when
recovery ends first, PostgreSQL's own reason is the error ("recovery ended before configured recovery target was
reached": the archive does not reach that far).

Every tool runs by argument list in the container (bot/backups/tools.py); the server runs as user postgres (setpriv);
the only values written into its settings are paths built here from a job's number and a time formatted here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bot.backups.tools import CHUNK, ContainerTools, PgTools, ToolError, last_lines
from bot.stack.compose import StackError

if TYPE_CHECKING:
    from bot.frame.config import DatabaseSection, PitrSection
    from bot.stack.compose import ComposeStack

log = logging.getLogger(__name__)

SCRATCH_ROOT = "/var/lib/postgresql/data"  # the live data's volume: the base backup unpacks on the same filesystem
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
SCRATCH_PORT = 5432  # names the socket file in the scratch's own directory; no TCP port is opened
RECOVERY_SECONDS = 6 * 3600.0  # how long a recovery may replay WAL before it is given up
RESTORE_OPTIONS = ["--no-owner", "--no-acl", "--no-comments"]
PARALLEL = 2  # pg_dump's and pg_restore's jobs when copying out of the scratch instance

Progress = Callable[[str], None]


class RecoveryError(StackError):
    """A recovery that cannot be made; nothing of the live server was touched."""


@dataclass(frozen=True)
class BaseBackup:
    """A base backup to start from (archive's kind "base" row): the tar of the data directory on the bot's machine, its
    backup_label the last member, no pg_wal content; its first WAL segment and when it ended."""

    path: Path
    start_segment: str
    ended_at: datetime
    backup_id: int | None = None

    @property
    def label(self) -> str:
        return f"base backup #{self.backup_id}" if self.backup_id else f"base backup {self.path.name}"


def postgres_time(moment: datetime) -> str:
    """A moment as recovery_target_time reads it, in UTC to the microsecond."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f+00")


# ---- the scratch instance ---------------------------------------------------------------------------------


class Scratch:
    """The scratch server of one job, `flowstate-pitr-<job>`, in the [database] service's container."""

    def __init__(self, compose: "ComposeStack", database: "DatabaseSection", pitr: "PitrSection", job_id: int):
        self._compose, self._db, self._pitr = compose, database, pitr
        self.tools: PgTools = ContainerTools(compose, database)
        self.name = f"flowstate-pitr-{int(job_id)}"
        self.dir = f"{SCRATCH_ROOT}/{self.name}"
        self.data, self.socket, self.log = f"{self.dir}/data", f"{self.dir}/socket", f"{self.dir}/server.log"

    # ---- making it ---------------------------------------------------------------------------------------

    def recover(self, base: BaseBackup, target: datetime, progress: Progress = lambda _text: None) -> None:
        """Unpack the base backup, recover to the target and promote; RecoveryError with PostgreSQL's reason if not.
        A failed recovery leaves no scratch behind."""
        try:
            self._unpack(base, target, progress)
            progress(f"Recovering {self.name} to {postgres_time(target)[:19]} UTC from the WAL archive…")
            self._start()
            self._wait_promoted()
        except BaseException:
            self._quietly(self.remove)
            raise

    def _root(self, argv: list[str], what: str) -> str:
        return self.tools.check(argv, what)

    def _unpack(self, base: BaseBackup, target: datetime, progress: Progress) -> None:
        self.remove()  # what a previous try of this job left
        self._root(["mkdir", "-p", "--", self.data, self.socket], "Making the scratch directory")
        try:
            source = base.path.open("rb")
        except OSError:
            raise RecoveryError(f"The file of {base.label} is missing ({base.path.name}).") from None
        with source:
            size = base.path.stat().st_size
            progress(f"Copying {base.label} into {self.name}…")
            self._compose.put_file(self._db.compose_service, self.dir, "base.tar", size, iter(lambda: source.read(CHUNK), b""))
        self._root(["tar", "-xf", f"{self.dir}/base.tar", "-C", self.data], f"Unpacking {base.label}")
        self._root(["rm", "-f", "--", f"{self.dir}/base.tar"], "Removing the copied tar")
        settings = "".join(f"{key} = '{value}'\n" for key, value in (
            ("listen_addresses", ""),  # no TCP port: only its own socket
            ("unix_socket_directories", self.socket),
            ("port", str(SCRATCH_PORT)),
            ("archive_mode", "off"),  # it never writes into the live archive
            ("shared_preload_libraries", ""),
            ("restore_command", f"cp {self._pitr.server_archive_dir}/%f %p"),
            ("recovery_target_time", postgres_time(target)),
            ("recovery_target_action", "promote"),
        ))
        # postgresql.auto.conf is replaced whole: the live server's ALTER SYSTEM settings (archive_command) stay behind.
        self._put("postgresql.auto.conf", settings.encode())
        self._put("recovery.signal", b"")
        self._root(["chown", "-R", "postgres:postgres", "--", self.dir], "Handing the scratch directory to postgres")
        self._root(["chmod", "0700", "--", self.data], "Closing the scratch data directory")

    def _put(self, name: str, content: bytes) -> None:
        self._compose.put_file(self._db.compose_service, self.data, name, len(content), [content])

    def _start(self) -> None:
        outcome, _out = self.tools.run([*AS_POSTGRES, "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "600", "-s", "start"])
        if outcome.exit_code != 0:
            raise RecoveryError(f"The recovery of {self.name} failed: {self.reason() or last_lines(outcome.stderr)}")

    def _wait_promoted(self) -> None:
        deadline = time.monotonic() + RECOVERY_SECONDS
        while True:
            outcome, out = self.tools.run(self._psql("postgres", "SELECT pg_is_in_recovery()"))
            if outcome.exit_code == 0 and out.strip() == "f":
                return
            if not self.running():
                raise RecoveryError(f"The recovery of {self.name} failed: {self.reason() or 'the server stopped'}.")
            if time.monotonic() > deadline:
                raise RecoveryError(f"The recovery of {self.name} did not finish in {RECOVERY_SECONDS / 3600:.0f} h.")
            time.sleep(0.5)

    def reason(self) -> str:
        """PostgreSQL's own words for why the scratch server stopped (its FATAL or PANIC line)."""
        _outcome, text = self.tools.run(["cat", "--", self.log])
        lines = [line.split("FATAL:", 1)[-1].split("PANIC:", 1)[-1].strip() for line in text.splitlines() if "FATAL:" in line or "PANIC:" in line]
        return lines[-1] if lines else ""

    def running(self) -> bool:
        outcome, _out = self.tools.run([*AS_POSTGRES, "pg_ctl", "-D", self.data, "status"])
        return outcome.exit_code == 0

    def exists(self) -> bool:
        outcome, _out = self.tools.run(["test", "-d", self.data])
        return outcome.exit_code == 0

    def remove(self) -> None:
        """Stop the scratch server (if it runs) and delete its directory; nothing of the live server is touched."""
        if self.exists():
            self.tools.run([*AS_POSTGRES, "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-s", "stop"])
        self._root(["rm", "-rf", "--", self.dir], f"Removing {self.name}")

    # ---- reading it ----------------------------------------------------------------------------------------

    def _psql(self, database: str, sql: str) -> list[str]:
        return ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.socket, "-p", str(SCRATCH_PORT),
                "-U", self._db.user, "-d", database, "-c", sql]

    def counts(self, database: str) -> dict[str, int]:
        """Exact row counts of every table of a database of the scratch server ({} if it has no such database)."""
        return table_counts(self.tools, self._psql(database, COUNTS_SQL), f"Counting the rows at {self.name}")

    def dump_into(self, database: str, into: str, live: PgTools, tables: list[str] | None = None,
                  progress: Progress = lambda _text: None) -> None:
        """Copy `database` of the scratch server (or only `tables`, qualified names) into the EMPTY database `into` of the
        live server: pg_dump in directory format into the scratch's directory, then pg_restore into `into`, both with
        PARALLEL jobs (`into` is new and unused: a failure is undone by dropping it, so no single transaction is needed)."""
        dump = f"{self.dir}/copy"
        selected = [f"--table={table}" for table in tables or []]
        progress(f"Dumping {database} from {self.name}…")
        try:
            self.tools.check(["pg_dump", "-Fd", "-Z", "0", f"--jobs={PARALLEL}", "-h", self.socket, "-p", str(SCRATCH_PORT),
                              "-U", self._db.user, f"--file={dump}", *selected, database], f"pg_dump of {database} from {self.name}")
            progress(f"Restoring it into {into}…")
            live.check(["pg_restore", *live.connection(), f"--dbname={into}", f"--jobs={PARALLEL}", "--exit-on-error",
                        *RESTORE_OPTIONS, dump], f"pg_restore into {into}")
        finally:
            self._quietly(lambda: self.tools.run(["rm", "-rf", "--", dump]))

    def dump_table(self, database: str, table: str, into: str, live: PgTools) -> None:
        """For undo's "FROM a time": one table (schema.table) of the recovered database into a scratch database of live."""
        self.dump_into(database, into, live, [table])

    @staticmethod
    def _quietly(action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:
            log.exception("cleaning up a scratch instance failed")


# Every table of the database with its exact row count, one `schema.table|rows` line each.
COUNTS_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) || '|' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
)


def table_counts(tools: PgTools, argv: list[str], what: str) -> dict[str, int]:
    out = tools.check(argv, what)
    counts = {}
    for line in out.splitlines():
        name, _bar, rows = line.rpartition("|")
        if name and rows.strip().isdigit():
            counts[name] = int(rows)
    return counts


def live_counts(tools: PgTools, database: str) -> dict[str, int]:
    argv = ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", *tools.connection(), "-d", database, "-c", COUNTS_SQL]
    return table_counts(tools, argv, f"Counting the rows of {database}")


def preview(live: dict[str, int], target: dict[str, int], limit: int = 12) -> list[str]:
    """What replacing live with the target would change, table by table: the request's lines."""
    changed = [f"`{t}`: {live[t]} rows live, {target[t]} at the target" for t in sorted(live.keys() & target.keys()) if live[t] != target[t]]
    back = [f"`{t}`: not in live; comes back with {target[t]} rows" for t in sorted(target.keys() - live.keys())]
    gone = [f"`{t}`: {live[t]} rows live; it did not exist at the target and goes" for t in sorted(live.keys() - target.keys())]
    same = sorted(t for t in live.keys() & target.keys() if live[t] == target[t])
    differ = changed + back + gone
    lines = [f"{len(differ)} of {len(live.keys() | target.keys())} tables differ from live:" if differ
             else f"The row counts of all {len(live)} tables are the same live and at the target."]
    lines += differ[:limit] + ([f"…and {len(differ) - limit} more."] if len(differ) > limit else [])
    if same and differ:
        shown = ", ".join(f"{t} ({live[t]})" for t in same[:6])
        lines.append(f"Same row counts: {shown}" + (f" and {len(same) - 6} more." if len(same) > 6 else "."))
    return lines
