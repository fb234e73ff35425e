"""Scheduled duties: one row per duty and slot, and the watch's per-key state.

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "duty_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("duty", sa.String(32), nullable=False),
        sa.Column("slot", UTCDateTime(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("job_id", sa.Integer),
        sa.Column("claimed_by", sa.String(160), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("message", sa.Text),
        sa.UniqueConstraint("duty", "slot", name="uq_duty_runs_duty_slot"),
    )
    op.create_index("ix_duty_runs_state", "duty_runs", ["state"])
    op.create_table(
        "watch_state",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("bad_count", sa.Integer, nullable=False),
        sa.Column("good_count", sa.Integer, nullable=False),
        sa.Column("firing_since", UTCDateTime()),
        sa.Column("alerted", sa.Boolean, nullable=False),
        sa.Column("alert_ts", sa.String(32)),
        sa.Column("detail", sa.Text),
        sa.Column("checked_at", UTCDateTime(), nullable=False),
        sa.Column("muted_until", UTCDateTime()),
        sa.Column("muted_by", sa.String(64)),
    )


def downgrade() -> None:
    op.drop_table("watch_state")
    op.drop_index("ix_duty_runs_state", "duty_runs")
    op.drop_table("duty_runs")
