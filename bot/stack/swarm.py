"""The operated stack as a Docker Swarm stack: its services (label com.docker.stack.namespace), their tasks and the
tasks' containers on the engine the bot reaches (a manager of the swarm).

What works on containers (exec for /backup and /restore, put_file, stats) is the Compose runtime's, on the tasks'
containers this engine runs; what a service is (its state, a restart, its logs, stop and start) is Swarm's:
- states: tasks running against desired per service, the running tasks' container health, and for a service that is
  not converged its recent task failures with the engine's error for each;
- restart: a forced update (a rolling replacement of every task with the same spec), waited until it has converged
  (every task of the new spec running, and so healthy: Swarm starts a task with a healthcheck only once it passed) or
  reported as soon as Swarm gives up on it (update paused or rolled back) with the tasks that failed;
- logs: the service's lines across its tasks, merged by time;
- stop / start: scaling to zero and back, each service to the replica count it had (kept in a label of the service
  until it is started again, so a bot restarted in between still knows it).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Iterator

import docker
import requests
from docker.types import ServiceMode

from bot.stack.compose import ComposeStack, DockerUnavailable, ServiceNotFound, ServiceState, StackError, _parse_time

NAMESPACE_LABEL = "com.docker.stack.namespace"
SERVICE_NAME_LABEL = "com.docker.swarm.service.name"
TASK_ID_LABEL = "com.docker.swarm.task.id"
# The replica count a service had before stop() scaled it to zero; start() scales back to it and removes it.
REPLICAS_LABEL = "flowstate.replicas-before-stop"
FAILED_TASK_STATES = ("failed", "rejected")
PENDING_TASK_STATES = ("new", "allocated", "pending", "assigned", "accepted", "ready", "preparing", "starting")
RECENT_FAILURES = timedelta(minutes=10)  # failures older than this say nothing about the service now
FAILED_UPDATE_STATES = ("paused", "rollback_started", "rollback_paused", "rollback_completed")


def _task_time(task: dict) -> datetime | None:
    return _parse_time((task.get("Status") or {}).get("Timestamp"))


def _health_of(summary: str) -> str | None:
    for word, health in (("(unhealthy)", "unhealthy"), ("(health: starting)", "starting"), ("(healthy)", "healthy")):
        if word in summary:
            return health
    return None


def _task_name(service: str, task: dict) -> str:
    slot = task.get("Slot")
    return f"{service}.{slot}" if slot else f"{service}.{str(task.get('NodeID', ''))[:12]}"


def _failure(service: str, task: dict, now: datetime) -> str:
    status = task.get("Status") or {}
    at = _task_time(task)
    when = f" {max(0, int((now - at).total_seconds()))} s ago" if at else ""
    error = status.get("Err") or status.get("Message") or status.get("State", "failed")
    return f"task {_task_name(service, task)} {status.get('State', 'failed')}{when}: {error}"


# The three calls of states() side by side (an engine call is mostly waiting): the bot's whole /health stays near
# Compose's, whose containers come in one call.
_CALLS = ThreadPoolExecutor(max_workers=6, thread_name_prefix="swarm-state")


def _spec_changes(previous: dict, current: dict) -> list[str]:
    def container(spec: dict) -> dict:
        return (spec.get("TaskTemplate") or {}).get("ContainerSpec") or {}

    def image(spec: dict) -> str:
        return str(container(spec).get("Image", "")).split("@", 1)[0]  # the digest the engine pinned says nothing more

    def replicas(spec: dict) -> int | None:
        return ((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas")

    changes = []
    if image(previous) != image(current):
        changes.append(f"image {image(previous)} (now {image(current)})")
    if replicas(previous) != replicas(current):
        changes.append(f"{replicas(previous)} replicas (now {replicas(current)})")
    before, now = set(container(previous).get("Env") or []), set(container(current).get("Env") or [])
    if before != now:
        names = sorted({entry.partition("=")[0] for entry in before ^ now})
        changes.append(f"other values of {len(names)} environment variable{'' if len(names) == 1 else 's'} ({', '.join(names)})")
    if not changes and (previous.get("TaskTemplate") or {}).get("ForceUpdate") != (current.get("TaskTemplate") or {}).get("ForceUpdate"):
        changes.append("the same spec before a forced restart")
    return changes


class SwarmStack(ComposeStack):
    kind = "Swarm stack"

    def __init__(self, namespace: str, docker_url: str | None = None, timeout: float = 120.0, converge_timeout: float = 120.0):
        super().__init__(namespace, docker_url, timeout)
        self.converge_timeout = converge_timeout  # how long restart() waits for a forced update to converge

    # ---- names --------------------------------------------------------------------------------------------------

    def _full(self, service: str) -> str:
        return f"{self.project}_{service}"

    def _short(self, full: str) -> str:
        return full.removeprefix(f"{self.project}_")

    def _filters(self, service: str | None = None) -> dict:
        labels = [f"{NAMESPACE_LABEL}={self.project}"]
        if service is not None:
            labels.append(f"{SERVICE_NAME_LABEL}={self._full(service)}")
        return {"label": labels}

    @staticmethod
    def _is_oneoff(labels: dict) -> bool:
        return False

    def _service_of(self, labels: dict, name: str) -> str:
        return self._short(labels.get(SERVICE_NAME_LABEL, name))

    # ---- services and tasks ---------------------------------------------------------------------------------------

    def _services(self) -> list[dict]:
        return self._call(lambda client: client.api.services(filters={"label": f"{NAMESPACE_LABEL}={self.project}"}))

    def _service(self, service: str) -> dict:
        found = [s for s in self._services() if s["Spec"]["Name"] == self._full(service)]
        if not found:
            raise ServiceNotFound(f"No service {service} in {self.scope}.")
        return found[0]

    def _tasks(self, names: list[str]) -> list[dict]:
        if not names:
            return []
        return self._call(lambda client: client.api.tasks(filters={"service": names}))

    def services(self) -> list[str]:
        return sorted(self._short(s["Spec"]["Name"]) for s in self._services())

    def projects(self) -> list[str]:
        """The Swarm stacks the engine has services of."""
        found = self._call(lambda client: client.api.services(filters={"label": NAMESPACE_LABEL}))
        return sorted({(s["Spec"].get("Labels") or {}).get(NAMESPACE_LABEL, "") for s in found} - {""})

    @staticmethod
    def _desired(spec: dict, tasks: list[dict]) -> int:
        replicated = (spec.get("Mode") or {}).get("Replicated")
        if replicated is not None:
            return int(replicated.get("Replicas", 1))
        return sum(1 for task in tasks if task.get("DesiredState") == "running")  # global: one per eligible node

    def states(self) -> list[ServiceState]:
        """One state per service from three calls at once (the stack's services, its tasks, its running task containers:
        all three found by the namespace label, which `docker stack deploy` puts on the tasks' containers too)."""
        calls = (self._services, lambda: self._call(lambda client: client.api.tasks(filters=self._filters())),
                 lambda: self._call(lambda client: client.api.containers(filters=self._filters())))
        services, tasks, containers = [future.result() for future in [_CALLS.submit(call) for call in calls]]
        health = {(c.get("Labels") or {}).get(TASK_ID_LABEL): _health_of(c.get("Status", "")) for c in containers}
        known = {task.get("ServiceID") for task in tasks}
        # A service added to the stack by hand (`docker service create --label com.docker.stack.namespace=...`) has the
        # label on itself only, not on its tasks: those are asked for by the service's name.
        tasks += self._tasks([s["Spec"]["Name"] for s in services if s["ID"] not in known])
        by_service: dict[str, list[dict]] = {}
        for task in tasks:
            by_service.setdefault(task.get("ServiceID", ""), []).append(task)
        now = datetime.now(timezone.utc)
        return sorted((self._state(s, by_service.get(s["ID"], []), health, now) for s in services), key=lambda st: st.service)

    def _state(self, service: dict, tasks: list[dict], health: dict, now: datetime) -> ServiceState:
        full = service["Spec"]["Name"]
        desired = self._desired(service["Spec"], tasks)
        current = [t for t in tasks if t.get("DesiredState") == "running"]
        running = [t for t in current if (t.get("Status") or {}).get("State") == "running"]
        pending = [t for t in current if (t.get("Status") or {}).get("State") in PENDING_TASK_STATES]
        healths = [health.get(t["ID"]) for t in running]
        worst = next((h for h in ("unhealthy", "starting", "healthy") if h in healths), None)
        summary = f"{len(running)}/{desired} {'task' if desired == 1 else 'tasks'} running" + (f" ({worst})" if worst else "")
        update = service.get("UpdateStatus") or {}
        if desired > 0 and len(running) >= desired and worst in (None, "healthy"):
            # Serving as wanted; an update Swarm gave up on earlier (its /restart said so) is told, not failed on for ever.
            if update.get("State") in FAILED_UPDATE_STATES:
                summary += f", its last update {update['State'].replace('_', ' ')}"
            return ServiceState(self._short(full), full, "running", worst, summary)
        failures = sorted((t for t in tasks if (t.get("Status") or {}).get("State") in FAILED_TASK_STATES
                           and (at := _task_time(t)) is not None and now - at <= RECENT_FAILURES), key=_task_time, reverse=True)
        parts = [summary]
        if desired == 0:
            parts = [f"scaled to 0 replicas ({len(running)} still running)" if running else "scaled to 0 replicas"]
        if pending:
            parts.append(f"{len(pending)} starting")
        if update.get("State") in FAILED_UPDATE_STATES:
            parts.append(f"its last update {update['State'].replace('_', ' ')}: {update.get('Message', '')}".rstrip(": "))
        if failures:
            parts.append(_failure(full, failures[0], now))
            if len(failures) > 1:
                parts.append(f"{len(failures)} task failures in the last {int(RECENT_FAILURES.total_seconds() // 60)} min")
        # Not yet converged but nothing failed: still starting (a warning); else failing.
        if desired == 0:
            status, state_health = "exited", None
        elif not failures and (pending or worst == "starting") and update.get("State") not in FAILED_UPDATE_STATES:
            status, state_health = "running", "starting"
        else:
            status, state_health = "failing", worst
        return ServiceState(self._short(full), full, status, state_health, summary, evidence="; ".join(parts))

    def _state_of_service(self, service: str) -> ServiceState:
        for state in self.states():
            if state.service == service:
                return state
        raise ServiceNotFound(f"No service {service} in {self.scope}.")

    def wait_healthy(self, service: str, timeout: float, poll: float = 0.5) -> ServiceState:
        deadline = time.monotonic() + timeout
        while True:
            state = self._state_of_service(service)
            if (state.ok and state.health != "starting") or time.monotonic() >= deadline:
                return state
            time.sleep(poll)

    # ---- restart: a forced update, until converged or given up ----------------------------------------------------

    def restart(self, services: list[str], timeout: int = 30) -> list[str]:
        """Each service's tasks replaced with the same spec (docker service update --force), one service after the other,
        each waited until converged. A task that fails (or an update Swarm pauses or rolls back) ends the wait at once,
        as a StackError naming the tasks that failed and their errors."""
        known = {s["Spec"]["Name"]: s for s in self._services()}
        missing = [s for s in services if self._full(s) not in known]
        if missing:
            raise ServiceNotFound(f"No service {', '.join(missing)} in {self.scope}.")
        done = []
        for service in services:
            self._force_update(known[self._full(service)])
            done.append(self._full(service))
        return done

    def _force_update(self, service: dict) -> None:
        full, started = service["Spec"]["Name"], datetime.now(timezone.utc)
        force = int(service["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) + 1
        try:
            # The current spec as it is, but for ForceUpdate: what `docker service update --force` sends.
            self._call(lambda client: client.api.update_service(
                service["ID"], service["Version"]["Index"], task_template={"ForceUpdate": force}, fetch_current_spec=True))
        except docker.errors.APIError as error:
            raise StackError(f"The Docker engine refused to update {full}: {error.explanation or error}") from None
        self._wait_converged(service["ID"], full, started, force)

    def _wait_converged(self, service_id: str, full: str, since: datetime, force: int, poll: float = 0.5) -> None:
        """Until every task Swarm wants running is one of the new spec (its ForceUpdate is `force`) and runs; right after
        the update the old tasks still run and are still wanted, so running alone proves nothing."""
        deadline = time.monotonic() + self.converge_timeout
        while True:
            (current,) = self._call(lambda client: client.api.services(filters={"id": service_id})) or [None]
            if current is None:
                raise ServiceNotFound(f"Service {full} was removed while it was restarted.")
            tasks = self._tasks([full])
            now = datetime.now(timezone.utc)
            update = current.get("UpdateStatus") or {}
            new_failures = [t for t in tasks if (t.get("Status") or {}).get("State") in FAILED_TASK_STATES
                            and (at := _task_time(t)) is not None and at >= since]
            state = update.get("State")
            if state in FAILED_UPDATE_STATES or (new_failures and state != "updating"):
                failed = "; ".join(_failure(full, t, now) for t in sorted(new_failures, key=_task_time, reverse=True)[:3])
                said = f" (Swarm: update {state.replace('_', ' ')}{': ' + update['Message'] if update.get('Message') else ''})" if state else ""
                raise StackError(f"{full} did not converge{said}: {failed or 'no task of the new spec runs'}.")
            desired = self._desired(current["Spec"], tasks)
            current_tasks = [t for t in tasks if t.get("DesiredState") == "running"]
            running = [t for t in current_tasks if (t.get("Status") or {}).get("State") == "running"
                       and int((t.get("Spec") or {}).get("ForceUpdate", 0)) == force]
            if state in (None, "completed") and len(running) >= desired and len(current_tasks) == len(running):
                return
            if time.monotonic() >= deadline:
                shown = ", ".join(f"{_task_name(full, t)} {(t.get('Status') or {}).get('State', '?')}" for t in current_tasks) or "none"
                failed = "; ".join(_failure(full, t, now) for t in new_failures[:3])
                raise StackError(f"{full} did not converge within {self.converge_timeout:g} s: {len(running)}/{desired} tasks running "
                                 f"(tasks: {shown}){'; ' + failed if failed else ''}.")
            time.sleep(poll)

    def previous_specs(self) -> dict[str, str]:
        """What Swarm kept of each service's spec before its last update (`docker service rollback` goes back to it), said
        as what differs from the current one: the image, the replicas, how many environment variables (never their
        values), or only a forced restart."""
        kept = {}
        for service in self._services():
            previous, current = service.get("PreviousSpec"), service["Spec"]
            if not previous:
                continue
            kept[self._short(current["Name"])] = "; ".join(_spec_changes(previous, current)) or "the same spec"
        return kept

    def environments(self) -> dict[str, dict[str, str]]:
        """Each service's environment as its spec gives it (not a task container's: an old task's may still be there);
        read only to be digested (bot/changes), never shown."""
        found = {}
        for service in self._services():
            env = ((service["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Env") or []
            found[self._short(service["Spec"]["Name"])] = {name: value for name, _, value in (entry.partition("=") for entry in env)}
        return found

    def unsampled(self) -> list[tuple[str, str]]:
        """(service, node) of each running task on another node than this engine's: its container cannot be sampled here."""
        info = self._call(lambda client: client.info())
        here = (info.get("Swarm") or {}).get("NodeID", "")
        names = {s["ID"]: self._short(s["Spec"]["Name"]) for s in self._services()}
        elsewhere = [t for t in self._tasks([f"{self.project}_{n}" for n in names.values()])
                     if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running" and t.get("NodeID") != here]
        if not elsewhere:
            return []
        nodes = {n["ID"]: (n.get("Description") or {}).get("Hostname", n["ID"][:12]) for n in self._call(lambda client: client.api.nodes())}
        return sorted((names.get(t.get("ServiceID"), "?"), nodes.get(t.get("NodeID"), str(t.get("NodeID"))[:12])) for t in elsewhere)

    # ---- stop and start: scale to zero and back -------------------------------------------------------------------

    def _scale(self, service: dict, replicas: int, labels: dict) -> None:
        full = service["Spec"]["Name"]
        try:
            self._call(lambda client: client.api.update_service(
                service["ID"], service["Version"]["Index"], labels=labels, mode=ServiceMode("replicated", replicas=replicas),
                fetch_current_spec=True))
        except docker.errors.APIError as error:
            raise StackError(f"The Docker engine refused to scale {full} to {replicas}: {error.explanation or error}") from None

    def stop(self, services: list[str], timeout: int = 30) -> list[str]:
        """Each service scaled to zero, its replica count kept in a label; returns once none of their tasks runs."""
        done = []
        for service in services:
            current = self._service(service)
            spec, labels = current["Spec"], dict(current["Spec"].get("Labels") or {})
            if "Replicated" not in (spec.get("Mode") or {}):
                raise StackError(f"{spec['Name']} is a global service; it cannot be scaled to zero and back.")
            replicas = int(spec["Mode"]["Replicated"].get("Replicas", 1))
            if replicas > 0 or REPLICAS_LABEL not in labels:
                labels[REPLICAS_LABEL] = str(replicas)
            self._scale(current, 0, labels)
            done.append(spec["Name"])
        deadline = time.monotonic() + timeout + 30
        while any((t.get("Status") or {}).get("State") in ("running", *PENDING_TASK_STATES) for t in self._tasks(done)):
            if time.monotonic() >= deadline:
                raise StackError(f"Tasks of {', '.join(done)} still run {timeout + 30} s after they were scaled to zero.")
            time.sleep(0.5)
        return done

    def start(self, services: list[str]) -> list[str]:
        """Each service scaled back to the replica count stop() kept (a service that was not stopped is left as it is)."""
        done = []
        for service in services:
            current = self._service(service)
            labels = dict(current["Spec"].get("Labels") or {})
            if REPLICAS_LABEL in labels:
                replicas = int(labels.pop(REPLICAS_LABEL))
                self._scale(current, replicas, labels)
            done.append(current["Spec"]["Name"])
        return done

    # ---- logs ---------------------------------------------------------------------------------------------------

    def logs(self, service: str, since: datetime | None = None, tail: int | None = None, timestamps: bool = False) -> Iterator[str]:
        """The service's lines across its tasks, merged by time (the engine sends each task's lines in order, the tasks'
        one after another). The lines of the window are held to be sorted: the callers bound them (tail, /logs' window)."""
        full = self._full(service)
        options: dict = {"stdout": True, "stderr": True, "follow": False, "timestamps": True, "tail": "all" if tail is None else tail}
        if since is not None:
            options["since"] = int(since.timestamp())  # whole seconds: the lines before `since` are dropped below
        try:
            chunks = self._call(lambda client: client.api.service_logs(full, **options))
            pending, lines = b"", []
            for chunk in chunks:
                *complete, pending = (pending + chunk).split(b"\n")
                lines.extend(complete)
            if pending:
                lines.append(pending)
        except docker.errors.NotFound:
            raise ServiceNotFound(f"No service {service} in {self.scope}.") from None
        except docker.errors.APIError as error:
            raise StackError(f"The Docker engine refused the logs of {full}: {error.explanation or error}") from None
        except requests.exceptions.RequestException:
            raise DockerUnavailable(f"The Docker engine stopped answering at {self.where}.") from None
        stamped = []
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            stamp, _, text = line.partition(" ")
            at = _parse_time(stamp) if stamp[:1].isdigit() else None
            if since is not None and at is not None and at < since:
                continue
            stamped.append((at or datetime.min.replace(tzinfo=timezone.utc), line if timestamps else text))
        stamped.sort(key=lambda pair: pair[0])  # stable: a task's own order is kept for equal times
        if tail is not None:
            stamped = stamped[-tail:] if tail else []
        for _at, line in stamped:
            yield line
