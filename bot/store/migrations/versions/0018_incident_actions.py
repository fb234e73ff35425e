"""Follow-ups of incidents with an owner and a due time, reminded once a day when overdue.

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incident_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime()),
        sa.Column("done_by", sa.String(64)),
        sa.Column("reminded_on", sa.Date),
    )
    op.create_index("ix_incident_actions_incident_id", "incident_actions", ["incident_id"])
    op.create_index("ix_incident_actions_open_due", "incident_actions", ["done_at", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_incident_actions_open_due", "incident_actions")
    op.drop_index("ix_incident_actions_incident_id", "incident_actions")
    op.drop_table("incident_actions")
