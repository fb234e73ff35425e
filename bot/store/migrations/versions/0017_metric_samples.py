"""The trends: one row per minute per measured series (edge_error_rate, cpu:SERVICE, ...), and the minutes sampled,
each claimed by one replica.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sampled_minutes",
        sa.Column("minute", sa.Integer(), primary_key=True),  # minutes since 1970-01-01 UTC
        sa.Column("claimed_by", sa.String(160), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "metric_samples",
        sa.Column("series", sa.String(160), primary_key=True),
        sa.Column("minute", sa.Integer(), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )
    op.create_index("ix_metric_samples_minute", "metric_samples", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_metric_samples_minute", "metric_samples")
    op.drop_table("metric_samples")
    op.drop_table("sampled_minutes")
