"""Access that expires: temporary grants of the bot's roles and of the app's user roles, each warned and ended once.

Revision ID: 0015
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "temporary_grants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(320), nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("previous_role", sa.String(64)),
        sa.Column("previous_granted_by", sa.String(64)),
        sa.Column("previous_granted_at", UTCDateTime()),
        sa.Column("granted_by", sa.String(64), nullable=False),
        sa.Column("channel_id", sa.String(64)),
        sa.Column("granted_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("warned_at", UTCDateTime()),
        sa.Column("reverted_at", UTCDateTime()),
        sa.Column("ended_by", sa.String(64)),
        sa.Column("ended", sa.String(16)),
    )
    op.create_index("ix_temporary_grants_expires_at", "temporary_grants", ["expires_at"])
    # One running grant per subject: two grants made at once give one row, never two reverts.
    op.create_index(
        "uq_temporary_grants_running", "temporary_grants", ["kind", "subject"], unique=True,
        sqlite_where=sa.text("reverted_at IS NULL"), postgresql_where=sa.text("reverted_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_temporary_grants_running", "temporary_grants")
    op.drop_index("ix_temporary_grants_expires_at", "temporary_grants")
    op.drop_table("temporary_grants")
