"""What a command's handler, check, describe and recover are given: the frame's Context (who asks, role, progress,
job) and the parts the commands use, each built once by the composition root (bot/runtime.py). Not the runtime."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from bot.backups.tools import no_database
from bot.deploy.service import NO_DEPLOY
from bot.frame.registry import CommandError, Context
from bot.store.engine import utcnow

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.access.service import ExpiringAccess
    from bot.approvals.service import Approvals
    from bot.backups.service import Backups
    from bot.changes.service import ChangeCards
    from bot.deploy.service import Releases
    from bot.duties.service import Duties
    from bot.frame.authz import Authorizer
    from bot.frame.config import Settings
    from bot.frame.registry import Command, Invocation
    from bot.frame.roles import Role
    from bot.incidents.service import Incidents
    from bot.jobs.queue import JobQueue
    from bot.stack.stack import Stack
    from bot.store.engine import Store


@dataclass(kw_only=True)
class Ctx(Context):
    stack: "Stack"
    settings: "Settings"
    store: "Store"
    commands: "dict[str, Command]"  # what /help lists
    authz: "Authorizer"
    jobs: "JobQueue"
    approvals: "Approvals"
    incidents: "Incidents"
    duties: "Duties"
    access: "ExpiringAccess"
    backups: "Backups | None"  # None without a [database] section
    releases: "Releases | None"  # None without a [deploy] section
    changes: "ChangeCards"  # the change card (/changes, /incident start, a failing /health)
    slack: "WebClient | None" = None  # the Web API, for sending a long reply as a file (None in the console)
    fault: Callable[[str], None] = lambda _point: None  # tests only: a fault injected at a change's step
    clock: Callable[[], datetime] = utcnow
    # Why a caller may not run a command (None: they may), asked of the pipeline's own steps in a dry run (/help).
    may_run: "Callable[[Invocation, Role | None], str | None]" = lambda _invocation, _role: None

    @property
    def tz(self):
        """Where times are shown (FLOWSTATE_TIMEZONE)."""
        return self.settings.tz

    def approver(self) -> str | None:
        """Who approved the request this run belongs to (the release ledger names them)."""
        job = self.jobs.get(self.job_id) if self.job_id else None
        return job.approver if job else None

    def backups_or_refuse(self) -> "Backups":
        if self.backups is None:
            raise CommandError(no_database(self.stack.config, self.settings.stack_file))
        return self.backups

    def releases_or_refuse(self) -> "Releases":
        if self.releases is None:
            raise CommandError(NO_DEPLOY)
        return self.releases
