"""Durable jobs (with their approvals), the one-change lock, and audit rows linked to jobs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bot_jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedupe_key", sa.String(128), unique=True),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("requester", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64)),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("arguments", sa.JSON),
        sa.Column("response_url", sa.Text),
        sa.Column("break_glass", sa.Text),
        sa.Column("approver", sa.String(64)),
        sa.Column("decided_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("message_channel", sa.String(64)),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("holder", sa.String(160)),
        sa.Column("heartbeat_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("result", sa.Text),
        sa.Column("error_id", sa.String(16)),
    )
    op.create_index("ix_bot_jobs_state", "bot_jobs", ["state"])
    op.create_table(
        "change_locks",
        sa.Column("stack", sa.String(160), primary_key=True),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("requester", sa.String(64), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("acquired_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    # A plain ADD COLUMN: a batch copy of the table on SQLite would drop its append-only triggers.
    op.add_column("audit_log", sa.Column("job_id", sa.Integer))


def downgrade() -> None:
    op.drop_column("audit_log", "job_id")
    op.drop_table("change_locks")
    op.drop_index("ix_bot_jobs_state", "bot_jobs")
    op.drop_table("bot_jobs")
