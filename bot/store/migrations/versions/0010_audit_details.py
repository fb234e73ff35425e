"""What a read-only command found, as data: audit rows carry it, so a timeline and a post-mortem can read the numbers.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("details", sa.JSON))


def downgrade() -> None:
    op.drop_column("audit_log", "details")
