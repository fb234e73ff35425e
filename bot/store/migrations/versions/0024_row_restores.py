"""Row undo's journal: /restore --table, the scratch database it recovered the rows into, and the write-back.

Revision ID: 0024
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "row_restores",
        sa.Column("job_id", sa.Integer(), primary_key=True),
        sa.Column("stack", sa.String(160), nullable=False),
        sa.Column("database", sa.String(128), nullable=False),
        sa.Column("table_name", sa.String(160), nullable=False),
        sa.Column("backup_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("selection", sa.Text(), nullable=False),
        sa.Column("scratch", sa.String(128), nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.Column("xid", sa.String(32), nullable=True),
        sa.Column("written", sa.Integer(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("dropped_at", UTCDateTime(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
    )
    op.create_index("row_restores_dropped_at", "row_restores", ["dropped_at"])


def downgrade() -> None:
    op.drop_index("row_restores_dropped_at", "row_restores")
    op.drop_table("row_restores")
