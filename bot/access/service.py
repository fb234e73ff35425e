"""Access that expires: a role granted `--for` a while, in the bot (`/role grant`) or in the app (`/user-role`).

A grant for a while is a row of temporary_grants beside the role itself. The runners' sweep (bot/jobs/runner.py), on
the scheduler's clock, warns the grantee by direct message about five minutes before its end, and at its end puts the
role it replaced back. Each of those is one conditional UPDATE of the row, so of the replicas sweeping at the same
moment exactly one acts. A grant made while one runs replaces its end and keeps the role to come back to; a change by
hand (a grant without --for, /role revoke, /user-role back) ends it, so no later revert overwrites it.

The bot's roles live in the same database as the rows: a bot grant, its end and the role put back are one transaction.
The app's roles live in the app's PostgreSQL: its end is claimed first (`reverting`), then the users table is written,
only where the user still has the role granted (else it is left, and the channel told why); a replica that died
between the two leaves the claim, which another takes over a minute later.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.access.model import APP, BOT, FAILED, KEPT, LEFT, REPLACED, REVERTED, REVERTING, REVOKED, TemporaryGrant
from bot.frame import blocks
from bot.frame.authz import Authorizer
from bot.frame.publish import direct_message
from bot.frame.registry import CommandError, Invocation, Notifier, Reply
from bot.frame.roles import Role
from bot.stack.users import refuse_role_change
from bot.store.engine import RoleAssignment

if TYPE_CHECKING:
    from bot.frame.audit import AuditLog
    from bot.frame.config import Settings
    from bot.stack.stack import Stack
    from bot.stack.users import StackUsers
    from bot.store.engine import Store

log = logging.getLogger(__name__)

LONGEST = "30d"  # what --for takes at most: a grant longer than that is a role, given without --for
WARN_BEFORE = timedelta(minutes=5)
RETRY_AFTER = timedelta(minutes=1)  # an app revert claimed this long ago and not finished is taken over
SCHEDULER = "scheduler"  # who ends a grant at its time (bot.frame.authz.SYSTEM_USERS: no person can be it)


class Host(Protocol):
    """What expiring access uses of the composition root (bot/runtime.py), which a domain may not import."""

    settings: "Settings"
    store: "Store"
    audit: "AuditLog"
    stack: "Stack"
    slack: object | None  # the Web API (conversations.open for a direct message); None in the console

    @property
    def messages(self) -> Notifier | None: ...


class ExpiringAccess:
    def __init__(self, runtime: Host):
        self._rt = runtime

    # ---- reading ---------------------------------------------------------------------------------

    def running(self, kind: str, subject: str, session: Session | None = None) -> TemporaryGrant | None:
        query = select(TemporaryGrant).where(TemporaryGrant.kind == kind, TemporaryGrant.subject == subject, TemporaryGrant.reverted_at.is_(None))
        if session is not None:
            return session.scalars(query.execution_options(populate_existing=True)).first()
        with self._rt.store.session() as own:
            return own.scalars(query).first()

    def running_bot_grants(self, session: Session) -> dict[str, TemporaryGrant]:
        query = select(TemporaryGrant).where(TemporaryGrant.kind == BOT, TemporaryGrant.reverted_at.is_(None))
        return {grant.subject: grant for grant in session.scalars(query)}

    def when(self, moment: datetime, now: datetime) -> str:
        """16:30 UTC today; with its date on another day."""
        local, today = moment.astimezone(self._rt.settings.tz), now.astimezone(self._rt.settings.tz)
        return local.strftime("%H:%M %Z" if local.date() == today.date() else "%a %Y-%m-%d %H:%M %Z")

    def until(self, grant: TemporaryGrant, now: datetime) -> str:
        """What /role list and /user show: "operator until 16:30 UTC, then viewer"."""
        after = grant.previous_role or "no role"
        return f"{grant.role} until {self.when(grant.expires_at, now)}, then {after}"

    # ---- the bot's roles, in the handler's transaction ---------------------------------------------

    def grant_bot(self, session: Session, user_id: str, role: Role, by: str, channel: str | None,
                  lasting: timedelta | None, now: datetime) -> str | None:
        """Grant a bot role, for good or until now + LASTING: the sentence saying until when, or None for a plain grant."""
        running = self.running(BOT, user_id, session)
        if lasting is None:
            kept = running is not None and running.role == role.name
            if running is not None:
                self._end(session, running.id, KEPT if kept else REPLACED, by, now)
            Authorizer.grant(session, user_id, role, by)
            if kept:
                return (
                    f"<@{user_id}> keeps the {role.name} role for good; it was to end at {self.when(running.expires_at, now)}, "
                    f"then {self._after(running.previous_role)}."
                )
            return None
        expires = now + lasting
        if running is not None and self._extend(session, running.id, role.name, expires):
            Authorizer.grant(session, user_id, role, by)
            return (
                f"<@{user_id}> has the {role.name} role until {self.when(expires, now)} (it was to end at "
                f"{self.when(running.expires_at, now)}), then {self._after(running.previous_role)}."
            )
        assignment = session.get(RoleAssignment, user_id, populate_existing=True)
        if assignment is not None and assignment.role == role.name:
            raise CommandError(
                f"<@{user_id}> already has the {role.name} role in the bot, so a grant for a while would change nothing; "
                "revoke it first or grant another role."
            )
        grant = TemporaryGrant(
            kind=BOT, subject=user_id, role=role.name, granted_by=by[:64], channel_id=channel, granted_at=now, expires_at=expires,
            previous_role=assignment.role if assignment else None,
            previous_granted_by=assignment.granted_by if assignment else None,
            previous_granted_at=assignment.granted_at if assignment else None,
        )
        self._add(session, grant, f"<@{user_id}>")
        Authorizer.grant(session, user_id, role, by)
        return f"<@{user_id}> has the {role.name} role until {self.when(expires, now)}, then {self._after(grant.previous_role)}."

    @staticmethod
    def _after(previous: str | None) -> str:
        return f"{previous} again" if previous else "no role in the bot"

    def revoke_bot(self, session: Session, user_id: str, by: str, now: datetime) -> TemporaryGrant | None:
        """A running grant ended early, its role before it back now: the grant, or None when none ran (or its role had
        been changed by other means: then the revoke is a plain one)."""
        running = self.running(BOT, user_id, session)
        if running is None or not self._end(session, running.id, REVOKED, by, now):
            return None
        return running if self._restore_bot(session, running, now) else None

    @staticmethod
    def _restore_bot(session: Session, grant: TemporaryGrant, now: datetime) -> bool:
        """The role before the grant back, if the grant's role is still the one there."""
        assignment = session.get(RoleAssignment, grant.subject, populate_existing=True)
        if assignment is None or assignment.role != grant.role:
            return False
        if grant.previous_role is None:
            session.delete(assignment)
        else:
            assignment.role = grant.previous_role
            assignment.granted_by = grant.previous_granted_by or grant.granted_by
            assignment.granted_at = grant.previous_granted_at or now
        return True

    # ---- the app's users table ---------------------------------------------------------------------

    def refuse_app_change(self, users: "StackUsers", email: str, role: str) -> None:
        """What /user-role refuses before a request is made: no such user, or the role they have, unless that role is a
        running grant's (a new --for extends it; without --for it is kept for good)."""
        found = users.find(email)
        running = self.running(APP, email)
        if found is not None and running is not None and found.role == running.role == role:
            return
        refuse_role_change(found, email, role)

    def set_app_role(self, users: "StackUsers", email: str, role: str, by: str, channel: str | None,
                     lasting: timedelta | None, now: datetime) -> str:
        """Change an app user's role, for good or until now + LASTING; the sentence saying what was done."""
        found = users.find(email)
        if found is None:
            refuse_role_change(found, email, role)
        running = self.running(APP, found.email)
        if running is not None and found.role != running.role:  # changed outside the bot: that grant is over
            self._end_alone(running.id, REPLACED, by, now)
            running = None
        if lasting is None:
            if running is not None and role == running.role:
                self._end_alone(running.id, KEPT, by, now)
                return f"{found.email} keeps the {role} role for good; it was to go back to {running.previous_role} at {self.when(running.expires_at, now)}."
            previous, changed = users.change_role(found.email, role)
            said = f"Changed the role of {changed.email}: {previous} → {changed.role}."
            if running is not None and self._end_alone(running.id, REPLACED, by, now):
                said += f" Its temporary {running.role} role (until {self.when(running.expires_at, now)}) is over, so nothing changes it back."
            return said
        expires = now + lasting
        if running is not None:
            return self._extend_app(users, running, found.role, role, expires, now)
        refuse_role_change(found, found.email, role)
        grant = TemporaryGrant(
            kind=APP, subject=found.email, role=role, previous_role=found.role, granted_by=by[:64], channel_id=channel,
            granted_at=now, expires_at=expires,
        )
        # The row first, committed: the bot dying right after the table's change still finds it and reverts.
        with self._rt.store.session.begin() as session:
            self._add(session, grant, found.email)
        try:
            previous, changed = users.change_role(found.email, role)
        except Exception:
            self._end_alone(grant.id, FAILED, by, now)
            raise
        if previous != found.role:  # changed in between: the role to come back to is the one it replaced
            with self._rt.store.session.begin() as session:
                session.execute(update(TemporaryGrant).where(TemporaryGrant.id == grant.id).values(previous_role=previous))
        return f"Changed the role of {changed.email}: {previous} → {changed.role} until {self.when(expires, now)}, then {previous} again."

    def _extend_app(self, users: "StackUsers", running: TemporaryGrant, current: str, role: str, expires: datetime, now: datetime) -> str:
        with self._rt.store.session.begin() as session:
            extended = self._extend(session, running.id, role, expires)
        if not extended:
            raise CommandError(f"The temporary {running.role} role of {running.subject} ended just now; ask again if it is still needed.")
        if role != current:
            try:
                users.change_role(running.subject, role)
            except Exception:
                with self._rt.store.session.begin() as session:
                    self._extend(session, running.id, running.role, running.expires_at)
                raise
        changed = f" ({current} → {role})" if role != current else ""
        return (
            f"{running.subject} has the {role} role{changed} until {self.when(expires, now)} (it was to end at "
            f"{self.when(running.expires_at, now)}), then {running.previous_role} again."
        )

    # ---- shared steps ------------------------------------------------------------------------------

    @staticmethod
    def _add(session: Session, grant: TemporaryGrant, who: str) -> None:
        session.add(grant)
        try:
            session.flush()
        except IntegrityError:  # the running-grant index: another grant for them went in at the same moment
            raise CommandError(f"Another grant for {who} was made at the same moment; look at it and ask again if needed.") from None

    @staticmethod
    def _end(session: Session, grant_id: int, how: str, by: str, now: datetime) -> bool:
        """End a running grant (one winner); False when it had already ended."""
        ended = session.execute(
            update(TemporaryGrant)
            .where(TemporaryGrant.id == grant_id, TemporaryGrant.reverted_at.is_(None))
            .values(reverted_at=now, ended=how, ended_by=by[:64])
            .execution_options(synchronize_session=False)
        )
        return ended.rowcount == 1

    def _end_alone(self, grant_id: int, how: str, by: str, now: datetime) -> bool:
        with self._rt.store.session.begin() as session:
            return self._end(session, grant_id, how, by, now)

    @staticmethod
    def _extend(session: Session, grant_id: int, role: str, expires: datetime) -> bool:
        """A running grant's new end (warned again before it); False when it ended meanwhile."""
        extended = session.execute(
            update(TemporaryGrant)
            .where(TemporaryGrant.id == grant_id, TemporaryGrant.reverted_at.is_(None))
            .values(role=role, expires_at=expires, warned_at=None)
            .execution_options(synchronize_session=False)
        )
        return extended.rowcount == 1

    # ---- the sweep ---------------------------------------------------------------------------------

    def sweep(self, now: datetime) -> None:
        """Warn what ends within WARN_BEFORE, end what is due; each once across replicas."""
        store = self._rt.store
        with store.session() as session:
            warn = session.scalars(
                select(TemporaryGrant).where(
                    TemporaryGrant.reverted_at.is_(None), TemporaryGrant.warned_at.is_(None),
                    TemporaryGrant.expires_at <= now + WARN_BEFORE, TemporaryGrant.expires_at > now,
                )
            ).all()
            due = session.scalars(select(TemporaryGrant).where(TemporaryGrant.expires_at <= now, self._endable(now))).all()
        for grant in warn:
            self._warn(grant, now)
        for grant in due:
            try:
                self._revert_bot(grant, now) if grant.kind == BOT else self._revert_app(grant, now)
            except Exception:
                log.exception("could not end temporary grant #%s of %s; the next sweep tries again", grant.id, grant.kind)

    @staticmethod
    def _endable(now: datetime):
        """Not ended, or an app revert claimed by a replica that did not finish it within RETRY_AFTER."""
        return or_(
            TemporaryGrant.reverted_at.is_(None),
            and_(TemporaryGrant.ended == REVERTING, TemporaryGrant.reverted_at <= now - RETRY_AFTER),
        )

    def _warn(self, grant: TemporaryGrant, now: datetime) -> None:
        with self._rt.store.session.begin() as session:
            won = session.execute(
                update(TemporaryGrant)
                .where(
                    TemporaryGrant.id == grant.id, TemporaryGrant.warned_at.is_(None), TemporaryGrant.reverted_at.is_(None),
                    TemporaryGrant.expires_at <= now + WARN_BEFORE, TemporaryGrant.expires_at > now,
                )
                .values(warned_at=now)
            ).rowcount == 1
        if not won:
            return
        minutes = max(1, math.ceil((grant.expires_at - now).total_seconds() / 60))
        at = f"{self.when(grant.expires_at, now)}, in {minutes} minute{'s' if minutes != 1 else ''}"
        if grant.kind == BOT:
            after = f"you have {grant.previous_role} again" if grant.previous_role else "you have no role granted in the bot"
            self._direct(grant.subject, (
                f"⏳ Your {grant.role} role in the bot ends at {at}, and then {after}; "
                f"an admin extends it with `/role grant <@{grant.subject}> {grant.role} --for 1h`."
            ))
        else:
            self._direct(grant.granted_by, (
                f"⏳ The {grant.role} role you gave {grant.subject} in the app ends at {at}, and then it is "
                f"{grant.previous_role} again; `/user-role {grant.subject} {grant.role} --for 1h` extends it."
            ))

    def _claim(self, session: Session, grant_id: int, now: datetime, how: str) -> bool:
        return session.execute(
            update(TemporaryGrant)
            .where(TemporaryGrant.id == grant_id, TemporaryGrant.expires_at <= now, self._endable(now))
            .values(reverted_at=now, ended=how, ended_by=SCHEDULER)
            .execution_options(synchronize_session=False)
        ).rowcount == 1

    def _revert_bot(self, grant: TemporaryGrant, now: datetime) -> None:
        with self._rt.store.session.begin() as session:
            if not self._claim(session, grant.id, now, REVERTED):
                return
            restored = self._restore_bot(session, grant, now)
            if not restored:
                self._settle(session, grant.id, LEFT)
                assignment = session.get(RoleAssignment, grant.subject)
                present = assignment.role if assignment else None
        ended = self.when(grant.expires_at, now)
        if restored:
            after = f"they have {grant.previous_role} again" if grant.previous_role else "no role is granted to them in the bot now"
            text = f"⌛ <@{grant.subject}>'s {grant.role} role in the bot ended at {ended}; {after}."
        else:
            text = (
                f"⚠️ <@{grant.subject}>'s {grant.role} role in the bot ended at {ended}, but it had been changed to "
                f"{present or 'no role'} meanwhile, so it was left as it is."
            )
        arguments = {"action": "grant", "user": grant.subject, "role": grant.previous_role} if grant.previous_role else {"action": "revoke", "user": grant.subject}
        self._finish(grant, "role", arguments, restored, text)

    def _revert_app(self, grant: TemporaryGrant, now: datetime) -> None:
        users = self._rt.stack.users
        with self._rt.store.session.begin() as session:
            if not self._claim(session, grant.id, now, REVERTING):
                return
        if users is None:
            raise RuntimeError("the stack file has no [database] section any more")
        restored, present = users.restore_role(grant.subject, granted=grant.role, previous=grant.previous_role)
        with self._rt.store.session.begin() as session:
            self._settle(session, grant.id, REVERTED if restored else LEFT)
        ended = self.when(grant.expires_at, now)
        if restored:
            text = f"⌛ {grant.subject}'s {grant.role} role in the app ended at {ended}; it is {grant.previous_role} again."
        elif present is None:
            text = f"⚠️ {grant.subject}'s {grant.role} role in the app ended at {ended}, but the user is no longer in the users table, so nothing was changed."
        else:
            text = (
                f"⚠️ {grant.subject}'s {grant.role} role in the app ended at {ended}, but it had been changed to {present} "
                f"meanwhile, so it was left as it is; /user-role changes it if needed."
            )
        self._finish(grant, "user-role", {"email": grant.subject, "role": grant.previous_role}, restored, text)

    @staticmethod
    def _settle(session: Session, grant_id: int, how: str) -> None:
        session.execute(update(TemporaryGrant).where(TemporaryGrant.id == grant_id).values(ended=how).execution_options(synchronize_session=False))

    def _finish(self, grant: TemporaryGrant, command: str, arguments: dict, restored: bool, text: str) -> None:
        """The scheduler's audit row, and the message to the channel it was granted in."""
        invocation = Invocation(SCHEDULER, command, "", grant.channel_id, SCHEDULER)  # type: ignore[arg-type]
        try:
            self._rt.audit.record(
                invocation, "reverted" if restored else "failed", arguments=arguments,
                error=None if restored else text.removeprefix("⚠️ "), details={"grant": grant.id, "granted": grant.role},
            )
        except Exception:
            log.exception("could not audit the end of temporary grant #%s", grant.id)
        messages = self._rt.messages
        if messages is None or not grant.channel_id:
            return
        try:
            messages.post(grant.channel_id, Reply(text, [blocks.section(text)], in_channel=True))
        except Exception:
            log.exception("could not post the end of temporary grant #%s to %s", grant.id, grant.channel_id)

    def _direct(self, user_id: str, text: str) -> None:
        direct_message(self._rt.slack, self._rt.messages, user_id, text)
