"""The watch: every few minutes, the thresholds of /stats and the checks of /health, by a stable key each.

A key alerts once when it has been bad for N consecutive checks (FLOWSTATE_WATCH_CHECKS) and recovers
once when it has been good for N consecutive checks again; values that flap between the two never reach N
either way, so they neither repeat the alert nor announce a recovery. A muted key (`/watch mute KEY
DURATION`) still fires in /watch but posts nothing until its mute ends; a firing whose alert was never
posted has no recovery message either. During a change freeze nothing is posted: a firing is kept with the
freeze (bot/duties/freeze.py), once, and summarised in one message when it ends; one still firing then alerts
at the next check, as after a mute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from sqlalchemy import select

from bot.changes.service import DEFAULT_WINDOW
from bot.duties.model import Freeze, WatchState
from bot.frame import blocks
from bot.frame.humanize import duration
from bot.frame.registry import Reply
from bot.stack.health import Check, evaluate
from bot.stack.stats import Window, measure

if TYPE_CHECKING:
    from bot.duties.service import Duties, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    key: str  # edge_error_rate, container:SERVICE, probe:NAME, api_error_rate, cpu:SERVICE, memory:SERVICE, db_connections, long_queries, queue_length
    bad: bool
    detail: str


Evaluator = Callable[["Duties"], list[Observation]]


def live_observations(duties: "Duties") -> list[Observation]:
    """What /health (the one health evaluation) and /stats see now, as the scheduler."""
    stack, minutes = duties.rt.stack, duties.rt.settings.watch_minutes
    config = stack.config
    observations = []
    if stack.compose is not None or config.probes:
        # A warning is bad too: the edge rate above its warning level is worth an alert; the text says which level.
        observations += [Observation(check.key, check.status != "ok", _detail(check)) for check in evaluate(stack).checks]
    seen = {observation.key for observation in observations}
    if stack.compose is not None or config.database is not None or config.queue is not None:
        for section in measure(stack, Window(f"{minutes}m", minutes * 60)):
            observations += [
                Observation(key, flag is not None, flag or "within its threshold") for key, flag in section.checked.items() if key not in seen
            ]
    return observations


def _detail(check: Check) -> str:
    warning = " (above its warning level)" if check.status == "warn" else ""
    return check.text + warning + (f" <{check.runbook}|runbook>" if check.runbook and check.status != "ok" else "")


class Watch:
    def __init__(self, duties: "Duties", evaluator: Evaluator | None = None):
        self._duties = duties
        self._evaluate = evaluator or live_observations

    @property
    def needed(self) -> int:
        return self._duties.rt.settings.watch_checks

    def run(self, duties: "Duties", slot: datetime) -> "Outcome":
        from bot.duties.service import Outcome

        now = duties.clock.now()
        try:  # the stack file's and services' environment's digests, so the next card knows when they changed
            duties.rt.changes.snapshot(now)
        except Exception:
            log.exception("the watch could not take the change snapshots")
        observations = self._evaluate(duties)
        frozen = next(iter(duties.freezes.active(now)), None)
        for observation in observations:
            self._observe(observation, now, frozen)
        firing = [state.key for state in self.states() if state.firing_since is not None]
        summary = f"{len(observations)} checked, {len(firing)} firing" + (f": {', '.join(firing[:5])}" if firing else "")
        return Outcome(True, summary)

    def _observe(self, seen: Observation, now: datetime, frozen: Freeze | None = None) -> None:
        store, duties = self._duties.rt.store, self._duties
        with store.session.begin() as session:
            state = session.get(WatchState, seen.key)
            if state is None:
                state = WatchState(key=seen.key, bad_count=0, good_count=0, alerted=False, checked_at=now)
                session.add(state)
            state.bad_count, state.good_count = (state.bad_count + 1, 0) if seen.bad else (0, state.good_count + 1)
            state.detail, state.checked_at = seen.detail[:2000], now
            if seen.bad and state.firing_since is None and state.bad_count >= self.needed:
                state.firing_since = now
            alert = seen.bad and state.firing_since is not None and not state.alerted and not _muted(state, now)
            if alert and frozen is not None:  # held for the freeze's summary (once per firing); still firing after it, it alerts then
                duties.freezes.hold(session, frozen, seen.key, seen.detail, state.firing_since, now)
                alert = False
            recovered = not seen.bad and state.firing_since is not None and state.good_count >= self.needed
            since = state.firing_since
            if alert:
                state.alerted = True  # claimed in this transaction: one alert, even if Slack is slow to answer
            if recovered:
                lasted, announce = now - since, state.alerted
                state.firing_since, state.alerted, state.alert_ts = None, False, None
        if frozen is not None:
            return  # nothing is posted during a freeze; its end summarises the alerts it held
        if alert:
            ts = duties.post(_with_card(
                duties,
                f"🚨 *Watch: {seen.key}*: {seen.detail} (bad for {self.needed} consecutive checks since "
                f"{duties.when(since)}). `/watch mute {seen.key} 1h` silences it.",
                now,
            ))
            if ts:
                with store.session.begin() as session:
                    session.get(WatchState, seen.key).alert_ts = ts
        if recovered and announce:
            duties.say(
                f"✅ *Watch: {seen.key}* recovered after {duration(lasted.total_seconds())}: {seen.detail} "
                f"({self.needed} good checks in a row)."
            )

    def states(self) -> list[WatchState]:
        with self._duties.rt.store.session() as session:
            return list(session.scalars(select(WatchState).order_by(WatchState.key)))

    def mute(self, key: str, until: datetime, by: str) -> WatchState | None:
        with self._duties.rt.store.session.begin() as session:
            state = session.get(WatchState, key)
            if state is not None:
                state.muted_until, state.muted_by = until, by
            return state


def _with_card(duties: "Duties", text: str, now: datetime) -> Reply:
    """An alert and, below it, what changed in the stack in the last hours (its button rolls back the last release)."""
    alert = Reply(text, [blocks.section(text)], in_channel=True)
    try:
        card = duties.rt.changes.card(DEFAULT_WINDOW, now, "What changed before this alert").reply()
    except Exception:
        log.exception("the watch could not build the change card of an alert")
        return alert
    return Reply(f"{text}\n\n{card.text}", [*alert.blocks, blocks.divider(), *card.blocks], in_channel=True)


def _muted(state: WatchState, now: datetime) -> bool:
    return state.muted_until is not None and state.muted_until > now
