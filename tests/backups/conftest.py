"""A database of each test's own inside the live stack's PostgreSQL: restores replace only it, never flowstate_ai."""

from __future__ import annotations

import secrets

import psycopg
import pytest

from bot.frame.config import DatabaseSection

SEED = """
CREATE TABLE users (
    id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL,
    role text NOT NULL DEFAULT 'user', created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (email, name, role) VALUES
    ('admin@example.com', 'Ada Admin', 'admin'), ('alice@example.com', 'Alice Archer', 'user'),
    ('bob@example.com', 'Bob Baker', 'user');
CREATE TABLE events (
    id bigserial PRIMARY KEY, user_id int NOT NULL REFERENCES users(id), kind text NOT NULL,
    payload jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_user_at ON events (user_id, at);
"""


class AppDatabase:
    def __init__(self, stack, dsn: str, name: str):
        self.stack, self.dsn, self.name = stack, dsn, name

    def query(self, sql: str, params=()) -> list[tuple]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def add_events(self, count: int) -> None:
        self.query(
            "INSERT INTO events (user_id, kind, payload) SELECT 1 + i %% 3, 'page_view',"
            " jsonb_build_object('path', '/p/' || i, 'ms', i %% 997) FROM generate_series(1, %s) i",
            (count,),
        )

    def emails(self) -> list[str]:
        return [row[0] for row in self.query("SELECT email FROM users ORDER BY id")]


def _admin_dsn(live_stack, database: str = "postgres") -> str:
    return psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname=database)


def _app_db(live_stack, name: str, owner: str | None = None):
    """A fresh database (users, events) in the stack's postgres container, owned by `owner` (the superuser when None)
    who is also the DSN's user; a stack config that names it. Dropped afterwards with whatever swaps left beside it."""
    user = owner or live_stack.database.user
    with psycopg.connect(_admin_dsn(live_stack), autocommit=True) as conn:
        if owner:
            conn.execute(f'CREATE ROLE "{owner}" LOGIN CREATEDB')
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{user}"')
    dsn = psycopg.conninfo.make_conninfo(live_stack.database.dsn, dbname=name, user=user)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SEED)
    database = DatabaseSection(dsn=dsn, compose_service=live_stack.database.compose_service, user=user, name=name)
    yield AppDatabase(live_stack.model_copy(update={"database": database}), dsn, name)
    with psycopg.connect(_admin_dsn(live_stack), autocommit=True) as conn:
        # and what swap restores left beside it: the kept copies (<name>__before_<job>) and unfinished new ones
        for (database,) in conn.execute("SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s", (name, name + "\\_\\_%")).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        if owner:
            conn.execute(f'DROP ROLE IF EXISTS "{owner}"')


@pytest.fixture
def app_db(live_stack):
    """A database of the test's own, restored by a swap."""
    yield from _app_db(live_stack, f"flowstate_restore_{secrets.token_hex(4)}")


@pytest.fixture
def swarm_app_db(swarm_stack):
    """app_db in the Swarm test world's PostgreSQL (tests/swarm)."""
    yield from _app_db(swarm_stack, f"flowstate_restore_{secrets.token_hex(4)}")


def app_database(live_stack):
    """app_db's making and dropping, for a stack of any runtime (tests/swarm's too)."""
    yield from _app_db(live_stack, f"flowstate_restore_{secrets.token_hex(4)}")


@pytest.fixture
def in_place_db(live_stack):
    """A database whose name is too long for a kept copy's name (`<name>__before_<job>` passes PostgreSQL's 63 bytes):
    its restores go in place, as before swaps existed (a safety backup, pg_restore --clean in one transaction)."""
    yield from _app_db(live_stack, f"flowstate_restore_in_place_{secrets.token_hex(4)}_{'x' * 20}")


@pytest.fixture
def owned_app_db(live_stack):
    """A database owned by a role of its own (LOGIN CREATEDB, not a superuser), which the DSN names: it may swap its
    database, but not end a superuser's session."""
    tag = secrets.token_hex(4)
    yield from _app_db(live_stack, f"flowstate_restore_{tag}", owner=f"flowstate_owner_{tag}")


def scratch_databases(live_stack) -> list[str]:
    with psycopg.connect(_admin_dsn(live_stack), autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'flowstate\\_verify\\_%'")]
