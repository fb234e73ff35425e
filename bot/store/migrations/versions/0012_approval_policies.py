"""Approval policies: each request keeps the rule it was asked under (`policy`) and its `--reason`; the approvers'
votes, one row per person and request (the unique key is "one person counts once").

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bot_jobs", sa.Column("policy", sa.JSON()))
    op.add_column("bot_jobs", sa.Column("reason", sa.Text()))
    op.create_table(
        "approval_votes",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("vote", sa.String(8), nullable=False),
        sa.Column("groups", sa.JSON()),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "user_id", name="uq_approval_votes_job_user"),
    )


def downgrade() -> None:
    op.drop_table("approval_votes")
    op.drop_column("bot_jobs", "reason")
    op.drop_column("bot_jobs", "policy")
