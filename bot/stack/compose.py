"""The operated Compose project through the Docker engine: containers, state, stats, logs, stop/start."""

from __future__ import annotations

import re
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, TypeVar

import docker
import requests
from docker.models.containers import Container

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"

T = TypeVar("T")


class StackError(Exception):
    """A problem with the operated stack, already one sentence for the user."""


class DockerUnavailable(StackError):
    pass


class ServiceNotFound(StackError):
    pass


def _parse_time(value: str | None) -> datetime | None:
    # Docker gives RFC 3339 with nanoseconds and "0001-01-01T00:00:00Z" for "never".
    if not value or value.startswith("0001-"):
        return None
    head, _, fraction = value.rstrip("Z").partition(".")
    parsed = datetime.fromisoformat(head)
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return parsed.replace(tzinfo=timezone.utc)


_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    status: str  # created, running, restarting, paused, exited, dead
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    summary: str  # what `docker ps` shows, e.g. "Up 2 hours (healthy)"; on Swarm "1/1 tasks running (healthy)"
    # The evidence below is read (one inspect) only for a container that is not ok.
    exit_code: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    restart_count: int = 0
    health_output: str | None = None
    # Swarm: why the service is not converged (tasks running vs desired, its recent task failures with their errors).
    evidence: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "running" and self.health in (None, "healthy")


@dataclass(frozen=True)
class ServiceStats:
    service: str
    container: str
    cpu_percent: float
    memory_bytes: int
    memory_limit: int

    @property
    def memory_percent(self) -> float:
        return 100.0 * self.memory_bytes / self.memory_limit if self.memory_limit else 0.0


@dataclass(frozen=True)
class ExecOutcome:
    exit_code: int | None  # None: the engine does not know (yet)
    stderr: str  # its last few kilobytes


class OutputTail:
    """The last bytes of a stream: enough for the error message, never the whole of a noisy one."""

    def __init__(self, limit: int = 8192):
        self._limit = limit
        self._data = b""

    def add(self, chunk: bytes) -> None:
        self._data = (self._data + chunk)[-self._limit :]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace").strip()


