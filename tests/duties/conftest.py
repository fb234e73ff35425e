"""Duties on a clock the test moves: a manual clock in process, a clock file for real bot processes."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bot.duties.model import DutyRun
from bot.duties.service import Duties
from bot.jobs.runner import Runner
from bot.frame.registry import Reply

OPS = "C0OPS"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


class ManualClock:
    def __init__(self, at: datetime):
        self.at = at

    def now(self) -> datetime:
        return self.at


class ChannelPosts:
    """The notifier's side of Slack, kept in order: what the ops channel would show."""

    def __init__(self):
        self.posts: list[tuple[str, Reply]] = []

    def post(self, channel: str, reply: Reply) -> str:
        self.posts.append((channel, reply))
        return f"1700000000.{len(self.posts):06d}"

    def update(self, channel: str, ts: str, reply: Reply) -> None:
        pass

    @property
    def texts(self) -> list[str]:
        return [reply.text for _channel, reply in self.posts]


class Scheduled:
    """A runtime whose duties run on a manual clock, through a real runner's sweep and job path."""

    def __init__(self, runtime, clock: ManualClock, evaluator=None):
        self.rt, self.clock = runtime, clock
        self.channel = ChannelPosts()
        runtime.notifier = self.channel
        runtime.duties = Duties(runtime, clock, evaluator)
        self.runner = Runner(runtime, None)

    def at(self, moment: datetime) -> list[str]:
        """Move the clock, sweep as a runner does, run what was queued; the ops channel's new messages."""
        before = len(self.channel.posts)
        self.clock.at = moment
        self.runner._sweep()
        while (job := self.rt.jobs.claim_next(self.runner.holder)) is not None:
            self.runner._run(job)
        return self.channel.texts[before:]

    def runs(self, duty: str | None = None) -> list[DutyRun]:
        from sqlalchemy import select

        with self.rt.store.session() as session:
            query = select(DutyRun).order_by(DutyRun.slot, DutyRun.duty)
            if duty:
                query = query.where(DutyRun.duty == duty)
            return list(session.scalars(query))


@pytest.fixture
def scheduled(make_runtime):
    """scheduled(database_url=..., evaluator=..., start=..., **settings): only the duties a test names are on."""

    def build(start: datetime, evaluator=None, stack=None, **settings) -> Scheduled:
        values = dict(ops_channel=OPS, timezone="Europe/Berlin", daily_report_at="off", backup_at="off", drill_at="off", watch_minutes=0)
        values.update(settings)
        return Scheduled(make_runtime(stack, **values), ManualClock(start), evaluator)

    return build
