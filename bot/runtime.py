"""The composition root: every part wired once from settings and the stack file (the stack, the store, the domain
services, the command set), and the handlers' context built from them (commands/context.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

import commands
from bot.access.service import ExpiringAccess
from bot.approvals.policy import check_policies
from bot.approvals.service import Approvals
from bot.backups.pointintime import Scratches
from bot.backups.service import Backups
from bot.changes.service import ChangeCards
from bot.frame.audit import AuditLog
from bot.frame.authz import Authorizer, GroupMembers
from bot.frame.config import Settings, StackConfig
from bot.frame.changes import Changes
from bot.frame.pipeline import Pipeline
from bot.frame.publish import Notifier, RedactedNotifier
from bot.deploy.marks import trend_chart
from bot.deploy.service import Releases
from bot.duties.service import SOURCE as DUTY_SOURCE
from bot.duties.service import Duties
from bot.frame.faults import kill_at
from bot.incidents.service import Incidents
from bot.jobs.heartbeat import RunnerHeartbeat
from bot.jobs.queue import ChangeLocks, JobQueue, new_holder
from bot.frame.registry import Command, Invocation, declared_in
from bot.frame.roles import Role
from bot.stack.chart import Chart
from bot.stack.stack import Stack
from bot.stack.trends import Sampler
from bot.store.engine import Store
from commands.context import Ctx

if TYPE_CHECKING:
    from slack_sdk import WebClient


@dataclass
class Runtime:
    settings: Settings
    stack: Stack  # the operated stack, built once: Compose, its database, Redis, users table, probes
    store: Store
    authz: Authorizer
    audit: AuditLog
    commands: dict[str, Command]
    notifier: Notifier | None = None  # None in the console: requests are only in the database
    slack: "WebClient | None" = None  # the Web API, for reading channels (None in the console)
    wake: Callable[[], None] = lambda: None  # tells the runners a job is queued
    holder: str = field(default_factory=new_holder)  # this process, as the holder of the jobs it runs
    fault: Callable[[str], None] = field(init=False)  # tests only: a fault injected at a change's step (bot/frame/faults.py)
    pipeline: Pipeline = field(init=False)
    heartbeat: RunnerHeartbeat = field(init=False)  # this process as a runner: beats once it holds a job
    jobs: JobQueue = field(init=False)
    locks: ChangeLocks = field(init=False)
    approvals: Approvals = field(init=False)
    incidents: Incidents = field(init=False)
    duties: Duties = field(init=False)
    access: ExpiringAccess = field(init=False)  # roles granted --for a while: their warnings and ends
    backups: Backups | None = field(init=False)  # None without a [database] section
    releases: Releases | None = field(init=False)  # None without a [deploy] section
    scratches: Scratches | None = field(init=False)  # point-in-time restores' scratch instances; None without [pitr]
    sampler: Sampler = field(init=False)  # the key metrics, once a minute, for the charts
    changes: ChangeCards = field(init=False)  # the change card and its snapshots
    _messages: RedactedNotifier | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.fault = kill_at(self.settings.fault_at)
        self.pipeline = Pipeline(self, Changes(self))
        self.heartbeat = RunnerHeartbeat(self.store, self.holder, self.settings.job_lease_seconds)
        self.jobs = JobQueue(self.store, self.heartbeat)
        self.locks = ChangeLocks(  # late-bound: the desk is built next, and runners and consoles set `wake` later
            self.store, self.settings.job_lease_seconds, lambda job: self.approvals.command_line(job), lambda: self.wake()
        )
        self.approvals = Approvals(self)
        self.incidents = Incidents(self)
        self.duties = Duties(self)  # tests replace it with one on a clock they control
        self.access = ExpiringAccess(self)
        config = self.stack.config
        check_policies(config, self.commands)  # a policy naming no command or argument: the bot does not start
        self.backups = Backups(self.store, self.stack, self.settings, self.audit) if config.database else None
        self.releases = Releases(self.store, self.stack, self.settings, self.at_fault) if config.deploy else None
        self.scratches = (Scratches(self.store, self.stack, self.settings.job_lease_seconds, self.heartbeat)
                          if config.database and config.pitr else None)
        self.sampler = Sampler(self.store, self.stack, self.holder, self.settings.sample_days)
        self.changes = ChangeCards(self.store, lambda: self.stack, self.settings, self.commands, lambda: self.releases, lambda: self.messages)
        self.pipeline.run_source(DUTY_SOURCE, lambda job, holder: self.duties.run_job(job, holder))
        self.audit.observers.append(self.incidents.on_audit)  # commands and approval steps land on a timeline
        self.audit.ask_with_each_row(self.incidents.on_audit.question)  # its channel's open incident, read by the row's INSERT

    @property
    def messages(self) -> RedactedNotifier | None:
        """Channel messages (requests, duties' posts, incidents' summaries), redacted on their way out; None without Slack.
        Built once per notifier (tests put theirs in after the runtime is built)."""
        if self.notifier is None:
            return None
        if self._messages is None or self._messages.notifier is not self.notifier:
            self._messages = RedactedNotifier(self.notifier)
        return self._messages

    def at_fault(self, point: str) -> None:
        """A change's step (bot/frame/faults.py); looked up when reached, so a test may set `fault` after the start."""
        self.fault(point)

    def trend_chart(self, start: datetime, end: datetime, title: str) -> Chart | None:
        """The key metrics of a window drawn with its releases and restarts (the post-mortem's Trends)."""
        return trend_chart(self.store, self.stack.name, start, end, self.settings.tz, title)

    @property
    def stack_name(self) -> str:
        """The operated stack, as the one-change lock and the messages name it."""
        return self.stack.name

    def context(self, invocation: Invocation, role: Role | None = None, progress: Callable[[str], None] | None = None,
                job_id: int | None = None) -> Ctx:
        """What a command's handler, check, describe and recover get: the caller and the parts built once, not this."""
        return Ctx(
            invocation, role, progress or (lambda _text: None), job_id=job_id,
            stack=self.stack, settings=self.settings, store=self.store, commands=self.commands, authz=self.authz,
            jobs=self.jobs, approvals=self.approvals, incidents=self.incidents, duties=self.duties, access=self.access,
            backups=self.backups, releases=self.releases, changes=self.changes, slack=self.slack, fault=self.at_fault,
            may_run=self.pipeline.may_run,
        )

    @classmethod
    def build(
        cls,
        settings: Settings,
        stack: StackConfig,
        *,
        group_members: GroupMembers | None = None,
        local_admins: frozenset[str] = frozenset(),
        migrate: bool = True,
        notifier: Notifier | None = None,
        slack: "WebClient | None" = None,
    ) -> "Runtime":
        store = Store(settings.effective_database_url)
        if migrate:
            store.migrate()
        return cls(
            settings=settings,
            stack=Stack.build(stack, settings.docker_url),
            store=store,
            authz=Authorizer(store, settings, group_members, local_admins),
            audit=AuditLog(store),
            commands=load_commands(),
            notifier=notifier,
            slack=slack,
        )

    def close(self) -> None:
        self.heartbeat.stop()
        self.sampler.close(self.stack.check_timeout + 5)
        self.stack.close()
        self.jobs.close()
        self.store.dispose()


def load_commands() -> dict[str, Command]:
    """A fresh command set, every declaration of the commands package (a test may change its own copy)."""
    return declared_in(commands)
