"""The timeline as data: every entry (deleted ones too, with their state) as CSV and as JSON, redacted.

Times are ISO 8601 twice, in UTC and in the configured zone. A CSV cell that a spreadsheet would take for a
formula (it starts with = + - @, a tab or a carriage return) is prefixed with an apostrophe, so opening the
file runs nothing a timeline entry said.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone, tzinfo
from typing import Any

from bot.frame.redact import redact_value
from bot.incidents.model import Incident, TimelineEvent

SHOWN, EDITED, DELETED = "shown", "edited", "deleted"
TIMES = ("occurred_at", "recorded_at", "edited_at", "deleted_at")
COLUMNS = (
    "id", "occurred_at", "occurred_at_local", "kind", "actor", "actor_name", "text", "state", "original_text",
    "edited_at", "edited_at_local", "edited_by", "deleted_at", "deleted_at_local", "deleted_by", "delete_reason",
    "recorded_at", "recorded_at_local", "channel_id", "ts", "thread_ts", "permalink", "details",
)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _times(moment: datetime | None, tz: tzinfo) -> tuple[str | None, str | None]:
    if moment is None:
        return None, None
    return moment.astimezone(timezone.utc).isoformat(), moment.astimezone(tz).isoformat()


def state(event: TimelineEvent) -> str:
    return DELETED if event.deleted_at else EDITED if event.edited_at else SHOWN


def entries(events: list[TimelineEvent], names: dict[str, str], tz: tzinfo) -> list[dict[str, Any]]:
    """One dict per entry, in the order of COLUMNS, redacted; `details` as stored (an object, or None)."""
    rows = []
    for event in events:
        row: dict[str, Any] = {
            "id": event.id, "kind": event.kind, "actor": event.actor, "actor_name": names.get(event.actor or ""),
            "text": event.text, "state": state(event), "original_text": event.original_text,
            "edited_by": event.edited_by, "deleted_by": event.deleted_by, "delete_reason": event.delete_reason,
            "channel_id": event.channel_id, "ts": event.ts, "thread_ts": event.thread_ts, "permalink": event.permalink,
            "details": event.details,
        }
        for name in TIMES:
            row[name], row[f"{name}_local"] = _times(getattr(event, name), tz)
        rows.append(redact_value({column: row[column] for column in COLUMNS}))
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def as_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows([_cell(row[column]) for column in COLUMNS] for row in rows)
    return out.getvalue()


def as_json(incident: Incident, rows: list[dict[str, Any]], tz: tzinfo) -> str:
    about: dict[str, Any] = {
        "id": incident.id, "title": incident.title, "severity": incident.severity, "state": incident.state,
        "channel_id": incident.channel_id, "started_by": incident.started_by, "resolved_by": incident.resolved_by,
        "summary": incident.summary, "timezone": str(tz),
    }
    for name in ("started_at", "resolved_at"):
        about[name], about[f"{name}_local"] = _times(getattr(incident, name), tz)
    return json.dumps({"incident": redact_value(about), "entries": rows}, ensure_ascii=False, indent=2) + "\n"
