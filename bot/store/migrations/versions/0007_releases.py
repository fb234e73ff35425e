"""The release ledger.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stack", sa.String(160), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("ref", sa.Text),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(64)),
        sa.Column("approved_by", sa.String(64)),
        sa.Column("job_id", sa.Integer),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("replaced_id", sa.Integer),
        sa.Column("pid", sa.Integer),
        sa.Column("exit_code", sa.Integer),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("output", sa.Text),
        sa.Column("note", sa.Text),
    )
    op.create_index("ix_releases_stack", "releases", ["stack"])
    op.create_index("ix_releases_job_id", "releases", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_releases_job_id", "releases")
    op.drop_index("ix_releases_stack", "releases")
    op.drop_table("releases")
