"""Undo rows, not databases: `/restore --table T [--where "EXPR" | --rows-deleted-since TIME] FROM`.

The table is recovered from the source (a backup: its checked file, `pg_restore` of the schema's definitions and of
that one table's data) into a scratch database `<db>__undo_<job>` on the live server; the rows are selected there
(by the parsed --where, or those whose primary key live no longer has) into `flowstate_undo.selected`, and the request
shows their count and a redacted sample. After approval exactly those rows are written back into live in ONE
transaction: copied into a temporary table, then `INSERT ... ON CONFLICT (primary key) DO UPDATE`; every value goes
through COPY's data, never the statement. Nothing else is touched. The scratch database is dropped when the run ends;
a request that ends otherwise (rejected, expired, cancelled, a crash) has it dropped by the runners' sweep.

The journal (`row_restores`, one row per request) holds what the request showed, so that every render of the
request's message shows the same rows without recovering them again, and the write-back's transaction id, so that a
bot killed mid-write asks PostgreSQL (`pg_xact_status`) whether it committed.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

import psycopg
from psycopg import sql
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.backups.model import RowRestore
from bot.backups.pointintime import Scratches
from bot.backups.service import RESTORE_OPTIONS, Backups, Progress, _quiet
from bot.backups.tools import last_lines
from bot.backups.where import MAX_LENGTH as MAX_WHERE, parse, render
from bot.frame.faults import reached
from bot.frame.humanize import elapsed
from bot.frame.redact import redact
from bot.jobs.queue import ended_and_unlocked
from bot.stack.compose import StackError
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from bot.backups.model import Backup
    from bot.jobs.model import Job
    from bot.store.engine import Store

log = logging.getLogger(__name__)

UNDO_INFIX = "__undo_"
WORK_SCHEMA = "flowstate_undo"  # in the scratch database: the selected rows (and live's keys, for deleted rows)
SAMPLE_ROWS = 5
FINAL_JOURNAL_SECONDS = 60.0  # how long the last journal write is retried; after that the runners' sweep closes the row
SAMPLE_WIDTH = 40  # characters of one value in the sample
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
# A column whose name says it holds a secret is never shown in the sample, whatever its value looks like.
SECRET_COLUMN = re.compile(r"pass|secret|token|hash|salt|key|otp|card|iban|ssn", re.IGNORECASE)


class UndoError(StackError):
    """A row undo cannot be done as asked; one sentence for the user."""


def table_name(text: str) -> tuple[str, str]:
    """`users` or `public.users` as (schema, table): plain names only (as PostgreSQL folds them, to lower case)."""
    parts = text.split(".")
    if len(parts) > 2 or not all(NAME.fullmatch(part) for part in parts):
        raise UndoError(f"{text[:60]!r} is not a table's name; give it as users or schema.users.")
    schema, table = (["public"] + parts)[-2:]
    return schema.lower(), table.lower()


def scratch_name(database: str, job_id: int) -> str:
    name = f"{database}{UNDO_INFIX}{job_id}"
    if len(name.encode()) > 63:
        raise UndoError(f"The scratch database's name {name} would be longer than PostgreSQL's 63 bytes.")
    return name


def check_time(backups: Backups, target: datetime) -> None:
    """FROM a time, before a request is made: the archive reaches TARGET from a base backup (archive's
    check_reachable), or one sentence says why not."""
    Scratches(backups._store, backups._stack, backups._settings.job_lease_seconds).base_for(target)


def recover_at_time(backups: Backups, job_id: int, target: datetime, schema: str, table: str, into_database: str,
                    progress: Progress) -> None:
    """FROM a time: the table as it was at TARGET, copied into INTO_DATABASE (empty) on the live server through the
    job's point-in-time scratch instance (removed at the end, or by the runners' sweep after a kill)."""
    scratches = Scratches(backups._store, backups._stack, backups._settings.job_lease_seconds)
    scratches.table_at(job_id, target, f"{schema}.{table}", into_database, backups.tools, progress)


# ---- the live table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableShape:
    schema: str
    table: str
    columns: list[str]  # in order, without generated columns (they are computed, never written)
    key: list[str]  # the primary key's columns
    identity_always: bool  # an INSERT must say OVERRIDING SYSTEM VALUE

    @property
    def label(self) -> str:
        return self.table if self.schema == "public" else f"{self.schema}.{self.table}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


_COLUMNS = """
SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a'
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_KEY = """
SELECT a.attname
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary
ORDER BY k.position
"""