def _tar_of_one_file(name: str, size: int, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """A tar stream of one file (mode 0600), built as it is sent: the file never sits in memory."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    yield info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: sizes beyond 8 GiB
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        yield chunk
    if sent != size:
        raise StackError(f"{name} changed size while it was copied ({sent} bytes instead of {size}).")
    yield b"\0" * ((-size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


def cpu_percent(stats: dict) -> float:
    """As `docker stats` computes it: the container's share of the host's CPU time between two samples."""
    cpu, pre = stats.get("cpu_stats", {}), stats.get("precpu_stats", {})
    container_delta = cpu.get("cpu_usage", {}).get("total_usage", 0) - pre.get("cpu_usage", {}).get("total_usage", 0)
    system_delta = cpu.get("system_cpu_usage", 0) - pre.get("system_cpu_usage", 0)
    cpus = cpu.get("online_cpus") or len(cpu.get("cpu_usage", {}).get("percpu_usage") or []) or 1
    if container_delta <= 0 or system_delta <= 0:
        return 0.0
    return container_delta / system_delta * cpus * 100.0


def memory_used(stats: dict) -> tuple[int, int]:
    """Usage less the page cache that can be dropped: inactive_file (cgroup v2), total_inactive_file (v1)."""
    memory = stats.get("memory_stats", {})
    usage = memory.get("usage", 0)
    details = memory.get("stats", {})
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    return max(usage - cache, 0), memory.get("limit", 0)


@dataclass(frozen=True)
class EngineEvent:
    at: datetime
    service: str
    container: str
    action: str  # restart, die, oom, health_status: healthy / unhealthy, start, stop, kill...
    exit_code: int | None = None


@dataclass(frozen=True)
class LastRun:
    service: str
    container: str
    started_at: datetime | None
    finished_at: datetime | None  # its last exit (before its last start, if it runs again)
    exit_code: int | None
    oom_killed: bool
    running: bool


def _event(raw: dict, service_of: Callable[[dict, str], str]) -> EngineEvent | None:
    actor = raw.get("Actor") or {}
    labels = actor.get("Attributes") or {}
    if labels.get(ONEOFF_LABEL, "False") == "True":
        return None
    at = datetime.fromtimestamp(raw["timeNano"] / 1e9 if "timeNano" in raw else raw.get("time", 0), timezone.utc)
    code = labels.get("exitCode")
    name = labels.get("name", str(actor.get("ID", ""))[:12])
    action = str(raw.get("Action") or raw.get("status") or "")
    return EngineEvent(at, service_of(labels, name), name, action, int(code) if code and code.lstrip("-").isdigit() else None)


class ComposeStack:
    kind = "Compose project"  # what `project` names, in messages

    def __init__(self, project: str, docker_url: str | None = None, timeout: float = 120.0):
        self.project = project
        self._docker_url = docker_url
        # Stopping a container waits for its own stop timeout; the API's default 60 s read timeout is too short.
        self._timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    @property
    def scope(self) -> str:
        """The stack as messages name it: "Compose project flowstate" (or "Swarm stack fs")."""
        return f"{self.kind} {self.project}"

    @property
    def where(self) -> str:
        return self._docker_url or "the default Docker socket"

    def _docker(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                try:
                    if self._docker_url:
                        self._client = docker.DockerClient(base_url=self._docker_url, timeout=int(self._timeout))
                    else:
                        self._client = docker.from_env(timeout=int(self._timeout))
                except docker.errors.DockerException:
                    raise DockerUnavailable(f"The Docker engine is not reachable at {self.where}.") from None
            return self._client

    def _call(self, action: Callable[[docker.DockerClient], T]) -> T:
        try:
            return action(self._docker())
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as error:
            if isinstance(error, docker.errors.APIError):
                raise
            raise DockerUnavailable(f"The Docker engine is not reachable at {self.where}.") from None

    def _filters(self, service: str | None = None) -> dict:
        labels = [f"{PROJECT_LABEL}={self.project}"]
        if service is not None:
            labels.append(f"{SERVICE_LABEL}={service}")
        return {"label": labels}

    @staticmethod
    def _is_oneoff(labels: dict) -> bool:
        # `docker compose run` containers carry the project's labels too; they are not the service.
        return labels.get(ONEOFF_LABEL, "False") == "True"

    def _service_of(self, labels: dict, name: str) -> str:
        return labels.get(SERVICE_LABEL, name)

    def containers(self, service: str | None = None) -> list[tuple[str, Container]]:
        """The project's service containers (or one service's), by service name."""
        found = self._call(lambda client: client.containers.list(all=True, filters=self._filters(service)))
        pairs = [(self._service_of(c.labels, c.name), c) for c in found if not self._is_oneoff(c.labels)]
        return sorted(pairs, key=lambda pair: (pair[0], pair[1].name))

    def states(self) -> list[ServiceState]:
        """One list call for all; an inspect only for the containers that are not running and healthy."""
        summaries = self._call(lambda client: client.api.containers(all=True, filters=self._filters()))
        states = []
        for summary in summaries:
            labels = summary.get("Labels") or {}
            if self._is_oneoff(labels):
                continue
            name = (summary.get("Names") or ["?"])[0].lstrip("/")
            service = labels.get(SERVICE_LABEL, name)
            match = _HEALTH_IN_STATUS.search(summary.get("Status", ""))
            health = match.group(1).removeprefix("health: ") if match else None
            status = summary.get("State", "unknown")
            if status == "running" and health in (None, "healthy"):
                states.append(ServiceState(service, name, status, health, summary.get("Status", "")))
            else:
                attrs = self._call(lambda client: client.api.inspect_container(summary["Id"]))
                states.append(self._evidence(service, name, attrs, summary.get("Status", "")))
        return sorted(states, key=lambda state: (state.service, state.container))

    @staticmethod
    def _evidence(service: str, name: str, attrs: dict, summary: str) -> ServiceState:
        state = attrs.get("State", {})
        health = state.get("Health") or {}
        log = health.get("Log") or []
        output = (log[-1].get("Output") or "").strip() if log else ""
        return ServiceState(
            service=service,
            container=name,
            status=state.get("Status", "unknown"),
            health=health.get("Status"),
            summary=summary,
            exit_code=state.get("ExitCode", 0),
            started_at=_parse_time(state.get("StartedAt")),
            finished_at=_parse_time(state.get("FinishedAt")),
            restart_count=attrs.get("RestartCount", 0),
            health_output=output or None,
        )

    def stats(self) -> list[ServiceStats]:
        """One sample of every running container, all at once (each takes about a second)."""
        running = [(service, c) for service, c in self.containers() if c.status == "running"]
        if not running:
            return []

        def sample(pair: tuple[str, Container]) -> ServiceStats:
            service, container = pair
            raw = self._call(lambda _client: container.stats(stream=False))
            used, limit = memory_used(raw)
            return ServiceStats(service, container.name, cpu_percent(raw), used, limit)

        with ThreadPoolExecutor(max_workers=len(running), thread_name_prefix="stats") as pool:
            return list(pool.map(sample, running))

    def logs(self, service: str, since: datetime | None = None, tail: int | None = None, timestamps: bool = False) -> Iterator[str]:
        """The service's log lines, streamed: a day of a busy backend's log never sits in memory at once."""
        for _service, container in self.containers(service):
            options: dict = {"stdout": True, "stderr": True, "stream": True, "follow": False, "timestamps": timestamps}
            if since is not None:
                options["since"] = since
            if tail is not None:
                options["tail"] = tail
            chunks = self._call(lambda _client: container.logs(**options))
            pending = b""
            try:
                for chunk in chunks:
                    *complete, pending = (pending + chunk).split(b"\n")
                    for line in complete:
                        yield line.decode("utf-8", errors="replace")
            except requests.exceptions.RequestException:
                raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None
            if pending:
                yield pending.decode("utf-8", errors="replace")

    def _each(self, services: list[str], action: Callable[[Container], None]) -> list[str]:
        by_service: dict[str, list[Container]] = {}
        for service, container in self.containers():
            by_service.setdefault(service, []).append(container)
        missing = [service for service in services if service not in by_service]
        if missing:
            raise ServiceNotFound(f"No container of {', '.join(missing)} in {self.scope}.")
        done = []
        for service in services:
            for container in by_service[service]:
                self._call(lambda _client: action(container))
                done.append(container.name)
        return done

    def stop(self, services: list[str], timeout: int = 30) -> list[str]:
        return self._each(services, lambda c: c.stop(timeout=timeout))

    def start(self, services: list[str]) -> list[str]:
        return self._each(services, lambda c: c.start())

    def restart(self, services: list[str], timeout: int = 30) -> list[str]:
        return self._each(services, lambda c: c.restart(timeout=timeout))

    def previous_specs(self) -> dict[str, str]:
        """Swarm keeps a service's spec before its last update; Compose keeps none."""
        return {}

    def unsampled(self) -> list[tuple[str, str]]:
        """(service, node) of the containers that run where this engine cannot sample them: none, on Compose."""
        return []

    def projects(self) -> list[str]:
        """The Compose projects the engine has containers of (to name the right one when ours matches none)."""
        found = self._call(lambda client: client.api.containers(all=True, filters={"label": PROJECT_LABEL}))
        return sorted({(c.get("Labels") or {}).get(PROJECT_LABEL, "") for c in found} - {""})

    def services(self) -> list[str]:
        return sorted({service for service, _container in self.containers()})

    def wait_healthy(self, service: str, timeout: float, poll: float = 0.5) -> ServiceState:
        """Until every container of the service is running and healthy (or just running, without a healthcheck)."""
        deadline = time.monotonic() + timeout
        while True:
            states = [self._state_of(service, container) for _service, container in self.containers(service)]
            if states and all(state.ok and state.health != "starting" for state in states):
                return states[0]
            if time.monotonic() >= deadline:
                bad = [state for state in states if not state.ok or state.health == "starting"]
                if not states:
                    raise ServiceNotFound(f"No container of {service} in {self.scope}.")
                return bad[0]
            time.sleep(poll)

    def _state_of(self, service: str, container: Container) -> ServiceState:
        attrs = self._call(lambda client: client.api.inspect_container(container.id))
        return self._evidence(service, container.name, attrs, attrs.get("State", {}).get("Status", ""))

    # ---- running tools inside a service's container ----------------------------------------------

    def _running(self, service: str) -> Container:
        for _service, container in self.containers(service):
            if container.status == "running":
                return container
        raise ServiceNotFound(f"No running container of {service} in {self.scope}.")

    def exec_stream(
        self,
        service: str,
        argv: list[str],
        on_stdout: Callable[[bytes], None],
        on_start: Callable[[str], None] = lambda _exec_id: None,
        environment: dict[str, str] | None = None,
    ) -> ExecOutcome:
        """Run argv in the service's container (no shell, no TTY: binary output stays intact), its stdout
        handed over chunk by chunk as it comes; then its exit code from the engine."""
        container = self._running(service)
        exec_id = self._call(lambda client: client.api.exec_create(container.id, argv, stdout=True, stderr=True, tty=False, environment=environment))["Id"]
        on_start(exec_id)
        stderr = OutputTail()
        try:
            # A streamed exec has no read timeout (docker-py lifts it), so a quiet pg_restore is not cut off.
            for out, err in self._call(lambda client: client.api.exec_start(exec_id, stream=True, demux=True)):
                if out:
                    on_stdout(out)
                if err:
                    stderr.add(err)
        except requests.exceptions.RequestException:
            raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None
        return ExecOutcome(self.exec_state(exec_id)[1], stderr.text())

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        """(still running, exit code) of an exec; the engine keeps it after the bot that started it is gone."""
        info = self._call(lambda client: client.api.exec_inspect(exec_id))
        return bool(info.get("Running")), info.get("ExitCode")

    def put_file(self, service: str, directory: str, name: str, size: int, chunks: Iterable[bytes]) -> None:
        """Copy a file into the service's container, streamed (put_archive: feeding exec stdin is fragile).

        The directory must not be a tmpfs mount: the engine writes beneath it, and the file never shows."""
        container = self._running(service)
        try:
            done = self._call(lambda client: client.api.put_archive(container.id, directory, _tar_of_one_file(name, size, chunks)))
        except requests.exceptions.RequestException:
            raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None
        if not done:
            raise StackError(f"The Docker engine did not take {name} into {directory} of {service}.")

    def put_owned_file(self, service: str, directory: str, name: str, data: bytes, uid: int, gid: int) -> None:
        """Write a small file (mode 0600, owned by uid:gid) into the service's container, running or not: the engine
        copies into a stopped container's volumes too, so a server that cannot start can be given its old file back."""
        found = self.containers(service)
        if not found:
            raise ServiceNotFound(f"No container of {service} in Compose project {self.project}.")
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o600, int(time.time()), uid, gid
        tar = info.tobuf(format=tarfile.GNU_FORMAT) + data + b"\0" * ((-len(data)) % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)

        def put(client: docker.DockerClient) -> None:
            # copyUIDGID: the tar's owner, not root's (the engine's default), which the server could not read.
            url = client.api._url("/containers/{0}/archive", found[0][1].id)
            client.api._raise_for_status(client.api._put(url, params={"path": directory, "copyUIDGID": "1"}, data=tar))

        try:
            self._call(put)
        except docker.errors.APIError as error:
            raise StackError(f"The Docker engine did not take {name} into {directory} of {service}: {error.explanation or error}") from None
        except requests.exceptions.RequestException:
            raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None

    def events(self, since: datetime, until: datetime) -> tuple[list[EngineEvent], datetime | None]:
        """The project's container events between two times, oldest first, and the time of the oldest event the engine
        still keeps of any kind (it keeps only its last ~1000, and none from before it started), or None if it keeps none."""
        filters = {**self._filters(), "type": ["container"]}
        # The engine streams until `until` comes: a fraction of a second, not the next whole one.
        end = f"{until.timestamp():.9f}"
        window = dict(since=int(since.timestamp()), until=end, decode=True)

        def read(client: docker.DockerClient) -> tuple[list[EngineEvent], datetime | None]:
            found = [_event(raw, self._service_of) for raw in client.events(filters=filters, **window)]
            oldest = client.events(since=1, until=end, decode=True)
            try:
                first = next(iter(oldest), None)
            finally:
                oldest.close()
            kept_from = datetime.fromtimestamp(first["timeNano"] / 1e9 if "timeNano" in first else first["time"], timezone.utc) if first else None
            return [event for event in found if event is not None], kept_from

        try:
            return self._call(read)
        except docker.errors.APIError as error:
            raise StackError(f"The Docker engine refused its events: {error.explanation or error}") from None
        except requests.exceptions.RequestException:
            raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None

    def last_runs(self) -> list[LastRun]:
        """Each container's last start and exit as it keeps them itself: what is left of events the engine dropped."""
        runs = []
        for service, container in self.containers():
            state = container.attrs.get("State") or {}
            runs.append(LastRun(service, container.name, _parse_time(state.get("StartedAt")), _parse_time(state.get("FinishedAt")),
                                state.get("ExitCode"), bool(state.get("OOMKilled")), state.get("Status") == "running"))
        return runs

    def environments(self) -> dict[str, dict[str, str]]:
        """Each service's environment as its container was started with (its first container's), by service: read only to
        be digested (bot/changes), never shown."""
        found: dict[str, dict[str, str]] = {}
        for service, container in self.containers():
            if service in found:
                continue
            pairs = (entry.partition("=") for entry in container.attrs.get("Config", {}).get("Env") or [])
            found[service] = {name: value for name, _, value in pairs}
        return found

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
