"""The incident lead edits or deletes a timeline entry: the original text, who and when, kept on the entry.

Revision ID: 0019
Revises: 0018
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("incident_events") as table:
        table.add_column(sa.Column("original_text", sa.Text()))
        table.add_column(sa.Column("edited_at", UTCDateTime()))
        table.add_column(sa.Column("edited_by", sa.String(64)))
        table.add_column(sa.Column("deleted_at", UTCDateTime()))
        table.add_column(sa.Column("deleted_by", sa.String(64)))
        table.add_column(sa.Column("delete_reason", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("incident_events") as table:
        for column in ("delete_reason", "deleted_by", "deleted_at", "edited_by", "edited_at", "original_text"):
            table.drop_column(column)
