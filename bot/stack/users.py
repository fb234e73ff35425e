"""The Flowstate app's users table: the operator guide's user-management SQL, always with bound parameters.

Emails are stored lower-cased and looked up by lower(email): the table's UNIQUE (email) is case-sensitive,
so comparing as typed would let Alice@example.com and alice@example.com become two users.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

import psycopg

from bot.stack.probes import describe_error
from bot.frame.registry import CommandError
from bot.stack.database import StackDatabase

_FIND = "SELECT email, name, role, created_at FROM users WHERE lower(email) = %s"
_FIND_FOR_UPDATE = _FIND + " FOR UPDATE"
_INSERT = "INSERT INTO users (email, name, role) VALUES (%s, %s, %s) RETURNING email, name, role, created_at"
_UPDATE_ROLE = "UPDATE users SET role = %s WHERE email = %s RETURNING email, name, role, created_at"


@dataclass(frozen=True)
class AppUser:
    email: str
    name: str
    role: str
    created_at: datetime


class UserTableError(CommandError):
    """A refusal in one sentence; the table was not changed."""


def refuse_role_change(user: AppUser | None, email: str, role: str) -> None:
    """A role change that can only fail (no such user, or the role it has), in one sentence."""
    if user is None:
        raise UserTableError(f"No user has the email {email}; nothing was changed.")
    if user.role == role:
        raise UserTableError(f"{user.email} already has the {role} role; nothing was changed.")


class StackUsers:
    def __init__(self, dsn: str, timeout: float = 5.0):
        self._database = StackDatabase(dsn, timeout)
        self._dsn = dsn
        self._timeout = timeout

    @property
    def address(self) -> str:
        """Where the table is, never the password; read when asked, so a malformed DSN fails the command, not the start."""
        info = psycopg.conninfo.conninfo_to_dict(self._dsn)
        return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"

    def find(self, email: str) -> AppUser | None:
        with self._connection() as conn:
            return self._one(conn, _FIND, email)

    def add(self, email: str, name: str, role: str) -> AppUser:
        with self._connection() as conn, conn.transaction():
            if existing := self._one(conn, _FIND, email):
                raise UserTableError(
                    f"{existing.email} is already a user ({existing.name}, {existing.role}); nothing was changed."
                )
            try:
                return AppUser(*conn.execute(_INSERT, (email, name, role)).fetchone())
            except psycopg.errors.UniqueViolation:  # added by someone else since the check
                raise UserTableError(f"{email} is already a user; nothing was changed.") from None

    def change_role(self, email: str, role: str) -> tuple[str, AppUser]:
        """The user's previous role, and the user with the new one."""
        with self._connection() as conn, conn.transaction():
            user = self._one(conn, _FIND_FOR_UPDATE, email)
            refuse_role_change(user, email, role)
            return user.role, AppUser(*conn.execute(_UPDATE_ROLE, (role, user.email)).fetchone())

    def restore_role(self, email: str, granted: str, previous: str) -> tuple[bool, str | None]:
        """A role granted for a while changed back, only if the user still has it: whether it was, and the role they have
        now (None: no such user)."""
        with self._connection() as conn, conn.transaction():
            user = self._one(conn, _FIND_FOR_UPDATE, email)
            if user is None or user.role != granted:
                return False, user.role if user else None
            conn.execute(_UPDATE_ROLE, (previous, user.email))
            return True, previous

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        try:
            conn = self._database.connect()
        except psycopg.OperationalError as error:
            reason = describe_error(error, self._timeout)
            raise UserTableError(f"The Flowstate database at {self.address} is not reachable ({reason}).") from None
        with conn:
            yield conn

    @staticmethod
    def _one(conn: psycopg.Connection, query: str, email: str) -> AppUser | None:
        rows = conn.execute(query, (email,)).fetchall()
        if len(rows) > 1:
            spellings = ", ".join(row[0] for row in rows)
            raise UserTableError(
                f"{len(rows)} users have the email {email} in different cases ({spellings}); change them in the database."
            )
        return AppUser(*rows[0]) if rows else None
