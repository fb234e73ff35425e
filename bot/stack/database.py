"""The operated application's PostgreSQL (not the bot's own store): activity and statement statistics."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bot.stack.compose import StackError


# One pass over a statement: comments, identifiers and placeholders are kept, literals become "?".
# Every branch either fails at its first character or matches (a literal cut off by PostgreSQL's
# track_activity_query_size runs to the end), so the scan is linear whatever the text.
_SQL_TOKENS = re.compile(
    r"""
    (?P<literal>
        [eE]'[^'\\]*(?:(?:\\[\s\S]?|'')[^'\\]*)*(?:'|\Z)             # E'...' with backslash escapes
      | '[^']*(?:''[^']*)*(?:'|\Z)                                      # '...'
      | \$(?P<tag>(?:[A-Za-z_]\w{0,62})?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z)  # $$...$$, $tag$...$tag$
      | \.?\d[\w.]*                                                     # 42, 3.14, 1e5, 0x1F
    )
    | --[^\n]* | /\*[\s\S]*?(?:\*/|\Z) | "[^"]*(?:""[^"]*)*(?:"|\Z)     # comments, quoted names
    | \$\d+ | [A-Za-z_][\w$]*                                            # placeholders, names and keywords
    """,
    re.X,
)


def statement_summary(query: str, length: int = 200) -> str:
    """A statement as anyone may see it: literals (passwords, tokens, card numbers) as ?, on one line, cut short."""
    text = " ".join(_SQL_TOKENS.sub(lambda m: "?" if m.group("literal") else m.group(0), query).split())
    return text if len(text) <= length else text[: length - 1] + "…"


# What /queries masks in a statement's full text, beyond what the redactor knows (it only knows secrets by their
# shape): numbers that look like payment cards, email addresses and long tokens. Each pattern starts only where no run
# of its characters is under way, and its runs are bounded or stop at a character it cannot hold: linear in the text.
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_TOKEN = re.compile(r"(?<![\w+/=-])[\w+/=-]{24,}")
STATEMENT_MASKS = (
    "card numbers (13 to 19 digits, spaces or dashes between them, passing the Luhn check) as [card], "
    "email addresses as [email], and tokens (24 or more letters, digits, _, -, +, / or = in a row, with letters "
    "and digits both) as [token]"
)


def _luhn(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        value = int(digit) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = match.group(0).replace(" ", "").replace("-", "")
    return "[card]" if 13 <= len(digits) <= 19 and _luhn(digits) else match.group(0)


def _token(match: re.Match) -> str:
    run = match.group(0)
    mixed = any(ch.isdigit() for ch in run) and any(ch.isalpha() for ch in run)
    return "[token]" if mixed else run


def mask_statement(query: str) -> str:
    """A statement's full text as /queries shows it: its shape kept, card numbers, emails and long tokens masked."""
    return _TOKEN.sub(_token, _EMAIL.sub("[email]", _CARD.sub(_card, query)))


# The application_name of the bot's own connections to the app's database; its maintenance tools add a suffix
# (bot/backups/tools.py). /stats leaves both out of the app's activity.
BOT_APP = "flowstate-bot"

_MAINTENANCE_STATEMENTS = r"pg_catalog\.|pg_stat_|pg_database|pg_extension|pg_class|pg_export_snapshot|^\s*COPY .* TO stdout|^SELECT \$1$"

# Statement text is read this far: a full text fits one Slack section.
QUERY_TEXT_LIMIT = 2000


@dataclass(frozen=True)
class LongQuery:
    pid: int
    user: str | None
    state: str
    seconds: float
    query: str


@dataclass(frozen=True)
class ServerSession:
    """One row of pg_stat_activity, as /queries cancel and terminate judge it before ending anything."""

    pid: int
    database: str | None
    user: str | None
    application: str
    backend_type: str
    state: str | None
    started: datetime  # backend_start: with the pid, what names this session and no later one that reuses the pid
    seconds: float | None  # how long its statement has run
    query: str
    app_database: str  # the application's database, the one the DSN names
    own: bool  # the bot's own connection, or one of its tools (backups, drills)


@dataclass(frozen=True)
class SlowStatement:
    query: str
    calls: int
    mean_ms: float


@dataclass(frozen=True)
class DatabaseActivity:
    by_state: dict[str, int]
    max_connections: int
    long_queries: list[LongQuery]
    slow_statements: list[SlowStatement] | None  # None: pg_stat_statements is not available
    statements_note: str | None

    @property
    def connections(self) -> int:
        return sum(self.by_state.values())


# The largest tables by size on disk: their exact row counts are what a restore is checked against.
_LARGEST_TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
ORDER BY pg_total_relation_size(c.oid) DESC, n.nspname, c.relname LIMIT %s
"""


class ExportedSnapshot:
    """A read-only transaction's snapshot that pg_dump imports (--snapshot), so that the row counts
    taken here, meanwhile, describe exactly the data the dump holds."""

    def __init__(self, conn: psycopg.Connection, tables: int):
        self._conn = conn
        self.id: str = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        self.server_version: str = conn.execute("SHOW server_version").fetchone()[0]
        self._counts: list | None = None
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._count, args=(tables,), name="row-counts", daemon=True)
        self._thread.start()

    def _count(self, tables: int) -> None:
        try:
            largest = self._conn.execute(_LARGEST_TABLES, (tables,)).fetchall()
            self._counts = [[schema, table, count_rows(self._conn, schema, table)] for schema, table in largest]
        except Exception as error:  # handed to the caller by counts()
            self._error = error

    def counts(self) -> list[list]:
        """[[schema, table, rows], ...] of the largest tables, once counted."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._counts or []


def count_rows(conn: psycopg.Connection, schema: str, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))).fetchone()[0]