def shape_of(conn: psycopg.Connection, schema: str, table: str, where: str) -> TableShape:
    rows = conn.execute(_COLUMNS, (schema, table)).fetchall()
    label = table if schema == "public" else f"{schema}.{table}"
    if not rows:
        raise UndoError(f"{where} has no table {label}.")
    key = [row[0] for row in conn.execute(_KEY, (schema, table)).fetchall()]
    return TableShape(schema, table, [name for name, generated, _ in rows if not generated], key, any(row[2] for row in rows))


# ---- what was asked ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UndoAsk:
    table: str  # as typed: users or schema.users
    where: str | None  # the --where expression, or
    deleted_since: datetime | None  # --rows-deleted-since, resolved (UTC)
    backup: "Backup | None"
    target: datetime | None = None  # FROM a time

    @property
    def selection(self) -> str:
        if self.where is not None:
            return f"--where {self.where}"
        return f"rows deleted since {self.deleted_since:%Y-%m-%d %H:%M:%S} UTC"

    @property
    def source_label(self) -> str:
        return self.backup.label if self.backup is not None else f"the state at {self.target:%Y-%m-%d %H:%M:%S} UTC"


class RowUndo:
    """One request's row undo: checked, prepared (recovered and selected, for the request), written back, dropped."""

    def __init__(self, backups: Backups, store: "Store", stack: str, job_id: int | None, progress: Progress = _quiet,
                 fault: Callable[[str], None] = lambda _point: None):
        self.backups, self._store, self._stack = backups, store, stack
        self._job_id, self._progress, self._fault = job_id, progress, fault
        self.database = backups.database

    # ---- connections -----------------------------------------------------------------------------------

    def _live(self) -> psycopg.Connection:
        return self.backups.db._connect_unbounded()

    def _scratch_conn(self, scratch: str) -> psycopg.Connection:
        return self.backups.db._connect_unbounded(scratch)

    # ---- before a request is made ------------------------------------------------------------------------

    def check(self, ask: UndoAsk) -> TableShape:
        """What can be refused before anyone is asked: the table, its key, the expression against its columns, the time."""
        schema, table = table_name(ask.table)
        try:
            with self._live() as conn:
                shape = shape_of(conn, schema, table, f"The database {self.database}")
                if not shape.key:
                    raise UndoError(
                        f"{shape.label} has no primary key, so a row cannot be matched with its old version; "
                        "/restore --table needs one."
                    )
                if ask.where is not None:
                    condition, params = render(parse(ask.where, shape.columns, shape.label))
                    # PostgreSQL reads each value as its column's type here, before anyone is asked: '3x' for an id is refused.
                    conn.execute(sql.SQL("SELECT 1 FROM {} WHERE {} LIMIT 0").format(shape.ident, condition), params)
        except psycopg.Error as error:
            raise UndoError(f"--where is refused by PostgreSQL: {_first_line(error)}") from None
        if ask.backup is None:
            check_time(self.backups, ask.target)
        elif ask.deleted_since is not None and ask.deleted_since < ask.backup.started_at:
            raise UndoError(
                f"{ask.backup.label} was taken at {ask.backup.started_at:%Y-%m-%d %H:%M:%S} UTC, after "
                f"{ask.deleted_since:%Y-%m-%d %H:%M:%S} UTC: rows deleted before it are not in it. Give a time at or after "
                "the backup, or an older backup."
            )
        return shape

    # ---- the request: recover and select, once ---------------------------------------------------------------

    def describe(self, ask: UndoAsk) -> list[str]:
        """The request's lines: the source, the selection, the count and a sample; prepared on the first render only."""
        head = [f"*Rows of `{ask.table}`* from {ask.source_label}: {ask.selection}"]
        journal = self.journal()
        if journal is None:
            try:
                journal = self.prepare(ask)
            except StackError as error:
                return [*head, f"🔴 The rows could not be recovered: {error}", "Approving it tries again."]
        if journal is None or journal.step == "preparing":
            return [*head, "The rows are being recovered…"]
        if journal.summary is None:
            return [*head, f"🔴 The rows could not be recovered: {journal.outcome}", "Approving it tries again."]
        return [*head, *journal.summary]

    def prepare(self, ask: UndoAsk) -> RowRestore | None:
        """The journal row once the rows are selected in the scratch database (recovered now unless they still are);
        None while another caller prepares them."""
        existing = self.journal()
        if existing is not None and existing.step == "prepared" and existing.dropped_at is None:
            return existing
        if existing is not None and existing.step == "preparing":
            return None
        scratch = scratch_name(self.database, self._job_id)
        if existing is None:
            try:
                with self._store.session.begin() as session:
                    session.add(RowRestore(
                        job_id=self._job_id, stack=self._stack, database=self.database, table_name=".".join(table_name(ask.table)),
                        backup_id=ask.backup.id if ask.backup else None, target=ask.target.isoformat() if ask.target else None,
                        selection=ask.selection, scratch=scratch, step="preparing", started_at=utcnow(),
                    ))
            except IntegrityError:
                return None  # another caller won the row: it prepares
        else:
            self._set(step="preparing", dropped_at=None, summary=None, outcome=None)
        try:
            rows, lines = self._recover_and_select(ask, scratch)
        except BaseException as error:
            self._set(step="failed", outcome=redact(str(error))[:2000])
            try:
                self.drop()
            except Exception:
                log.exception("dropping the scratch database of request #%s failed; the sweep tries again", self._job_id)
            raise
        self._set(step="prepared", rows=rows, summary=lines)
        return self.journal()

    def _recover_and_select(self, ask: UndoAsk, scratch: str) -> tuple[int, list[str]]:
        started = time.monotonic()
        schema, table = table_name(ask.table)
        with self._live() as conn:
            live = shape_of(conn, schema, table, f"The database {self.database}")
        tools = self.backups.tools
        tools.check(["dropdb", *tools.connection(), "--if-exists", "--force", scratch], f"dropdb {scratch}")
        tools.check(["createdb", *tools.connection(), scratch], f"createdb {scratch}")
        if ask.backup is None:
            recover_at_time(self.backups, self._job_id, ask.target, schema, table, scratch, self._progress)
        else:
            self._from_backup(ask.backup, schema, table, scratch)
        with self._scratch_conn(scratch) as conn:
            copy = shape_of(conn, schema, table, ask.source_label.capitalize())
            columns = [c for c in live.columns if c in copy.columns]
            missing_key = [c for c in live.key if c not in copy.columns]
            if missing_key:
                raise UndoError(f"{ask.source_label.capitalize()} has {live.label} without its key column {missing_key[0]}.")
            names = sql.SQL(", ").join(map(sql.Identifier, columns))
            selected = sql.Identifier(WORK_SCHEMA, "selected")
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(WORK_SCHEMA)))
            conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(selected, names, copy.ident))
            if ask.where is not None:
                condition, params = render(parse(ask.where, copy.columns, f"{ask.source_label}'s {live.label}"))
                conn.execute(sql.SQL("INSERT INTO {} SELECT {} FROM {} WHERE {}").format(selected, names, copy.ident, condition), params)
            else:
                self._absent_from_live(conn, live, copy, columns, selected)
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(selected)).fetchone()[0]
            order = sql.SQL(", ").join(map(sql.Identifier, live.key))
            texts = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
            sample = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {} LIMIT {}").format(
                texts, selected, order, sql.Literal(SAMPLE_ROWS))).fetchall()
        lines = [f"*{rows} row{'s' if rows != 1 else ''}* to write back into `{self.database}`.{live.label} "
                 f"(inserted, or updated where the key exists), in one transaction; nothing else is touched "
                 f"({elapsed(started)} to recover)."]
        if rows == 0:
            lines = [f"*No row* of {ask.source_label} matches: approving it changes nothing ({elapsed(started)} to recover)."]
        dropped = [c for c in live.columns if c not in columns]
        if dropped:
            lines.append(f"{ask.source_label.capitalize()} has no column {', '.join(dropped)}: left as they are, or their default for a new row.")
        extra = [c for c in copy.columns if c not in live.columns]
        if extra:
            lines.append(f"Not written back ({live.label} has no such column now): {', '.join(extra)}.")
        if ask.deleted_since is not None:
            lines.append(
                f"A backup cannot tell when a row went: every row of {ask.source_label} whose key {live.label} no longer has "
                f"comes back, including those deleted between the backup and {ask.deleted_since:%Y-%m-%d %H:%M:%S} UTC."
            )
        if sample:
            lines.append(f"The first {len(sample)} by key (`{'`, `'.join(columns)}`):")
            lines += ["`" + redact(" | ".join(_shown(c, v) for c, v in zip(columns, row))) + "`" for row in sample]
        return rows, lines

    def _from_backup(self, backup: "Backup", schema: str, table: str, scratch: str) -> None:
        """The backup's definitions (types, tables, sequences; no indexes, constraints or triggers), then the one table's data."""
        tools = self.backups.tools
        self._progress(f"Recovering {schema}.{table} from {backup.label} into scratch database {scratch}…")
        staged, _entries = self.backups.check(backup, self._progress)
        try:
            for what, options in (("definitions", ["--section=pre-data"]),
                                  ("rows", ["--data-only", f"--schema={schema}", f"--table={table}"])):
                outcome, _out = tools.run(["pg_restore", *tools.connection(), f"--dbname={scratch}", *options, *RESTORE_OPTIONS, staged.path])
                if outcome.exit_code != 0:
                    raise UndoError(f"pg_restore of the {what} of {backup.label} failed: {last_lines(outcome.stderr)}")
        finally:
            self.backups.tools.unstage(staged)

    def _absent_from_live(self, conn, live: TableShape, copy: TableShape, columns: list[str], selected) -> None:
        """The recovered rows whose key live no longer has: live's keys are copied into the scratch database to compare."""
        keys = sql.SQL(", ").join(map(sql.Identifier, live.key))
        live_keys = sql.Identifier(WORK_SCHEMA, "live_keys")
        conn.execute(sql.SQL("CREATE TABLE {} AS SELECT {} FROM {} WITH NO DATA").format(live_keys, keys, copy.ident))
        with self._live() as source, source.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(keys, live.ident)) as out:
            with conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(live_keys)) as into:
                for chunk in out:
                    into.write(chunk)
        same = sql.SQL(" AND ").join(sql.SQL("k.{0} = t.{0}").format(sql.Identifier(c)) for c in live.key)
        conn.execute(sql.SQL("ANALYZE {}").format(live_keys))
        conn.execute(sql.SQL("INSERT INTO {} SELECT {} FROM {} t WHERE NOT EXISTS (SELECT 1 FROM {} k WHERE {})").format(
            selected, sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns), copy.ident, live_keys, same))

    # ---- after approval ------------------------------------------------------------------------------------

    def run(self, ask: UndoAsk) -> tuple[bool, list[str]]:
        """Write the prepared rows back in one transaction; the scratch database is dropped whatever happens."""
        lines: list[str] = []
        try:
            journal = self.prepare(ask)
            if journal is None:
                return False, ["🔴 The rows are still being recovered for this request's message; ask again in a minute."]
            lines.append(f"🟢 1. {journal.rows} row{'s' if journal.rows != 1 else ''} of {ask.table} recovered from {ask.source_label}.")
            reached(self._fault, "undo:after_prepare")
            if not journal.rows:
                lines.append(f"Nothing to write back: {self.database} was not changed.")
                self._set(step="done", written=0, finished_at=utcnow(), outcome="nothing to write back")
                return True, lines
            started = time.monotonic()
            try:
                written = self._write_back(ask, journal)
            except (StackError, psycopg.Error) as error:
                reason = _first_line(error) if isinstance(error, psycopg.Error) else str(error)
                xid = (self.journal() or journal).xid
                if xid and xact_status(self.backups, xid) == "committed":  # the connection broke at the COMMIT, after it
                    lines.append(f"🟢 2. Wrote the {journal.rows} rows back into {self.database}.{ask.table} in one transaction; "
                                 f"the connection broke after it committed ({reason}).")
                    self._set(step="done", written=journal.rows, finished_at=utcnow(), outcome=redact("\n".join(lines))[:4000])
                    return True, lines
                lines += [f"🔴 2. The write-back failed and its transaction rolled back, so {self.database} is exactly as it was: {reason}"]
                self._set(step="failed", finished_at=utcnow(), outcome=redact("\n".join(lines))[:4000])
                return False, lines
            lines.append(f"🟢 2. Wrote {written} row{'s' if written != 1 else ''} back into {self.database}.{ask.table} "
                         f"in one transaction ({elapsed(started)}); nothing else was touched.")
            self._set(step="done", written=written, finished_at=utcnow(), outcome=redact("\n".join(lines))[:4000])
            return True, lines
        except (StackError, psycopg.Error) as error:
            lines.append(f"🔴 {_first_line(error) if isinstance(error, psycopg.Error) else error}")
            lines.append(f"{self.database} was not changed.")
            self._set(step="failed", finished_at=utcnow(), outcome=redact("\n".join(lines))[:4000])
            return False, lines
        except BaseException:  # inside the write-back its transaction rolled back with the connection; after, it is done
            journal = self.journal()
            if journal is not None and journal.finished_at is None:
                status = xact_status(self.backups, journal.xid) if journal.xid else None
                self._set(step="done" if status == "committed" else "failed", finished_at=utcnow(),
                          outcome="It stopped on an unexpected error (the details are in the bot's log); "
                                  + ("the rows were written back." if status == "committed" else f"{self.database} was not changed."))
            raise
        finally:
            try:
                self.drop()
                lines.append(f"Scratch database {scratch_name(self.database, self._job_id)} dropped.")
            except Exception:
                log.exception("dropping the scratch database of request #%s failed; the sweep tries again", self._job_id)

    def _write_back(self, ask: UndoAsk, journal: RowRestore) -> int:
        schema, table = table_name(ask.table)
        with self._live() as live_conn:
            live = shape_of(live_conn, schema, table, f"The database {self.database}")
            with self._scratch_conn(journal.scratch) as scratch:
                copied = [r[0] for r in scratch.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'flowstate_undo.selected'::regclass AND attnum > 0 "
                    "AND NOT attisdropped ORDER BY attnum").fetchall()]
                columns = [c for c in copied if c in live.columns]
                if [c for c in live.key if c not in columns]:
                    raise UndoError(f"The rows prepared for this request no longer match {live.label}'s primary key; ask again.")
                names = sql.SQL(", ").join(map(sql.Identifier, columns))
                with live_conn.transaction():
                    self._progress(f"Writing {journal.rows} rows back into {self.database}.{live.label} in one transaction…")
                    rows = sql.Identifier("flowstate_undo_rows")
                    live_conn.execute(sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(rows, names, live.ident))
                    with scratch.cursor().copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(
                            names, sql.Identifier(WORK_SCHEMA, "selected"))) as out:
                        with live_conn.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(rows)) as into:
                            for chunk in out:
                                into.write(chunk)
                    others = [c for c in columns if c not in live.key]
                    action = (sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others)) if others else sql.SQL("DO NOTHING"))
                    written = live_conn.execute(sql.SQL("INSERT INTO {} ({}) {}SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                        live.ident, names, sql.SQL("OVERRIDING SYSTEM VALUE " if live.identity_always else ""), names, rows,
                        sql.SQL(", ").join(map(sql.Identifier, live.key)), action)).rowcount
                    xid = live_conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
                    self._set(step="writing", xid=xid)
                    reached(self._fault, "undo:before_commit")
                    if written != journal.rows:
                        raise UndoError(f"{written} rows would be written, not the {journal.rows} the request showed; nothing was changed.")
        return written

    # ---- the journal and the scratch database -----------------------------------------------------------

    def journal(self) -> RowRestore | None:
        with self._store.session() as session:
            return session.get(RowRestore, self._job_id)

    def _set(self, **values) -> bool:
        """Write to the journal; a final write (finished_at) is retried for a while when the bot's database refuses."""
        deadline = time.monotonic() + (FINAL_JOURNAL_SECONDS if "finished_at" in values else 0)
        while True:
            try:
                with self._store.session.begin() as session:
                    session.execute(update(RowRestore).where(RowRestore.job_id == self._job_id).values(**values))
                return True
            except SQLAlchemyError:
                if time.monotonic() >= deadline:
                    log.warning("the journal of row undo #%s could not be written", self._job_id, exc_info=True)
                    return False
                time.sleep(1.0)

    def drop(self) -> None:
        self.backups.drop_scratch(scratch_name(self.database, self._job_id))
        self._set(dropped_at=utcnow())


