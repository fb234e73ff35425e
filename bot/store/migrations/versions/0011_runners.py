"""One heartbeat per runner process: a runners table; a job's liveness is its runner's, so jobs lose their own.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bot_runners",
        sa.Column("id", sa.String(160), primary_key=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_bot_runners_heartbeat_at", "bot_runners", ["heartbeat_at"])
    # A plain DROP COLUMN: SQLite (3.35+) drops it in place, no batch copy of the table.
    op.drop_column("bot_jobs", "heartbeat_at")


def downgrade() -> None:
    op.add_column("bot_jobs", sa.Column("heartbeat_at", UTCDateTime()))
    op.drop_index("ix_bot_runners_heartbeat_at", "bot_runners")
    op.drop_table("bot_runners")
