"""Change freezes: one row per freeze (typed, or a window's occurrence), and the watch alerts held during one.

Revision ID: 0014
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "freezes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(160), unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("frozen_by", sa.String(64), nullable=False),
        sa.Column("starts_at", UTCDateTime(), nullable=False),
        sa.Column("ends_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("backup_job_id", sa.Integer()),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("ended_by", sa.String(64)),
    )
    op.create_index("ix_freezes_starts_at", "freezes", ["starts_at"])
    op.create_index("ix_freezes_ends_at", "freezes", ["ends_at"])
    op.create_table(
        "freeze_alerts",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("freeze_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("detail", sa.Text()),
        sa.Column("fired_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_freeze_alerts_freeze_id", "freeze_alerts", ["freeze_id"])


def downgrade() -> None:
    op.drop_index("ix_freeze_alerts_freeze_id", "freeze_alerts")
    op.drop_table("freeze_alerts")
    op.drop_index("ix_freezes_ends_at", "freezes")
    op.drop_index("ix_freezes_starts_at", "freezes")
    op.drop_table("freezes")