def _first_line(error: psycopg.Error) -> str:
    text = (getattr(error.diag, "message_primary", None) or str(error)).splitlines()[0]
    detail = getattr(error.diag, "message_detail", None)
    return redact(f"{text} ({detail})" if detail else text)[:400]


def _shown(column: str, value: str | None) -> str:
    if value is None:
        return "NULL"
    if SECRET_COLUMN.search(column):
        return "(hidden)"
    value = value.replace("`", "'").replace("\n", " ")
    return value if len(value) <= SAMPLE_WIDTH else value[: SAMPLE_WIDTH - 1] + "…"


# ---- the sweep, and after a crash --------------------------------------------------------------------------


def sweep_scratch(store: "Store", backups: Backups | None) -> None:
    """The runners' sweep: the scratch database of a request that ended without its run dropping it (rejected,
    expired, cancelled, a crash) is dropped; the journal names them, so the live server is asked only when one is left."""
    if backups is None:
        return
    with store.session() as session:
        left = list(session.scalars(select(RowRestore).where(
            RowRestore.dropped_at.is_(None), RowRestore.database == backups.database, *ended_and_unlocked(RowRestore.job_id))))
    for journal in left:
        backups.drop_scratch(journal.scratch)
        with store.session.begin() as session:
            session.execute(update(RowRestore).where(RowRestore.job_id == journal.job_id).values(
                dropped_at=utcnow(), **({} if journal.finished_at else {"finished_at": utcnow(), "step": "interrupted" if journal.step == "writing" else journal.step})))


