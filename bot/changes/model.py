"""The snapshots behind "stack file changed" and "backend: env DATABASE_URL changed", and the changes they noticed.

A snapshot holds digests, never values: a file's SHA-256, and per environment variable NAME a salted SHA-256 of its
value (the salt is the row's own, so equal values of two services or two installations do not look alike)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bot.store.engine import Base, UTCDateTime


class ChangeSnapshot(Base):
    __tablename__ = "change_snapshots"

    # "file:PATH" for a watched file, "env:SERVICE" for a service's environment; per stack.
    stack: Mapped[str] = mapped_column(String(160), primary_key=True)
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    salt: Mapped[str] = mapped_column(String(64))
    digests: Mapped[dict] = mapped_column(JSON)  # {"file": sha256} or {NAME: salted sha256 of its value}
    version: Mapped[int] = mapped_column(Integer)  # each change of digests is one conditional UPDATE on it
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())
    watched_since: Mapped[datetime] = mapped_column(UTCDateTime())  # the first snapshot: a change before it is unknown


class NoticedChange(Base):
    __tablename__ = "change_noticed"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stack: Mapped[str] = mapped_column(String(160), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    subject: Mapped[str] = mapped_column(String(400))  # "stack file", "compose file", or a service's name
    what: Mapped[str] = mapped_column(Text)  # "changed", "env DATABASE_URL changed", "env API_TOKEN added"