class StackDatabase:
    def __init__(self, dsn: str, timeout: float = 5.0, name: str = "the [database] section"):
        self._dsn = dsn
        self._timeout = timeout
        self._name = name  # whose DSN it is, for the one error that cannot quote it

    def _options(self) -> dict[str, str]:
        try:
            return conninfo_to_dict(self._dsn)
        except psycopg.ProgrammingError as error:
            # libpq quotes the offending part of the DSN, which is often the password: name the mistake instead.
            reason = str(error)
            if "spaces" in reason:
                hint = "; write a space in it as %20"
            elif "percent" in reason:
                hint = "; write a % in it as %25"
            else:
                hint = ""
            raise StackError(f"the DSN of {self._name} is malformed{hint}") from None

    @property
    def address(self) -> str:
        """Where the DSN points, host:port or the socket, without its credentials."""
        options = self._options()
        host, port = options.get("host") or options.get("hostaddr"), options.get("port") or "5432"
        if not host:
            return f"the default socket, port {port}"
        return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else f"{host}:{port}"

    def connect(self) -> psycopg.Connection:
        self._options()
        # libpq's connect_timeout is whole seconds (minimum 2); callers bound the whole call anyway.
        return psycopg.connect(
            self._dsn,
            connect_timeout=max(2, round(self._timeout)),
            options=f"-c statement_timeout={int(self._timeout * 1000)}",
            autocommit=True,
            application_name=BOT_APP,
        )

    def _connect_unbounded(self, database: str | None = None) -> psycopg.Connection:
        """For work that takes as long as the data is large (counting every row): no statement timeout."""
        conninfo = psycopg.conninfo.make_conninfo(self._dsn, dbname=database) if database else self._dsn
        return psycopg.connect(conninfo, connect_timeout=10, autocommit=True, application_name=BOT_APP)

    @contextmanager
    def exported_snapshot(self, tables: int = 5) -> Iterator[ExportedSnapshot]:
        with self._connect_unbounded() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot = ExportedSnapshot(conn, tables)
            try:
                yield snapshot
            finally:
                snapshot._thread.join()
                conn.execute("COMMIT")

    def count_tables(self, tables: list[tuple[str, str]], database: str | None = None) -> dict[tuple[str, str], int]:
        """Exact row counts of these tables (in another database of the same server, when named)."""
        with self._connect_unbounded(database) as conn:
            return {(schema, table): count_rows(conn, schema, table) for schema, table in tables}

    def databases_like(self, prefix: str) -> list[str]:
        with self.connect() as conn:
            pattern = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "%"
            return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,))]

    @staticmethod
    def connection_usage(conn: psycopg.Connection) -> tuple[int, int]:
        """Client connections in use, and max_connections."""
        used, limit = conn.execute(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " current_setting('max_connections')::int"
        ).fetchone()
        return used, limit

    def activity(self, long_query_seconds: float, limit: int = 5) -> DatabaseActivity:
        with self.connect() as conn:
            by_state = dict(
                conn.execute(
                    "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' GROUP BY 1 ORDER BY 2 DESC"
                ).fetchall()
            )
            _used, max_connections = self.connection_usage(conn)
            long_queries = [
                LongQuery(*row)
                for row in conn.execute(
                    "SELECT pid, usename, state, extract(epoch FROM now() - query_start)::float, left(query, %s)"
                    " FROM pg_stat_activity"
                    " WHERE backend_type = 'client backend' AND datname = current_database()"
                    " AND state <> 'idle' AND pid <> pg_backend_pid() AND application_name NOT LIKE %s"
                    " AND query_start < now() - make_interval(secs => %s)"
                    " ORDER BY query_start LIMIT %s",
                    (QUERY_TEXT_LIMIT, BOT_APP + "%", long_query_seconds, limit),
                )
            ]
            statements, note = self._slow_statements(conn, limit)
        return DatabaseActivity(by_state, max_connections, long_queries, statements, note)

    def session(self, pid: int) -> ServerSession | None:
        """The server's session with this pid, whichever database it is on, or None when there is none."""
        with self.connect() as conn:
            row = conn.execute(
                "SELECT pid, datname, usename, coalesce(application_name, ''), backend_type, state, backend_start,"
                " extract(epoch FROM now() - query_start)::float, left(query, %s), current_database(),"
                " pid = pg_backend_pid() OR coalesce(application_name, '') LIKE %s"
                " FROM pg_stat_activity WHERE pid = %s",
                (QUERY_TEXT_LIMIT, BOT_APP + "%", pid),
            ).fetchone()
        return ServerSession(*row) if row else None

    def end(self, session: ServerSession, terminate: bool) -> bool:
        """Cancels the session's statement (or ends the session) in one statement that checks, as it signals, that the
        pid is still that very session of the application's database and none of the bot's: False when it is not."""
        signal = "pg_terminate_backend" if terminate else "pg_cancel_backend"
        with self.connect() as conn:
            row = conn.execute(
                sql.SQL(
                    "SELECT {}(pid) FROM pg_stat_activity WHERE pid = %s AND backend_start = %s AND datname = current_database()"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid() AND coalesce(application_name, '') NOT LIKE %s"
                ).format(sql.Identifier(signal)),
                (session.pid, session.started, BOT_APP + "%"),
            ).fetchone()
        return bool(row and row[0])

    @staticmethod
    def _slow_statements(conn: psycopg.Connection, limit: int) -> tuple[list[SlowStatement] | None, str | None]:
        installed = conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'").fetchone()
        if not installed:
            return None, "pg_stat_statements is not installed in this database, so there are no statement timings"
        try:
            rows = conn.execute(
                "SELECT left(query, %s), calls, mean_exec_time"
                " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                # pg_stat_statements keeps no application_name: what the bot and pg_dump run (catalogue and
                # statistics queries, COPY ... TO stdout, SELECT 1) is left out by its text instead.
                " AND query !~* %s"
                " ORDER BY mean_exec_time DESC LIMIT %s",
                (QUERY_TEXT_LIMIT, _MAINTENANCE_STATEMENTS, limit),
            ).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return None, "pg_stat_statements is installed but not in shared_preload_libraries, so it records nothing"
        return [SlowStatement(query, int(calls), float(mean)) for query, calls, mean in rows], None
