"""The seam between the commands and where the stack's services run: a Compose project on one engine
(bot/stack/compose.py) or a Swarm stack (bot/stack/swarm.py), chosen by the stack file's `[stack] runtime`.

Commands, the health evaluation and the domains use only what this protocol names; both runtimes fit it."""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Iterable, Iterator, Protocol

from docker.models.containers import Container

from bot.stack.compose import EngineEvent, ExecOutcome, LastRun, ServiceState, ServiceStats


class StackRuntime(Protocol):
    kind: str  # "Compose project", "Swarm stack"
    project: str  # the Compose project, or the Swarm stack's namespace

    @property
    def scope(self) -> str: ...  # "Compose project flowstate", "Swarm stack fs"

    @property
    def where(self) -> str: ...  # the engine's address, for messages

    def services(self) -> list[str]: ...

    def projects(self) -> list[str]: ...  # the engine's other stacks, to name the right one when ours matches none

    def states(self) -> list[ServiceState]: ...

    def containers(self, service: str | None = None) -> list[tuple[str, Container]]: ...

    def stats(self) -> list[ServiceStats]: ...  # the containers this engine runs

    def previous_specs(self) -> dict[str, str]: ...  # service: what Swarm kept before its last update, briefly

    def unsampled(self) -> list[tuple[str, str]]: ...  # (service, node): running where this engine cannot sample it

    def logs(self, service: str, since: datetime | None = None, tail: int | None = None, timestamps: bool = False) -> Iterator[str]: ...

    def stop(self, services: list[str], timeout: int = 30) -> list[str]: ...

    def start(self, services: list[str]) -> list[str]: ...

    def restart(self, services: list[str], timeout: int = 30) -> list[str]: ...

    def wait_healthy(self, service: str, timeout: float, poll: float = 0.5) -> ServiceState: ...

    def exec_stream(self, service: str, argv: list[str], on_stdout: Callable[[bytes], None],
                    on_start: Callable[[str], None] = ..., environment: dict[str, str] | None = None) -> ExecOutcome: ...

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]: ...

    def put_file(self, service: str, directory: str, name: str, size: int, chunks: Iterable[bytes]) -> None: ...

    def events(self, since: datetime, until: datetime) -> tuple[list[EngineEvent], datetime | None]: ...

    def last_runs(self) -> list[LastRun]: ...

    def environments(self) -> dict[str, dict[str, str]]: ...

    def close(self) -> None: ...
