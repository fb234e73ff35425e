"""An approved request that finds the stack's lock held waits for it: the stack it waits on.

Revision ID: 0016
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("bot_jobs", sa.Column("waits_on", sa.String(160)))


def downgrade() -> None:
    op.drop_column("bot_jobs", "waits_on")