def xact_status(backups: Backups, xid: str) -> str | None:
    """committed, aborted or in progress: what PostgreSQL knows of the write-back's transaction; None if it cannot say."""
    try:
        with backups.db._connect_unbounded() as conn:
            return conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()[0]
    except psycopg.Error:
        return None


def recover(backups: Backups, store: "Store", job: "Job") -> str:
    """What an interrupted row undo left: whether its one transaction committed (PostgreSQL keeps its status)."""
    with store.session() as session:
        journal = session.get(RowRestore, job.id)
    if journal is None:
        return f"It had not started: {backups.database} was not changed."
    finished = journal.finished_at is not None  # the run said what it did before it stopped
    if finished:
        data = journal.outcome or f"It had ended: {journal.step}."
    elif journal.step == "writing" and journal.xid:
        status = xact_status(backups, journal.xid)
        data = {
            "committed": f"The write-back had committed: the {journal.rows} rows are in {journal.database}.{journal.table_name}.",
            "aborted": f"The write-back rolled back: {journal.database} is exactly as it was.",
        }.get(status, f"The write-back ran in one transaction, so {journal.database} holds all {journal.rows} rows or none of them.")
    elif journal.step == "done":
        data = f"It had finished: {journal.outcome or 'the rows were written back'}"
    else:
        data = f"It stopped before writing anything back: {journal.database} was not changed."
    try:
        backups.drop_scratch(journal.scratch)
        dropped = {"dropped_at": utcnow()}
    except StackError:
        dropped = {}  # the sweep tries again
    final = {} if finished else {"step": "interrupted", "finished_at": utcnow(), "outcome": data}
    with store.session.begin() as session:
        session.execute(update(RowRestore).where(RowRestore.job_id == job.id).values(**final, **dropped))
    return data
