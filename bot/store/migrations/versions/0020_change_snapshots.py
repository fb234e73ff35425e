"""The change card's snapshots of the stack file and services' environment (digests only), and what they noticed.

Revision ID: 0020
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_snapshots",
        sa.Column("stack", sa.String(160), primary_key=True),
        sa.Column("key", sa.String(400), primary_key=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("digests", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("taken_at", UTCDateTime(), nullable=False),
        sa.Column("watched_since", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "change_noticed",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("stack", sa.String(160), nullable=False, index=True),
        sa.Column("at", UTCDateTime(), nullable=False, index=True),
        sa.Column("subject", sa.String(400), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("change_noticed")
    op.drop_table("change_snapshots")
