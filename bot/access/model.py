"""Roles granted for a while: one row per temporary grant, of the bot's own roles (`bot`) or the app's users table (`app`).

At most one grant runs per subject (a partial unique index: the row with no `reverted_at`). Its warning and its end
are each one conditional UPDATE (`warned_at IS NULL`, `reverted_at IS NULL`): the replica whose UPDATE changed the
row acts, the others do nothing.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

BOT, APP = "bot", "app"
# How a grant ended (`ended`): its time came and the old role is back; its time came but the role had been changed
# by other means, so it was left; revoked early; replaced by a change by hand; kept for good by a grant without --for;
# the app's table could not be changed when it was made. REVERTING: an app grant's end is claimed and the app's
# table is being written (a replica that died there leaves it, and another takes it over after a while).
REVERTED, LEFT, REVOKED, REPLACED, KEPT, FAILED, REVERTING = "reverted", "left", "revoked", "replaced", "kept", "failed", "reverting"


class TemporaryGrant(Base):
    __tablename__ = "temporary_grants"
    __table_args__ = (
        Index(
            "uq_temporary_grants_running", "kind", "subject", unique=True,
            sqlite_where=text("reverted_at IS NULL"), postgresql_where=text("reverted_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))  # BOT (a Slack user's role in the bot) or APP (an app user's role)
    subject: Mapped[str] = mapped_column(String(320))  # the Slack user id, or the app user's email (lower case)
    role: Mapped[str] = mapped_column(String(64))  # the role granted for a while
    previous_role: Mapped[str | None] = mapped_column(String(64))  # the role to come back to; None: no role in the bot
    previous_granted_by: Mapped[str | None] = mapped_column(String(64))  # who had granted that bot role, kept with it
    previous_granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    granted_by: Mapped[str] = mapped_column(String(64))  # who asked (for /user-role, warned beside the grantee)
    channel_id: Mapped[str | None] = mapped_column(String(64))  # where it was granted: its end is said there
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reverted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # when it stopped running, however it ended
    ended_by: Mapped[str | None] = mapped_column(String(64))  # "scheduler" at its time, else who ended it
    ended: Mapped[str | None] = mapped_column(String(16))  # how (REVERTED, LEFT, REVOKED, ...)

    @property
    def running(self) -> bool:
        return self.reverted_at is None
