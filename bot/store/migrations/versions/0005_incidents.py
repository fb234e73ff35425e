"""Incidents, their timeline events and post-mortems.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel_id", sa.String(64), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("severity", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.Text),
        sa.Column("summary", sa.Text),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("started_by", sa.String(64), nullable=False),
        sa.Column("resolved_at", UTCDateTime()),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("message_ts", sa.String(32)),
        sa.Column("imported", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("names", sa.JSON),
    )
    op.create_index(
        "ux_incidents_open_channel", "incidents", ["channel_id"], unique=True,
        sqlite_where=sa.text("state = 'open'"), postgresql_where=sa.text("state = 'open'"),
    )
    op.create_table(
        "incident_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("occurred_at", UTCDateTime(), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("actor", sa.String(64)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("details", sa.JSON),
        sa.Column("channel_id", sa.String(64)),
        sa.Column("ts", sa.String(32)),
        sa.Column("thread_ts", sa.String(32)),
        sa.Column("permalink", sa.Text),
        sa.UniqueConstraint("incident_id", "channel_id", "ts", "kind", name="uq_incident_events_message"),
    )
    op.create_index("ix_incident_events_incident_occurred", "incident_events", ["incident_id", "occurred_at"])
    op.create_table(
        "incident_postmortems",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("markdown", sa.Text, nullable=False),
        sa.Column("file_id", sa.String(32)),
    )
    op.create_index("ix_incident_postmortems_incident_id", "incident_postmortems", ["incident_id"])


def downgrade() -> None:
    op.drop_table("incident_postmortems")
    op.drop_index("ix_incident_events_incident_occurred", "incident_events")
    op.drop_table("incident_events")
    op.drop_index("ux_incidents_open_channel", "incidents")
    op.drop_table("incidents")
