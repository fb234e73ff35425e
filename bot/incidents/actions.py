"""Follow-ups of an incident, each with one owner and a due time: given during or after the incident
(`/incident action`), listed by `/actions` and in the post-mortem, closed by `/actions done ID`, and reminded to their
owner by direct message once a day while overdue.

Which incident a follow-up belongs to: `--incident ID`, else the channel's open incident, else the channel's latest
one (a follow-up is usually written after the resolve). Who may close one: its owner, the incident's lead (who
started it) or an admin. Closing is one conditional UPDATE (`done_at IS NULL`), so a double click closes it once.
The reminder runs from the runners' sweep on the scheduler's clock: one conditional UPDATE sets `reminded_on` to the
local date, and only the replica whose UPDATE changed the row sends the message; the next local day it may again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import or_, select, update

from bot.frame.publish import direct_message
from bot.frame.registry import CommandError, Notifier
from bot.incidents.model import ACTION, Incident, IncidentAction
from bot.incidents.text import slack_safe, to_markdown
from bot.incidents.timeline import Event, Timeline

if TYPE_CHECKING:
    from bot.frame.config import Settings
    from bot.store.engine import Store

log = logging.getLogger(__name__)

LISTED = 30  # follow-ups /actions shows at most; it says how many more there are


class Host(Protocol):
    """What follow-ups use of the composition root (bot/runtime.py), read when used."""

    store: "Store"
    settings: "Settings"
    slack: object | None  # the Web API (conversations.open for a direct message); None in the console

    @property
    def messages(self) -> Notifier | None: ...


@dataclass(frozen=True)
class Listed:
    """A follow-up with the title of its incident."""

    action: IncidentAction
    title: str


def due_day(moment: datetime, tz) -> str:
    """The due date as people say it: Tue 2026-12-08."""
    return moment.astimezone(tz).strftime("%a %Y-%m-%d")


def overdue_by(action: IncidentAction, now: datetime, tz) -> int | None:
    """Whole local days past its due date (0: due today, already past its time); None while not overdue."""
    if action.done_at is not None or action.due_at > now:
        return None
    return (now.astimezone(tz).date() - action.due_at.astimezone(tz).date()).days


class FollowUps:
    def __init__(self, runtime: Host, timeline: Timeline):
        self._rt = runtime
        self._timeline = timeline

    @property
    def tz(self):
        return self._rt.settings.tz

    # ---- giving one --------------------------------------------------------------------------------

    def add(self, incident: Incident, owner: str, text: str, due_in: timedelta, by: str, now: datetime) -> IncidentAction:
        action = IncidentAction(
            incident_id=incident.id, text=text, owner=owner, created_by=by[:64], created_at=now, due_at=now + due_in,
        )
        with self._rt.store.session.begin() as session:
            session.add(action)
        details = {"action_id": action.id, "owner": owner, "due": action.due_at.isoformat()}
        said = f"gave follow-up #{action.id} to <@{owner}>, due {due_day(action.due_at, self.tz)}: {text}"
        self._timeline.add(incident.id, Event(ACTION, now, said, by, details, incident.channel_id))
        return action

    # ---- reading ---------------------------------------------------------------------------------

    def of_incident(self, incident_id: int) -> list[IncidentAction]:
        with self._rt.store.session() as session:
            query = select(IncidentAction).where(IncidentAction.incident_id == incident_id).order_by(IncidentAction.id)
            return list(session.scalars(query))

    def open_ones(self, first: str) -> list[Listed]:
        """Every open follow-up: FIRST's own first, then by due time."""
        with self._rt.store.session() as session:
            rows = session.execute(
                select(IncidentAction, Incident.title)
                .join(Incident, Incident.id == IncidentAction.incident_id)
                .where(IncidentAction.done_at.is_(None))
                .order_by(IncidentAction.due_at, IncidentAction.id)
            ).all()
        listed = [Listed(action, title) for action, title in rows]
        return sorted(listed, key=lambda item: item.action.owner != first)  # stable: by due time within each

    def get(self, action_id: int) -> IncidentAction | None:
        with self._rt.store.session() as session:
            return session.get(IncidentAction, action_id)

    # ---- closing -----------------------------------------------------------------------------------

    def close(self, action_id: int, by: str, is_admin: bool, now: datetime) -> tuple[IncidentAction, Incident]:
        """Close a follow-up, once; CommandError (nothing changed) when it is unknown, closed already or not theirs."""
        action = self.get(action_id)
        if action is None:
            raise CommandError(f"There is no follow-up #{action_id}; /actions lists the open ones.")
        incident = self._timeline.get(action.incident_id)
        if action.done_at is None and by not in (action.owner, incident.started_by) and not is_admin:
            raise CommandError(
                f"Follow-up #{action_id} is <@{action.owner}>'s; its owner, the lead of incident #{incident.id} "
                f"(<@{incident.started_by}>) or an admin closes it."
            )
        with self._rt.store.session.begin() as session:
            closed = session.execute(
                update(IncidentAction)
                .where(IncidentAction.id == action_id, IncidentAction.done_at.is_(None))
                .values(done_at=now, done_by=by[:64])
            ).rowcount == 1
        if not closed:
            action = self.get(action_id)
            raise CommandError(
                f"Follow-up #{action_id} was already closed by <@{action.done_by}> on {due_day(action.done_at, self.tz)}; "
                "nothing changed."
            )
        said = f"closed follow-up #{action_id} of <@{action.owner}>: {action.text}"
        self._timeline.add(incident.id, Event(ACTION, now, said, by, {"action_id": action_id, "done": True}, incident.channel_id))
        return self.get(action_id), incident

    # ---- the daily reminder ----------------------------------------------------------------------------

    def remind(self, now: datetime) -> int:
        """Each overdue open follow-up reminded to its owner once per local day, across replicas; how many this one sent."""
        today = now.astimezone(self.tz).date()
        with self._rt.store.session() as session:
            due = session.execute(
                select(IncidentAction, Incident.title)
                .join(Incident, Incident.id == IncidentAction.incident_id)
                .where(*self._remindable(now, today))
            ).all()
        sent = 0
        for action, title in due:
            if self._claim(action.id, now, today):
                sent += direct_message(self._rt.slack, self._rt.messages, action.owner, self.reminder(action, title, now))
        return sent

    @staticmethod
    def _remindable(now: datetime, today: date):
        return (
            IncidentAction.done_at.is_(None), IncidentAction.due_at <= now,
            or_(IncidentAction.reminded_on.is_(None), IncidentAction.reminded_on != today),
        )

    def _claim(self, action_id: int, now: datetime, today: date) -> bool:
        with self._rt.store.session.begin() as session:
            return session.execute(
                update(IncidentAction).where(IncidentAction.id == action_id, *self._remindable(now, today)).values(reminded_on=today)
            ).rowcount == 1

    def reminder(self, action: IncidentAction, title: str, now: datetime) -> str:
        days = overdue_by(action, now, self.tz) or 0
        late = f"{days} day{'s' if days != 1 else ''} overdue" if days else "overdue since today"
        return (
            f"⏰ Your follow-up #{action.id} of incident #{action.incident_id} ({slack_safe(title)}) was due "
            f"{due_day(action.due_at, self.tz)} ({late}): {slack_safe(action.text)}. "
            f"When it is done, `/actions done {action.id}` closes it."
        )


def action_items(actions: list[IncidentAction], name, names: dict[str, str], tz, now: datetime) -> str:
    """The post-mortem's action items: every follow-up with its owner, due date and state, and a row to add more."""
    rows = []
    for action in actions:
        if action.done_at is not None:
            state = f"done {due_day(action.done_at, tz)} by {name(action.done_by)}"
        elif overdue_by(action, now, tz) is not None:
            state = "**overdue**"
        else:
            state = "open"
        text = to_markdown(action.text, names)
        rows.append(f"| #{action.id} {text} | {name(action.owner)} | {due_day(action.due_at, tz)} | {state} |")
    hint = "" if rows else "_What would have prevented this, or found it sooner? One owner each: `/incident action @owner \"TEXT\" --due 3d`._\n\n"
    table = "\n".join(rows) if rows else "| | | | |"
    return f"## Action items\n\n{hint}| Action | Owner | Due | State |\n|---|---|---|---|\n{table}"

