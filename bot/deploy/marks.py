"""The trends of a window drawn with what changed in it: each release of the ledger and each /restart of a service
(its audit row), as the chart's vertical lines."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.deploy.model import Release
from bot.stack.chart import COLUMNS, Chart, Mark, render
from bot.stack.trends import read
from bot.store.engine import AuditEntry

if TYPE_CHECKING:
    from bot.store.engine import Store

MARKS = 40  # at most this many lines on a chart, the newest: a week of restarts would hide the curves


def marks(store: "Store", stack: str, start: datetime, end: datetime) -> list[Mark]:
    found = []
    with store.session() as session:
        for release in session.scalars(
            select(Release).where(Release.stack == stack, Release.started_at >= start, Release.started_at <= end)
        ):
            found.append(Mark(release.started_at, f"{release.kind} {release.short[:7]}", "release"))
        # /restart with no service is a release (above); a restart of services is only in the audit.
        for entry in session.scalars(
            select(AuditEntry).where(
                AuditEntry.command == "restart", AuditEntry.outcome == "succeeded", AuditEntry.at >= start, AuditEntry.at <= end
            )
        ):
            services = (entry.arguments or {}).get("services") or []
            if services:
                found.append(Mark(entry.at, "restart " + ", ".join(services)[:40], "restart"))
    return sorted(found, key=lambda mark: mark.at)[-MARKS:]


def trend_chart(store: "Store", stack: str, start: datetime, end: datetime, tz: tzinfo, title: str) -> Chart | None:
    """The stored samples of [start, end] with the window's releases and restarts; None when nothing was sampled."""
    series = read(store, start, end, COLUMNS)
    if not series:
        return None
    return render(series, start, end, marks(store, stack, start, end), tz, title)
