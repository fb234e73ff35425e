"""A deploy script known by more than its pid: host and PID namespace, pid and start time.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.add_column(sa.Column("process", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("releases") as batch:
        batch.drop_column("process")
