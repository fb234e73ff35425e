"""The audit log cannot be rewritten by REPLACE (SQLite) or TRUNCATE (PostgreSQL); audit rows name their origin.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# REPLACE INTO deletes the row it conflicts with without firing a DELETE trigger (unless the connection
# turned recursive_triggers on); refusing an insert of an existing id closes that door on any connection.
_SQLITE_NO_REPLACE = """CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log
    WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id)
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"""

_PG_NO_TRUNCATE = """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_NO_TRUNCATE)
    else:
        op.execute(_SQLITE_NO_REPLACE)
    # Who was behind a console command: the OS user that ran the console (a Slack user id can be typed with --as).
    op.add_column("audit_log", sa.Column("origin", sa.String(64)))


def downgrade() -> None:
    op.drop_column("audit_log", "origin")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_no_truncate ON audit_log")
    else:
        op.execute("DROP TRIGGER audit_log_no_replace")
