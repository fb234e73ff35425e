"""The bot's own database: SQLite by default, PostgreSQL in production; schema by Alembic."""

from __future__ import annotations

import itertools
import logging
import os
import re
import select
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from sqlalchemy import JSON, DateTime, Engine, Integer, String, Text, create_engine, event, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from bot.store.errors import ConfigError

log = logging.getLogger(__name__)


BUSY_SECONDS = 30  # how long a write on SQLite waits for a file another process is writing


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, also on SQLite (which stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class RoleAssignment(Base):
    __tablename__ = "role_assignments"

    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    granted_by: Mapped[str] = mapped_column(String(64))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AuditEntry(Base):
    """Append-only: the code never updates or deletes rows, and the database refuses to."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    user_id: Mapped[str] = mapped_column(String(64))
    channel_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))
    command: Mapped[str] = mapped_column(String(64))
    arguments: Mapped[dict | None] = mapped_column(JSON)
    outcome: Mapped[str] = mapped_column(String(16))
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    error_id: Mapped[str | None] = mapped_column(String(16))
    job_id: Mapped[int | None] = mapped_column(Integer)
    origin: Mapped[str | None] = mapped_column(String(64))  # the console's OS user
    details: Mapped[dict | None] = mapped_column(JSON)  # what a report found (Reply.facts): the timeline's numbers


class SeenRequest(Base):
    """Signatures of the Slack requests of the last few minutes: a second sighting is a replay."""

    __tablename__ = "seen_requests"

    signature: Mapped[str] = mapped_column(String(100), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs and use psycopg 3 for them."""
    try:
        parsed = make_url(url)
    except ValueError:  # a port that is not a number
        raise ConfigError("FLOWSTATE_DATABASE_URL: its port is not a number") from None
    except ArgumentError:
        # Not quoted: a URL that does not parse may still hold a password.
        raise ConfigError(
            "FLOWSTATE_DATABASE_URL: not a database URL; use sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("postgresql+psycopg", "sqlite"):
        raise ConfigError(
            f"FLOWSTATE_DATABASE_URL: driver {parsed.drivername!r} is not supported; use sqlite:/// or postgresql://"
        )
    # Without a name libpq picks the user's own database and SQLite a memory one: the audit would go astray.
    if not parsed.database:
        shape = "sqlite:///PATH" if parsed.drivername == "sqlite" else "postgresql://USER@HOST:PORT/DATABASE"
        raise ConfigError(f"FLOWSTATE_DATABASE_URL: it names no database; use {shape}")
    return parsed.render_as_string(hide_password=False)


def _private_file(path: Path) -> None:
    """The embedded database holds the audit and the roles: its folder 0700, the file 0600 (SQLite gives its
    -wal and -shm files the same mode)."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
    except OSError as error:
        raise ConfigError(f"FLOWSTATE_HOME: cannot create the bot's database at {path} ({error.strerror})") from None


def make_engine(url: str, busy_seconds: float = BUSY_SECONDS) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": busy_seconds, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # WAL lets the console and background jobs read while one writes.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL loses no committed row when the bot crashes (only on power loss), and a commit
            # no longer waits for an fsync: the acks write a job row each.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    engine = create_engine(url, connect_args={"connect_timeout": 5})

    @event.listens_for(engine, "checkout")
    def _replace_ended(dbapi_connection, _record, _proxy):
        # Instead of a ping per checkout (a round trip for every session): a connection the server ended while it
        # lay in the pool is replaced before it is used.
        if ended(dbapi_connection):
            raise DisconnectionError("the server ended this connection while it was idle")

    return engine


def ended(connection) -> bool:
    """A PostgreSQL connection, idle between transactions, that the server has ended (a restart, an outage,
    pg_terminate_backend): closed or broken already, or with something waiting on its socket. An idle connection
    is sent nothing (the pool's connections LISTEN to nothing), so what waits there is the server's farewell
    (FATAL, then the socket's end) and no round trip is needed to see it."""
    if connection.closed or connection.broken:
        return True
    try:
        readable, _, _ = select.select([connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _returns_rows(cursor) -> bool:
    """The last statement returned rows (a SELECT, a RETURNING). psycopg's result says so without building its
    description (a Column object per column: 30 us for a claimed job's row, on every claim); SQLite's cursor
    has only the description."""
    result = getattr(cursor, "pgresult", None)
    if result is not None:
        return result.nfields > 0
    return cursor.description is not None


SEEN_REQUEST = insert(SeenRequest.__table__)  # a Slack request's signature; built once, it runs before every ack


# What PREPARE takes (not SET, not LOCK): each such statement of the writer is parsed and planned once per connection.
_PREPARABLE = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")
_PLACEHOLDER = re.compile(r"%%|%\((\w+)\)s")  # psycopg's named placeholders; %% is a literal %
_NAMES = itertools.count(1)
# In a connection's info (which SQLAlchemy clears when it connects anew): the names it has prepared, its cursor, and
# psycopg's own preparing as it was before this path took the connection.
_KNOWN, _CURSOR, _THRESHOLD = "flowstate_prepared", "flowstate_cursor", "flowstate_prepare_threshold"


class _Named:
    """A statement of the writer as PostgreSQL keeps it on a connection: PREPAREd once there (parsed and planned),
    then EXECUTEd with the values of each write. Against the statement's text sent with its values every time this
    saves PostgreSQL a third of its CPU per question (1080 -> 660 us: the wide UPDATEs of a job row and the audit
    INSERTs took more to parse and plan than to run). `usable` is False once PostgreSQL refused to prepare it (a
    parameter whose type it cannot infer): it is sent as text from then on."""

    __slots__ = ("name", "prepare", "execute", "usable")

    def __init__(self, sql: str):
        keys: list[str] = []

        def numbered(match) -> str:
            if match.group(1) is None:
                return "%"
            if match.group(1) not in keys:
                keys.append(match.group(1))
            return f"${keys.index(match.group(1)) + 1}"

        self.name = f"flowstate_{next(_NAMES)}"
        self.prepare = f"PREPARE {self.name} AS {_PLACEHOLDER.sub(numbered, sql)}"
        self.execute = f"EXECUTE {self.name}({', '.join(f'%({key})s' for key in keys)})" if keys else f"EXECUTE {self.name}"
        self.usable = True

    @staticmethod
    def of(sql: str) -> "_Named | None":
        return _Named(sql) if sql.lstrip().upper().startswith(_PREPARABLE) else None


class _Write:
    """One caller's steps in a group, and what became of them once the group committed."""

    __slots__ = ("steps", "every_row", "done", "result", "error")

    def __init__(self, steps: list, every_row: bool):
        self.steps, self.every_row, self.done, self.result, self.error = steps, every_row, False, None, None


class AckWriter:
    """The writes on the path that answers Slack (a job row, a request's signature) and on the way to a reply (a
    runner's claims, audit rows, a job's end), each committed before its caller returns.

    They run before every ack, so they skip what SQLAlchemy's execution costs there: each statement is
    compiled once to its SQL text, and runs on the driver's own cursor, on connections kept for this path
    (not checked out of the pool for every request). Only plain values go this way
    (text, numbers, UTC datetimes). A connection that broke is dropped and the write tried once more on a
    new one. Errors come out as SQLAlchemy's (IntegrityError for a unique key already taken).

    SQLite has one writer at a time, and a connection that finds the file locked (a runner process is writing)
    waits in SQLite's own steps of 1, 2, 5, 10, 15, 20, 25... ms, far longer than a write takes. So on SQLite
    the writes of concurrent callers are committed in groups (group commit): whoever finds no group being
    written writes everything queued so far, each caller's steps in a savepoint of their own (a replayed
    signature fails its own caller only), in one transaction with one commit, and wakes them all; the others
    wait for their group, never on a lock of the file. That transaction takes the file's lock at its start
    (BEGIN IMMEDIATE) on a connection that does not wait inside SQLite: it tries again after a fraction of a
    millisecond, for as long as the pool's connections would wait. On PostgreSQL concurrent writes are grouped the same
    way (a burst's audit rows and job ends: one commit and one WAL flush for the group, 0.96 -> 0.60 ms of the server's
    CPU per question), and a write's statements are sent as ONE query on an autocommit connection, which PostgreSQL runs
    as one transaction (committed at its end, rolled back whole by an error), in one round trip. A group PostgreSQL
    refuses (a replayed signature) was committed in no part: its writes are made again each alone, so only the refused
    one fails; a group that finds no connection fails for all its writes at once. A write with a statement PREPARE does
    not take (a claim's SET LOCAL) is its own transaction: a setting of one write must not apply to the others of a
    group. A query of several statements cannot take server-side parameters, so each statement is prepared once per
    connection (_Named) and the query EXECUTEs them with values bound on the client (psycopg's ClientCursor.mogrify,
    quoted by libpq for this connection). Against psycopg's pipeline mode (BEGIN, the statements, COMMIT) the text sent
    whole cost the caller about 40 % less CPU (78 vs 128 us for two INSERTs) and answered sooner (261 vs 422 us).
    """

    def __init__(self, engine: Engine, own_engine: Engine | None = None):
        self._engine = own_engine or engine
        self._own_engine = own_engine
        self._dialect = engine.dialect
        self._dbapi = engine.dialect.dbapi
        self._sqlite = engine.dialect.name == "sqlite"
        self._free: list = []
        self._free_lock = threading.Lock()
        self._compiled: dict = {}
        self._group = threading.Condition()  # guards _queued and _writing (the group commit)
        self._queued: list[_Write] = []
        self._writing = False

    def _take(self):
        with self._free_lock:
            kept = self._free.pop() if self._free else None
        if kept is not None and not self._sqlite and ended(kept.dbapi_connection):
            kept.invalidate()  # ended by the server while it was kept: a new one, before anything is sent on it
            kept = None
        if kept is not None:
            return kept
        try:
            return self._engine.raw_connection()
        except self._dbapi.Error as error:  # the pool hands on the driver's own error: SQLAlchemy's, as for the rest
            raise DBAPIError.instance(None, None, error, self._dbapi.Error) from None

    def _give_back(self, connection) -> None:
        with self._free_lock:
            self._free.append(connection)

    def _sql(self, statement, params: dict):
        """The statement's SQL text for these columns, the driver's parameters for it (with the values the
        statement carries itself, such as a LIMIT), and on PostgreSQL its prepared form (or None)."""
        keys = tuple(params)
        entry = self._compiled.get((statement, keys))
        if entry is None:
            compiled = statement.compile(dialect=self._dialect, column_keys=list(keys))
            own = {key: value for key, value in compiled.params.items() if key not in params and value is not None}
            sql = str(compiled)
            entry = self._compiled[(statement, keys)] = (
                sql, compiled.positiontup if compiled.positional else None, own, None if self._sqlite else _Named.of(sql)
            )
        sql, order, own, named = entry
        values = {key: self._value(value) for key, value in (own | params).items()}
        return sql, (tuple(values[key] for key in order) if order is not None else values), named

    def _value(self, value):
        if isinstance(value, datetime):
            value = UTCDateTime().process_bind_param(value, self._dialect)
            # SQLite keeps what SQLAlchemy's DATETIME writes there: the UTC time as text, without an offset.
            return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self._sqlite else value
        if value is not None and not isinstance(value, (str, int, float)):
            raise TypeError(f"the ack path writes plain values only, not {type(value).__name__}")
        return value

    def write(self, *steps, every_row: bool = False):
        """Runs (statement, params) steps in one transaction and commits; the first column of the last step's
        RETURNING row, if it returned one (with `every_row`, all its RETURNING rows, whole). A unique key already
        taken raises IntegrityError and writes nothing."""
        prepared = [self._sql(statement, params) for statement, params in steps]
        if not self._sqlite and any(named is None for _, _, named in prepared):  # a SET LOCAL (a claim's): alone
            return self._alone(prepared, every_row)
        mine = _Write(prepared, every_row)
        with self._group:
            self._queued.append(mine)
            while self._writing and not mine.done:
                self._group.wait()
            if not mine.done:  # no group is being written: this caller writes everything queued
                self._writing = True
                group, self._queued = self._queued, []
        if not mine.done:
            try:
                (self._commit_group if self._sqlite else self._commit_group_pg)(group)
            finally:
                with self._group:
                    for each in group:
                        each.done = True
                    self._writing = False
                    self._group.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result

    def _alone(self, prepared: list, every_row: bool):
        """One transaction of one caller (PostgreSQL), in one round trip."""
        return self._on_connection(lambda connection: self._one_query(connection, prepared, [(len(prepared) - 1, every_row)]))[0]

    def _commit_group_pg(self, group: list[_Write]) -> None:
        """PostgreSQL: every write of the group in one transaction, in one round trip (one commit, one WAL flush); each
        its own last step's result. Should PostgreSQL refuse a statement (a unique key taken, say), none of it was
        committed and each write is made alone, so only the one that fails fails; a connection that could not be had
        or was lost is every write's error."""
        settled: list[_Write] = []
        try:
            if len(group) > 1:
                steps, ends = [], []
                for each in group:
                    steps += each.steps
                    ends.append((len(steps) - 1, each.every_row))
                try:
                    results = self._on_connection(lambda connection: self._one_query(connection, steps, ends))
                except DBAPIError as error:
                    if not _refused_statement(error):  # no connection (tried anew already): alone, each would wait again
                        for each in group:
                            each.error = error
                        return
                else:
                    for each, result in zip(group, results):
                        each.result = result
                    return
            for each in group:
                try:
                    each.result = self._alone(each.steps, each.every_row)
                except Exception as error:
                    each.error = error
                settled.append(each)
        except BaseException as error:  # the leader interrupted: the writes it did not make are told so
            for each in group:
                if each not in settled:
                    each.result, each.error = None, error
            raise

    def read(self, statement, params: dict):
        """The first column of a query's first row (or None), on this path's connections: no pool checkout, and on
        PostgreSQL one round trip (for a query asked after every command)."""
        prepared = [self._sql(statement, params)]
        if self._sqlite:  # outside the group: a read in WAL mode waits for no writer
            return self._on_connection(lambda connection: self._read_sqlite(connection, prepared))
        return self._on_connection(lambda connection: self._one_query(connection, prepared, [(0, False)]))[0]

    def _read_sqlite(self, connection, prepared: list):
        cursor = connection.cursor()
        result = self._steps(cursor, prepared, False)
        cursor.close()
        connection.rollback()
        return result

    @classmethod
    def _one_query(cls, connection, prepared: list, ends: list[tuple[int, bool]], again: bool = True) -> list:
        """The steps as one query of several statements on an autocommit connection: PostgreSQL runs them as one
        transaction (an error rolls back all of them and skips the rest), in one round trip; what the steps at `ends`
        returned (each a step's index and whether all its rows are wanted), in order. The connection is this path's own
        while it is kept (autocommit is undone before it goes back to the pool: close()). A statement this connection
        has not prepared yet is prepared first (once per connection). Should the server have lost what was prepared
        (DEALLOCATE ALL) or a table's change have made a prepared statement's result change its type (another replica's
        migration), everything is prepared anew and the query sent once more: nothing of it was committed."""
        from psycopg import ClientCursor, errors  # PostgreSQL only (imported once; the console on SQLite never needs it)

        driver, info = connection.dbapi_connection, connection.info
        cursor = info.get(_CURSOR)
        if cursor is None:  # a connection new to this path: its own cursor, kept with it
            # psycopg would count every query text it sees to prepare the frequent ones itself; these are prepared here
            info[_THRESHOLD], driver.prepare_threshold = driver.prepare_threshold, None
            cursor = info[_CURSOR] = ClientCursor(driver)
        if not driver.autocommit:
            driver.autocommit = True
        known = info.setdefault(_KNOWN, set())
        for _, _, named in prepared:
            if named is not None and named.usable and named.name not in known:
                cls._prepare(driver, named, known)
        try:
            cursor.execute("; ".join(
                cursor.mogrify(named.execute if named is not None and named.name in known else sql, params)
                for sql, params, named in prepared
            ))
            results, at = [], 0
            for end, every_row in ends:
                while at < end:
                    cursor.nextset()
                    at += 1
                results.append(cls._result(cursor, every_row))
            return results
        except (errors.InvalidSqlStatementName, errors.FeatureNotSupported):
            if not again or not known:
                raise
            known.clear()
            driver.execute("DEALLOCATE ALL")
        return cls._one_query(connection, prepared, ends, again=False)

    @staticmethod
    def _prepare(driver, named: _Named, known: set) -> None:
        """PREPARE the statement on this connection (autocommit: a statement of its own, outside any write's
        transaction); one PostgreSQL will not prepare is sent as text from then on."""
        from psycopg import ProgrammingError

        try:
            driver.execute(named.prepare)
        except ProgrammingError as error:  # a parameter's type it cannot infer, say
            named.usable = False
            log.info("the store's writer sends a statement as text: PostgreSQL would not prepare it (%s)", error)
            return
        known.add(named.name)

    def _on_connection(self, work):
        """`work(connection)` on a kept connection, which it leaves between transactions; a connection that broke is
        dropped and the work tried once more on a new one."""
        reconnected = False
        while True:
            connection = self._take()
            try:
                result = work(connection)
            except self._dbapi.Error as error:
                if self._dialect.is_disconnect(error, connection.dbapi_connection, None):
                    connection.invalidate()
                    if not reconnected:
                        reconnected = True
                        continue
                    raise DBAPIError.instance(None, None, error, self._dbapi.Error, connection_invalidated=True) from None
                self._roll_back(connection, error)
                raise DBAPIError.instance(None, None, error, self._dbapi.Error) from None
            except BaseException:
                connection.invalidate()
                raise
            self._give_back(connection)
            return result

    @classmethod
    def _steps(cls, cursor, prepared: list, every_row: bool):
        for sql, params, _ in prepared:
            cursor.execute(sql, params)
        return cls._result(cursor, every_row)

    @staticmethod
    def _result(cursor, every_row: bool):
        """What the last step returned: the first column of its row, or with `every_row` all its rows, whole."""
        if not _returns_rows(cursor):
            return [] if every_row else None
        if every_row:
            return [tuple(row) for row in cursor.fetchall()]
        row = cursor.fetchone()
        return row[0] if row else None

    def _roll_back(self, connection, error) -> None:
        try:
            connection.rollback()
        except self._dbapi.Error:
            connection.invalidate()
            raise DBAPIError.instance(None, None, error, self._dbapi.Error) from None
        self._give_back(connection)

    def _commit_group(self, group: list[_Write]) -> None:
        """Every write of the group in one SQLite transaction, each in its savepoint; its result or error on it.
        A failure of the transaction itself is every write's error: none of them was committed."""
        connection = self._take()
        try:
            cursor = connection.cursor()
            self._begin_immediate(cursor)
            alone = len(group) == 1  # its error is the transaction's: no savepoint needed
            for each in group:
                if not alone:
                    cursor.execute("SAVEPOINT ack")
                try:
                    each.result = self._steps(cursor, each.steps, each.every_row)
                except self._dbapi.DatabaseError as error:
                    if alone or _sqlite_busy(error):
                        raise
                    cursor.execute("ROLLBACK TO ack")
                    each.error = DBAPIError.instance(None, None, error, self._dbapi.Error)
                if not alone:
                    cursor.execute("RELEASE ack")
            cursor.close()
            connection.commit()
        except self._dbapi.Error as error:
            failed = DBAPIError.instance(None, None, error, self._dbapi.Error)
            for each in group:
                each.result, each.error = None, failed
            try:
                connection.rollback()
            except self._dbapi.Error:
                connection.invalidate()
                return
        except BaseException as error:
            for each in group:
                each.result, each.error = None, error
            connection.invalidate()
            raise
        self._give_back(connection)

    def _begin_immediate(self, cursor) -> None:
        """Take the file's write lock, trying again every fraction of a millisecond while another process holds it."""
        deadline, pause = time.monotonic() + BUSY_SECONDS, 0.0002
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except self._dbapi.OperationalError as error:
                if not _sqlite_busy(error) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(2 * pause, 0.002)

    def close(self) -> None:
        with self._free_lock:
            connections, self._free = self._free, []
        for connection in connections:
            driver = connection.dbapi_connection
            if not self._sqlite and not driver.closed:  # as the pool's other users expect it
                driver.autocommit = False
                if _CURSOR in connection.info:
                    connection.info.pop(_CURSOR).close()
                    driver.prepare_threshold = connection.info.pop(_THRESHOLD)
            connection.close()
        if self._own_engine is not None:
            self._own_engine.dispose()


def _refused_statement(error: DBAPIError) -> bool:
    """PostgreSQL answered a statement with an error (a unique key taken, a value too long, a deadlock): the connection
    serves on. Not a connection refused, timed out or lost (no SQLSTATE, or class 08), nor a server shutting down
    (57P)."""
    state = getattr(error.orig, "sqlstate", None)
    return bool(state) and not state.startswith(("08", "57P"))


def _sqlite_busy(error: Exception) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return (code & 0xFF) == sqlite3.SQLITE_BUSY if isinstance(code, int) else "database is locked" in str(error)


def hold_single_bot(url: str):
    """One bot process per SQLite file: an exclusive lock on a file beside the database, held for the life of
    the process (the kernel lets go of it when the process dies, however it dies). Returns the open lock file;
    None on PostgreSQL, where several replicas are the supported shape. The console takes no lock: it runs
    its own commands beside a bot, as SQLite's WAL allows."""
    import fcntl

    parsed = make_url(normalize_url(url))
    if parsed.drivername != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    path = Path(parsed.database)
    _private_file(path)
    lock = open(f"{path}.run-lock", "a+", opener=lambda name, flags: os.open(name, flags, 0o600))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip()[:20] or "unknown"
        lock.close()
        raise ConfigError(
            f"FLOWSTATE_DATABASE_URL: another flowstate-bot run (pid {holder}) already uses the SQLite database {path}; "
            "one bot process per SQLite file is supported: stop that one, or use PostgreSQL to run several replicas"
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


WRITE_RETRY_SECONDS = 60.0  # how long a write that must land is retried while the store refuses it


def retried(write, what: str):
    """A write that must land (a change's outcome, its audit row, its lock let go): while the store refuses it
    (SQLite locked past its busy timeout, PostgreSQL unreachable) it is tried again every second, for a while."""
    deadline = time.monotonic() + WRITE_RETRY_SECONDS
    while True:
        try:
            return write()
        except OperationalError as error:
            if time.monotonic() >= deadline:
                raise
            log.warning("the bot's database refused %s (%s); trying again", what, error.orig or error)
            time.sleep(1.0)


MIGRATION_LOCK_KEY = 0x666C6F77  # "flow": the advisory lock replicas take around a migration

# The bot's own PostgreSQL role (README, Security): its tables, but never a change to the audit log. The owner
# gives them after every migration (`flowstate-bot migrate --grant-to ROLE`); a test keeps the README's copy equal.
BOT_ROLE_GRANTS = (
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {role};",
    "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role};",
)
ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # what PostgreSQL folds an unquoted name to
_ROLE_QUERY = text(
    """SELECT current_user, r.rolsuper,
              COALESCE(pg_has_role(current_user, c.relowner, 'MEMBER'), false),
              COALESCE(has_table_privilege(c.oid, 'UPDATE, DELETE, TRUNCATE'), false)
       FROM pg_roles r LEFT JOIN pg_class c ON c.oid = to_regclass('audit_log')
       WHERE r.rolname = current_user"""
)


class Store:
    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        database = self.engine.url.database
        own = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self.ack_writer = AckWriter(self.engine, make_engine(url, busy_seconds=0) if own else None)

    def migrate(self, grant_to: str | None = None) -> None:
        """The latest schema; then, run as the tables' owner, the bot's grants to the role `grant_to` (PostgreSQL)."""
        if grant_to is not None and self.engine.dialect.name != "postgresql":
            raise ConfigError("--grant-to: only a PostgreSQL store has roles")
        if grant_to is not None and not ROLE_NAME.fullmatch(grant_to):
            raise ConfigError(f"--grant-to: {grant_to[:80]!r} is not a role name (lower-case letters, digits and _)")
        config = AlembicConfig()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        try:
            with self.engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    # Replicas starting together migrate one after the other; the later ones find the schema current.
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                config.attributes["connection"] = connection
                alembic_command.upgrade(config, "head")
                if grant_to is not None:
                    role = connection.dialect.identifier_preparer.quote_identifier(grant_to)  # `user` is a keyword
                    for statement in BOT_ROLE_GRANTS:
                        connection.execute(text(statement.format(role=role)))
        except SQLAlchemyError as error:
            raise ConfigError(f"FLOWSTATE_DATABASE_URL: cannot migrate the bot's database: {getattr(error, 'orig', None) or error}") from None

    def role_problem(self) -> tuple[str, str | None] | None:
        """PostgreSQL: the role the bot connects as, and what it could do to the audit log that it must not (or None)."""
        if self.engine.dialect.name != "postgresql":
            return None  # SQLite: the file's mode is the boundary
        with self.engine.connect() as connection:
            user, superuser, owner, changes = connection.execute(_ROLE_QUERY).one()
        if superuser:
            return user, "is a superuser, so whoever has this URL can switch the audit log's triggers off"
        if owner:
            return user, "owns the audit log, so whoever has this URL can drop its triggers"
        if changes:
            return user, "may update, delete or truncate audit rows"
        return user, None

    def dispose(self) -> None:
        self.ack_writer.close()
        self.engine.dispose()
