"""The backup catalogue and the restore journal.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from bot.store.engine import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stack", sa.String(160), nullable=False),
        sa.Column("database", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("job_id", sa.Integer),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("path", sa.Text),
        sa.Column("copy_path", sa.Text),
        sa.Column("size", sa.BigInteger),
        sa.Column("sha256", sa.String(64)),
        sa.Column("duration_ms", sa.Integer),
        sa.Column("server_version", sa.String(64)),
        sa.Column("table_counts", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("verified_at", UTCDateTime()),
        sa.Column("verified_ok", sa.Boolean),
        sa.Column("verification", sa.Text),
        sa.Column("deleted_at", UTCDateTime()),
    )
    op.create_index("ix_backups_state", "backups", ["state"])
    op.create_table(
        "restore_runs",
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("backup_id", sa.Integer, nullable=False),
        sa.Column("database", sa.String(128), nullable=False),
        sa.Column("services", sa.JSON, nullable=False),
        sa.Column("step", sa.String(16), nullable=False),
        sa.Column("safety_backup_id", sa.Integer),
        sa.Column("exec_id", sa.String(128)),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("outcome", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("restore_runs")
    op.drop_index("ix_backups_state", "backups")
    op.drop_table("backups")
