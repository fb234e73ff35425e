"""Who may do what: a user's role is the highest of settings, the database, user groups and the default."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.frame.config import Settings
from bot.frame.roles import Role
from bot.store.engine import RoleAssignment, Store, utcnow

log = logging.getLogger(__name__)

GroupMembers = Callable[[str], set[str]]
# The bot's own requesters: the scheduler runs the duties (bot/duties) as an operator. A Slack user id is
# U... or W..., so no person can be one of them.
SYSTEM_USERS = {"scheduler": Role.operator}
FAILED_LOOKUP_SECONDS = 10.0  # a failed user-group lookup is not retried on every command during an outage


@dataclass(frozen=True)
class RoleExplanation:
    role: Role | None
    sources: list[str]  # strongest first
    lookup_failed: bool = False  # a Slack user-group lookup failed, so a group role may be missing

    def describe(self) -> str:
        if self.role is None:
            return "no role"
        return f"the {self.role.name} role ({'; '.join(self.sources)})"


class Authorizer:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        group_members: GroupMembers | None = None,
        local_admins: frozenset[str] = frozenset(),
    ):
        self._store = store
        self._settings = settings
        self._group_members = group_members
        self._fixed_admins = frozenset(settings.admins) | local_admins
        self._group_cache: dict[str, tuple[float, set[str]]] = {}
        self._lock = threading.Lock()

    def is_fixed_admin(self, user_id: str) -> bool:
        return user_id in self._fixed_admins

    def role_of(self, user_id: str) -> Role | None:
        return self.explain(user_id).role

    def explain(self, user_id: str, session: Session | None = None) -> "RoleExplanation":
        """A user's role and every source that gives one; `session` sees a grant not yet committed."""
        if user_id in self._fixed_admins:
            return RoleExplanation(Role.admin, ["admin through FLOWSTATE_ADMINS"])
        if user_id in SYSTEM_USERS:
            return RoleExplanation(SYSTEM_USERS[user_id], [f"{SYSTEM_USERS[user_id].name} as the bot's own {user_id}"])
        sources: list[tuple[Role, str]] = []
        if session is not None:
            session.flush()  # a revoke in this session is pending until flushed; get() would still see the row
            assignment = session.get(RoleAssignment, user_id)
        else:
            with self._store.session() as own:
                assignment = own.get(RoleAssignment, user_id)
        if assignment is not None:
            sources.append((Role.parse(assignment.role), f"{assignment.role} granted in the bot"))
        lookup_failed = False
        for group, role in self._settings.role_groups.items():
            members = self._members(group)
            if members is None:
                lookup_failed = True
            elif user_id in members:
                sources.append((role, f"{role.name} through Slack user group {group}"))
        if self._settings.default_role is not None:
            sources.append((self._settings.default_role, f"{self._settings.default_role.name} as everyone's default"))
        role = max((role for role, _source in sources), default=None)
        return RoleExplanation(role, [source for _role, source in sorted(sources, reverse=True)], lookup_failed)

    def members_of(self, group: str) -> set[str] | None:
        """A Slack user group's members (cached, as for roles); None when Slack could not say. Without Slack (the
        console) nobody is a member of any group."""
        return self._members(group)

    def _members(self, group: str) -> set[str] | None:
        """A group's members, cached; None when Slack could not say (a failure is cached briefly too)."""
        if self._group_members is None:
            return set()
        now = time.monotonic()
        with self._lock:
            cached = self._group_cache.get(group)
            if cached and cached[0] > now:
                return cached[1]
        try:
            members: set[str] | None = self._group_members(group)
            keep = self._settings.role_group_cache_seconds
        except Exception as error:  # a Slack outage must not grant anything: fail closed
            log.warning("cannot read members of user group %s: %s", group, type(error).__name__)
            members, keep = None, FAILED_LOOKUP_SECONDS
        with self._lock:
            self._group_cache[group] = (now + keep, members)
        return members

    @staticmethod
    def grant(session: Session, user_id: str, role: Role, granted_by: str) -> None:
        assignment = session.get(RoleAssignment, user_id)
        if assignment is None:
            session.add(RoleAssignment(user_id=user_id, role=role.name, granted_by=granted_by, granted_at=utcnow()))
        else:
            assignment.role, assignment.granted_by, assignment.granted_at = role.name, granted_by, utcnow()

    @staticmethod
    def revoke(session: Session, user_id: str) -> Role | None:
        assignment = session.get(RoleAssignment, user_id)
        if assignment is None:
            return None
        session.delete(assignment)
        return Role.parse(assignment.role)

    @staticmethod
    def assignments(session: Session) -> list[RoleAssignment]:
        return list(session.scalars(select(RoleAssignment).order_by(RoleAssignment.user_id)))
