"""Follow-up of a request nobody decides: when its approvers were reminded and when it was escalated (each at most once).

Revision ID: 0013
Revises: 0011 (the coordinator re-chains it after 0012, the policies part's)
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bot_jobs", sa.Column("reminded_at", UTCDateTime()))
    op.add_column("bot_jobs", sa.Column("escalated_at", UTCDateTime()))


def downgrade() -> None:
    op.drop_column("bot_jobs", "escalated_at")
    op.drop_column("bot_jobs", "reminded_at")
