"""Swap restores: the journal names the new database and the kept copy, the mode, and the app's downtime.

`backup_id` is empty for a point in time (`target` describes it). `mode` is swap or in_place; `new_database` the
one filled beside live, `old_database` the kept copy live was renamed to; `swap_refused` why a swap could not be
made; `filled_at`, `app_stopped_at` and `app_back_at` bound the app's downtime; `dropped_at` when a later duty
dropped the kept copy after the backups' retention.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("restore_runs") as table:
        table.alter_column("backup_id", existing_type=sa.Integer(), nullable=True)
        table.add_column(sa.Column("mode", sa.String(16)))
        table.add_column(sa.Column("new_database", sa.String(128)))
        table.add_column(sa.Column("old_database", sa.String(128)))
        table.add_column(sa.Column("target", sa.Text()))
        table.add_column(sa.Column("swap_refused", sa.Text()))
        table.add_column(sa.Column("filled_at", UTCDateTime()))
        table.add_column(sa.Column("app_stopped_at", UTCDateTime()))
        table.add_column(sa.Column("app_back_at", UTCDateTime()))
        table.add_column(sa.Column("dropped_at", UTCDateTime()))


def downgrade() -> None:
    with op.batch_alter_table("restore_runs") as table:
        for column in ("dropped_at", "app_back_at", "app_stopped_at", "filled_at", "swap_refused", "target", "old_database",
                       "new_database", "mode"):
            table.drop_column(column)
        table.alter_column("backup_id", existing_type=sa.Integer(), nullable=False)
