"""The database-level half of a swap restore, on the live server: a new database made like live, the swap by rename.

A restore fills `<db>__restore_<job>` beside the live database while the app keeps running; the app is stopped only
for the swap: both renames in ONE transaction (ALTER DATABASE ... RENAME is transactional), so a bot killed between
them leaves the names as they were, never a missing live name. Live becomes `<db>__before_<job>`, the kept copy.

What a new database must take from live is copied and then compared, never assumed: owner, encoding, locale,
connection limit, tablespace, comment, database-level settings (`ALTER DATABASE ... SET`, also per role) and grants.
Whatever cannot be copied exactly, or what a rename would break (a subscription, a logical replication slot, an
extension bound to the database, a session the bot may not end), is a reason to restore in place instead: `SwapError`
says it in one sentence. Every name goes through psycopg.sql.Identifier, every value through sql.Literal.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import psycopg
from psycopg import sql

from bot.backups.tools import ContainerTools, PgTools
from bot.frame.faults import reached
from bot.frame.humanize import size as human_size
from bot.stack.compose import StackError

NAME_BYTES = 63  # PostgreSQL cuts longer names silently (NAMEDATALEN - 1): a kept copy's name must fit whole
SESSIONS_SECONDS = 10.0  # how long the swap keeps ending sessions that come back before it gives up
# Extensions that a rename would leave working on the kept copy, or that keep sessions of their own on the database.
BOUND_EXTENSIONS = {
    "pg_cron": "its scheduler runs jobs in the database its setting cron.database_name names",
    "timescaledb": "its background workers keep sessions on the database",
    "pglogical": "its replication is bound to the database",
    "citus": "its cluster metadata names the database",
}


# A copy beside live needs live's size again and a tenth more, and room for the WAL its load writes before the
# checkpoints recycle it (max_wal_size's default): less free than that, and the copy could fill the disk live is on.
ROOM_HEADROOM = 0.10
WAL_ROOM_BYTES = 1 << 30


class SwapError(StackError):
    """Why a swap cannot be made (the restore goes in place instead), in one sentence."""


def names(database: str, job_id: int) -> tuple[str, str]:
    """The new database filled beside live, and the name live is kept under."""
    return f"{database}__restore_{job_id}", f"{database}__before_{job_id}"


@dataclass(frozen=True)
class Names:
    live: bool
    new: bool
    old: bool


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class Databases:
    """The live server's databases, through maintenance connections (to `postgres`, or `template1`) of the DSN's user."""

    def __init__(self, dsn: str, timeout: float = 10.0):
        self._dsn, self._timeout = dsn, timeout

    def _connect(self, database: str | None = None) -> psycopg.Connection:
        tried = [database] if database else ["postgres", "template1"]
        for index, name in enumerate(tried):
            try:
                return psycopg.connect(
                    psycopg.conninfo.make_conninfo(self._dsn, dbname=name), autocommit=True,
                    connect_timeout=max(2, round(self._timeout)), application_name="flowstate-bot-maintenance",
                )
            except psycopg.OperationalError as error:
                if index == len(tried) - 1:
                    raise StackError(f"The database server refused a maintenance connection: {_first_line(error)}") from None
        raise AssertionError("unreachable")

    def present(self, *wanted: str) -> set[str]:
        with self._connect() as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(wanted),))}

    def names(self, live: str, new: str, old: str) -> Names:
        found = self.present(live, new, old)
        return Names(live in found, new in found, old in found)

    def data_directory_and_size(self, database: str) -> tuple[str, int]:
        """The server's data directory (where a new database's files go, in the default tablespace) and the
        database's size in bytes."""
        with self._connect() as conn:
            try:
                directory = conn.execute("SELECT current_setting('data_directory')").fetchone()[0]
            except psycopg.Error as error:  # not a superuser nor in pg_read_all_settings
                raise StackError(f"The data directory cannot be read: {_first_line(error)}") from None
            return directory, conn.execute("SELECT pg_database_size(%s)", (database,)).fetchone()[0]

    def kept_copies(self, database: str) -> list[tuple[str, int]]:
        """The kept copies of this database on the server: (name, size in bytes)."""
        pattern = database.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%") + "\\_\\_before\\_%"
        with self._connect() as conn:
            return [(name, size) for name, size in conn.execute(
                "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname LIKE %s ORDER BY 1", (pattern,))]

    # ---- can a swap be made? -------------------------------------------------------------------------

    def why_not(self, live: str, new: str, old: str, prefilled: bool = False) -> str | None:
        """Why a swap cannot be made, checked before anything is created or stopped; None when it can. `prefilled`:
        `new` may exist, as the copy made in the background while the request waited."""
        longest = max(new, old, key=len)
        if len(longest.encode()) > NAME_BYTES:
            return f"the name {longest} would be longer than PostgreSQL's {NAME_BYTES} bytes"
        with self._connect() as conn:
            taken = [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)",
                                                    ([old] if prefilled else [new, old],))]
            if taken:
                return f"a database named {taken[0]} already exists"
            user, superuser, createdb, owner, owns = conn.execute(
                "SELECT current_user, r.rolsuper, r.rolcreatedb, pg_get_userbyid(d.datdba), pg_has_role(current_user, d.datdba, 'MEMBER')"
                " FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = %s", (live,)).fetchone()
            if not superuser and not (createdb and owns):
                return f"the DSN's user {user} may not create and rename databases (it needs CREATEDB and to be {owner} or a member of it)"
            slot = conn.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s LIMIT 1", (live,)).fetchone()
            if slot:
                return f"the replication slot {slot[0]} is on {live}, and a rename would leave it on the kept copy"
            subscription = conn.execute(
                "SELECT s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = %s LIMIT 1",
                (live,)).fetchone()
            if subscription:
                return f"the subscription {subscription[0]} replicates into {live}, and a rename would leave it on the kept copy"
            stuck = self._sessions_it_cannot_end(conn, live)
            if stuck:
                return stuck
        with self._connect(live) as conn:
            for (extension,) in conn.execute("SELECT extname FROM pg_extension WHERE extname = ANY(%s) ORDER BY 1", (list(BOUND_EXTENSIONS),)):
                return f"the extension {extension} is installed in {live}: {BOUND_EXTENSIONS[extension]}"
        return None

    @staticmethod
    def _sessions_it_cannot_end(conn: psycopg.Connection, database: str) -> str | None:
        """A session on the database that pg_terminate_backend would refuse to this user, or a background worker."""
        # A session of another role shows its backend_type to a user who is not allowed to see it as NULL: a client.
        row = conn.execute(
            "SELECT a.pid, a.usename, a.kind, coalesce(a.application_name, '') FROM"
            " (SELECT *, coalesce(backend_type, 'client backend') AS kind FROM pg_stat_activity) a"
            " WHERE a.datname = %s AND a.pid <> pg_backend_pid() AND a.kind <> 'autovacuum worker' AND ("
            "   a.kind <> 'client backend' OR NOT ("
            "     (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
            "     OR pg_has_role(current_user, a.usesysid, 'USAGE')"
            "     OR (pg_has_role(current_user, 'pg_signal_backend', 'USAGE')"
            "         AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = a.usesysid))))"
            " ORDER BY a.backend_start LIMIT 1", (database,)).fetchone()
        if row is None:
            return None
        pid, user, kind, application = row
        if kind != "client backend":
            return f"a {kind} (pid {pid}) is connected to {database}, and the bot cannot end it"
        return (f"the session {pid} of {user}{f' ({application})' if application else ''} on {database} will not end: "
                f"the DSN's user may not terminate it")

    # ---- a new database like live --------------------------------------------------------------------

    def create_like(self, live: str, new: str) -> None:
        """CREATE DATABASE new like live, its settings and grants copied and compared; SwapError (new dropped) if not exact."""
        with self._connect() as conn:
            created = False
            try:
                (oid, owner, encoding, collate, ctype, provider, icu, limit, space, acl_null, comment) = conn.execute(
                    "SELECT d.oid, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,"
                    " d.datlocprovider, d.daticulocale, d.datconnlimit, t.spcname, d.datacl IS NULL,"
                    " shobj_description(d.oid, 'pg_database')"
                    " FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE d.datname = %s", (live,)).fetchone()
                locale = sql.SQL("LOCALE_PROVIDER = icu ICU_LOCALE = {}").format(sql.Literal(icu)) if provider == "i" else sql.SQL("LOCALE_PROVIDER = libc")
                # Naming pg_default needs CREATE on it, which the default itself does not: only another tablespace is named.
                tablespace = sql.SQL("") if space == "pg_default" else sql.SQL(" TABLESPACE = {}").format(sql.Identifier(space))
                conn.execute(sql.SQL(
                    "CREATE DATABASE {} WITH TEMPLATE = template0 OWNER = {} ENCODING = {} {} LC_COLLATE = {} LC_CTYPE = {}"
                    " CONNECTION LIMIT = {}{}").format(
                    sql.Identifier(new), sql.Identifier(owner), sql.Literal(encoding), locale, sql.Literal(collate), sql.Literal(ctype),
                    sql.Literal(limit), tablespace))
                created = True
                for role, setting in self._settings(conn, oid):
                    name, _, value = setting.partition("=")
                    target = (sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(role), sql.Identifier(new)) if role
                              else sql.SQL("ALTER DATABASE {}").format(sql.Identifier(new)))
                    conn.execute(sql.SQL("{} SET {} = {}").format(target, sql.Identifier(name), sql.Literal(value)))
                if not acl_null:
                    conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(new)))
                    for grantee, privilege, grantable in conn.execute(
                            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, a.is_grantable"
                            " FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s AND a.grantee <> d.datdba", (live,)).fetchall():
                        conn.execute(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                            sql.SQL(privilege), sql.Identifier(new), sql.Identifier(grantee) if grantee else sql.SQL("PUBLIC"),
                            sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")))
                if comment is not None:
                    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(new), sql.Literal(comment)))
                differs = self._differences(conn, live, new)
                if differs:
                    raise SwapError(f"the new database's {differs} could not be made the same as {live}'s")
            except (psycopg.Error, SwapError) as error:
                if created:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(new)))
                if isinstance(error, SwapError):
                    raise
                raise SwapError(f"a database like {live} could not be created: {_first_line(error)}") from None

    @staticmethod
    def _settings(conn: psycopg.Connection, oid: int) -> list[tuple[str | None, str]]:
        return conn.execute(
            "SELECT r.rolname, unnest(s.setconfig) FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole"
            " WHERE s.setdatabase = %s ORDER BY 1, 2", (oid,)).fetchall()

    @staticmethod
    def _differences(conn: psycopg.Connection, live: str, new: str) -> str | None:
        """What differs between the two databases' own properties ("settings", "grants"...); None when alike."""
        checks = {
            "owner, encoding, locale, connection limit and tablespace": "SELECT datdba::regrole::text, encoding, datcollate, datctype,"
            " datlocprovider, coalesce(daticulocale, ''), datconnlimit, dattablespace FROM pg_database WHERE datname = %s",
            "settings": "SELECT coalesce(r.rolname, ''), unnest(s.setconfig) FROM pg_database d JOIN pg_db_role_setting s"
            " ON s.setdatabase = d.oid LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s ORDER BY 1, 2",
            "grants": "SELECT a.grantor::regrole::text, a.grantee, a.privilege_type, a.is_grantable FROM pg_database d,"
            " aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = %s ORDER BY 1, 2, 3",
            "comment": "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        }
        for what, query in checks.items():
            if conn.execute(query, (live,)).fetchall() != conn.execute(query, (new,)).fetchall():
                return what
        return None

    # ---- the swap and its way back ---------------------------------------------------------------------

    def swap(self, live: str, new: str, old: str, fault: Callable[[str], None], seconds: float = SESSIONS_SECONDS) -> None:
        """End the sessions on live, then rename live to old and new to live in one transaction; SwapError if the
        sessions keep it busy past `seconds` (nothing is renamed then)."""
        self._rename_pair(live, old, new, live, fault, seconds)

    def swap_back(self, live: str, new: str, old: str, seconds: float = SESSIONS_SECONDS) -> None:
        """The way back: live (the restored data) becomes new again and the kept copy live, in one transaction."""
        self._rename_pair(live, new, old, live, lambda _point: None, seconds)

    def finish_half_swap(self, live: str, new: str) -> None:
        """Only for a journal that says the swap had begun and a live name that is missing (renamed by hand)."""
        with self._connect() as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(live)))

    def _rename_pair(self, first: str, first_to: str, second: str, second_to: str, fault: Callable[[str], None], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        with self._connect() as conn:
            while True:
                self._end_sessions(conn, [first, second])
                try:
                    with conn.transaction():
                        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(first), sql.Identifier(first_to)))
                        reached(fault, "restore:after_first_rename")
                        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(second), sql.Identifier(second_to)))
                    return
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() >= deadline:
                        busy = self._busy(conn, [first, second])
                        raise SwapError(f"sessions on {first} kept coming back for {seconds:g} s ({busy})") from None
                    time.sleep(0.1)
                except psycopg.Error as error:
                    raise SwapError(f"renaming {first} failed: {_first_line(error)}") from None

    def _end_sessions(self, conn: psycopg.Connection, databases: list[str]) -> None:
        for database in databases:
            stuck = self._sessions_it_cannot_end(conn, database)
            if stuck:
                raise SwapError(stuck)
        for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()", (databases,)).fetchall():
            try:
                conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            except psycopg.errors.InsufficientPrivilege as error:
                raise SwapError(f"the session {pid} will not end: {_first_line(error)}") from None

    @staticmethod
    def _busy(conn: psycopg.Connection, databases: list[str]) -> str:
        rows = conn.execute(
            "SELECT pid, coalesce(usename, backend_type), coalesce(application_name, '') FROM pg_stat_activity"
            " WHERE datname = ANY(%s) AND pid <> pg_backend_pid() ORDER BY backend_start LIMIT 3", (databases,)).fetchall()
        return ", ".join(f"session {pid} of {user}{f' ({app})' if app else ''}" for pid, user, app in rows) or "none left now"

    def drop(self, database: str) -> None:
        with self._connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def no_room(tools: PgTools, databases: "Databases", live: str) -> str | None:
    """Why a copy of `live` would not fit beside it on the database server's disk, in one sentence (the swap is then
    not made: a copy that fills the disk would stop live too); None when it fits, or when the disk cannot be read
    from here (a database server outside the stack, or df refused: the swap goes on as before)."""
    if not isinstance(tools, ContainerTools):
        return None
    try:
        directory, live_bytes = databases.data_directory_and_size(live)
        out = tools.check(["df", "-Pk", "--", directory], "Reading the free space of the database's disk")
        free = int(out.strip().splitlines()[-1].split()[3]) * 1024
    except (StackError, ValueError, IndexError):
        return None
    needed = int(live_bytes * (1 + ROOM_HEADROOM)) + WAL_ROOM_BYTES
    if free >= needed:
        return None
    return (f"the database server's disk has {human_size(free)} free, and a copy of {live} ({human_size(live_bytes)}) "
            f"beside it needs about {human_size(needed)}")
