"""The approvers' votes on a request: one row per person and request, so one person counts once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime

APPROVE_VOTE, DENY_VOTE = "approve", "deny"


class ApprovalVote(Base):
    __tablename__ = "approval_votes"
    __table_args__ = (UniqueConstraint("job_id", "user_id", name="uq_approval_votes_job_user"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(Integer)
    user_id: Mapped[str] = mapped_column(String(64))
    vote: Mapped[str] = mapped_column(String(8))  # approve or deny
    # The request's required user groups this person was a member of when they voted (Slack's answer then).
    groups: Mapped[list | None] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
