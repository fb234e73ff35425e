"""Who may do what: a user's role is the highest of settings, the database, user groups and the default."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.config import Settings
from bot.roles import Role
from bot.store import RoleAssignment, Store, utcnow

log = logging.getLogger(__name__)

GroupMembers = Callable[[str], set[str]]


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
        if user_id in self._fixed_admins:
            return Role.admin
        candidates: list[Role] = []
        with self._store.session() as session:
            assignment = session.get(RoleAssignment, user_id)
            if assignment is not None:
                candidates.append(Role.parse(assignment.role))
        for group, role in self._settings.role_groups.items():
            if user_id in self._members(group):
                candidates.append(role)
        if self._settings.default_role is not None:
            candidates.append(self._settings.default_role)
        return max(candidates, default=None)

    def _members(self, group: str) -> set[str]:
        if self._group_members is None:
            return set()
        now = time.monotonic()
        with self._lock:
            cached = self._group_cache.get(group)
            if cached and cached[0] > now:
                return cached[1]
        try:
            members = self._group_members(group)
        except Exception as error:  # a Slack outage must not grant anything: fail closed
            log.warning("cannot read members of user group %s: %s", group, error)
            return set()
        with self._lock:
            self._group_cache[group] = (now + self._settings.role_group_cache_seconds, members)
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
