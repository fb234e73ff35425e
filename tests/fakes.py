"""A stack in memory for unit tests: where a command's behaviour is the bot's own (which service, in what order,
what the gate says), it runs on this instead of Docker. Only Compose is stood in for; the health evaluation, the
gate, the dispatcher, approvals and the store are the real ones.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Iterator

from bot.frame.config import StackConfig
from bot.stack.compose import ServiceNotFound, ServiceState, StackError
from bot.stack.stack import Stack

PROJECT = "fake"


class FakeCompose:
    """The part of ComposeStack the commands and the health evaluation use, over a dict of service states."""

    kind = "Compose project"

    def __init__(self, services: list[str], project: str = PROJECT):
        self.project = project
        self._states = {service: self._running(service) for service in services}
        self.broken: set[str] = set()  # services that exit again right after a start or restart
        self.log_lines: dict[str, list[str]] = {}  # what each service's container wrote, with timestamps
        self.calls: list[tuple[str, tuple[str, ...]]] = []  # (action, services) in order: what the bot asked for
        self.engine_events: list = []  # the change card's Docker events (bot.stack.compose.EngineEvent)
        self.events_kept_from: datetime | None = None  # the oldest event the engine keeps
        self.events_fail: str | None = None  # the engine's events cannot be read: why
        self.environment: dict[str, dict[str, str]] = {}  # each service's environment, by service
        self.runs: list = []  # each container's last start and exit (bot.stack.compose.LastRun)

    @property
    def scope(self) -> str:
        return f"{self.kind} {self.project}"

    @staticmethod
    def _running(service: str) -> ServiceState:
        return ServiceState(service, f"{PROJECT}-{service}-1", "running", "healthy", "Up (healthy)")

    @staticmethod
    def _exited(service: str) -> ServiceState:
        return ServiceState(service, f"{PROJECT}-{service}-1", "exited", None, "Exited (1)", exit_code=1)

    def fail(self, service: str) -> None:
        """The service is down now (another outage) and stays down until the bot restarts it."""
        self._states[service] = self._exited(service)

    def _known(self, services: list[str]) -> None:
        for service in services:
            if service not in self._states:
                raise ServiceNotFound(f"{service} is not a service of {self.project}.")

    def _come_up(self, action: str, services: list[str]) -> list[str]:
        self._known(services)
        self.calls.append((action, tuple(services)))
        for service in services:
            self._states[service] = self._exited(service) if service in self.broken else self._running(service)
        return list(services)

    def restart(self, services: list[str], timeout: int = 30) -> list[str]:
        return self._come_up("restart", services)

    def start(self, services: list[str]) -> list[str]:
        return self._come_up("start", services)

    def stop(self, services: list[str], timeout: int = 30) -> list[str]:
        self._known(services)
        self.calls.append(("stop", tuple(services)))
        for service in services:
            self._states[service] = ServiceState(service, f"{PROJECT}-{service}-1", "exited", None, "Exited (0)")
        return list(services)

    def states(self) -> list[ServiceState]:
        return [self._states[service] for service in sorted(self._states)]

    def services(self) -> list[str]:
        return sorted(self._states)

    def projects(self) -> list[str]:
        return [self.project]

    def wait_healthy(self, service: str, timeout: float, poll: float = 0.5) -> ServiceState:
        self._known([service])
        return self._states[service]

    def logs(self, service: str, since: datetime | None = None, tail: int | None = None, timestamps: bool = False) -> Iterator[str]:
        self._known([service])
        lines = self.log_lines.get(service, [])
        if not lines and not self._states[service].ok:
            lines = ["2026-12-05T10:00:00Z fatal: the fake service stopped"]
        yield from lines[-tail:] if tail else lines

    def previous_specs(self) -> dict:
        return {}

    def unsampled(self) -> list:
        return []

    def stats(self) -> list:
        return []

    def events(self, since: datetime, until: datetime) -> tuple[list, datetime | None]:
        """The engine's events (a list of EngineEvent tests put in `engine_events`) and the oldest it keeps."""
        if self.events_fail:
            raise StackError(self.events_fail)
        return [e for e in self.engine_events if since <= e.at <= until], self.events_kept_from

    def last_runs(self) -> list:
        return list(self.runs)

    def environments(self) -> dict[str, dict[str, str]]:
        return {service: dict(self.environment.get(service, {})) for service in sorted(self._states)}

    def close(self) -> None:
        pass


class FakeStack(Stack):
    """The real Stack (flat settings, refusals, the health evaluation over it) with Compose in memory."""

    def __init__(self, services: list[str], stable_seconds: float = 0.0, healthy_timeout: float = 5.0):
        config = StackConfig.model_validate(
            {"stack": {"compose_project": PROJECT, "stable_seconds": stable_seconds, "healthy_timeout": healthy_timeout}}
        )
        self.fake = FakeCompose(services)
        super().__init__(config, self.fake, pool=ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-check"))
