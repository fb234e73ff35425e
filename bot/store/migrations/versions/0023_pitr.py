"""Point-in-time restores: the scratch instance of each /restore --to request, and the steps of its approved run.

Revision ID: 0023
Revises: 0020 (the lead re-chains it after 0022 at merge)
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pitr_scratch",
        sa.Column("job_id", sa.Integer(), primary_key=True),
        sa.Column("stack", sa.String(160), nullable=False),
        sa.Column("database", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("target", UTCDateTime(), nullable=False),
        sa.Column("base_backup_id", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("preview", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("step", sa.String(16), nullable=True),
        sa.Column("old_database", sa.String(128), nullable=True),
        sa.Column("services", sa.JSON(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("removed_at", UTCDateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("pitr_scratch")
