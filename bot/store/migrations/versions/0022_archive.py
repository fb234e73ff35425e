"""Base backups for point-in-time recovery: a backup of kind "base" records its first WAL segment and location
and when the server's backup began and ended.

Revision ID: 0022
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.add_column(sa.Column("wal_start_file", sa.String(24)))
        batch.add_column(sa.Column("wal_start_lsn", sa.String(32)))
        batch.add_column(sa.Column("base_started_at", UTCDateTime()))
        batch.add_column(sa.Column("base_ended_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        for column in ("base_ended_at", "base_started_at", "wal_start_lsn", "wal_start_file"):
            batch.drop_column(column)
