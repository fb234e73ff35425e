"""Point-in-time restores: the new database filled in the background while the request waits for its approval.

`fill` says where that copy stands (filling, dropping, filled, failed, dropped, or taken by the approved run),
`fill_holder` which runner (bot_runners.id) is filling or dropping it, `fill_started_at` and `fill_finished_at` how
long it took, `fill_error` why it failed. The columns 0023 made for an approved run of its own (`step`,
`old_database`, `services`) go: the approved run is swap's Restore, journalled in restore_runs.

Revision ID: 0025
Revises: 0024
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pitr_scratch") as table:
        for column in ("step", "old_database", "services"):
            table.drop_column(column)
        table.add_column(sa.Column("fill", sa.String(16)))
        table.add_column(sa.Column("fill_holder", sa.String(160)))
        table.add_column(sa.Column("fill_started_at", UTCDateTime()))
        table.add_column(sa.Column("fill_finished_at", UTCDateTime()))
        table.add_column(sa.Column("fill_error", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("pitr_scratch") as table:
        for column in ("fill_error", "fill_finished_at", "fill_started_at", "fill_holder", "fill"):
            table.drop_column(column)
        table.add_column(sa.Column("step", sa.String(16)))
        table.add_column(sa.Column("old_database", sa.String(128)))
        table.add_column(sa.Column("services", sa.JSON()))
