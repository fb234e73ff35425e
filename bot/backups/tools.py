"""PostgreSQL's client tools where they match the server: in the postgres container, or local binaries.

Every call is an argument list (no shell ever sees a word of it); the connection options come from
the stack file, a DSN password only ever through the environment of a local tool, never its arguments.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterable
from pathlib import Path

import docker
import psycopg

from bot.frame.config import DatabaseSection, StackConfig, missing_section
from bot.stack.compose import ComposeStack, ExecOutcome, OutputTail, StackError
from bot.stack.database import BOT_APP

if TYPE_CHECKING:
    from bot.stack.stack import Stack

CHUNK = 1 << 20
STAGING_DIR = "/var/tmp"  # in the container; not /tmp, often a tmpfs the engine cannot copy into


class ToolError(StackError):
    pass


@dataclass(frozen=True)
class Staged:
    """A backup file where the tools read it: a copy inside the container, or the very file that was checked,
    still open (fd), which the local tools read as /dev/fd/N: a file swapped in at its path since is not read."""

    path: str
    copied: bool
    fd: int | None = None


# pg_dump and pg_restore announce themselves by this name, so /stats leaves their statements out of the app's.
MAINTENANCE_APP = f"{BOT_APP}-maintenance"


class PgTools:
    """The interface both places share; `where` names the place in messages."""

    where = ""

    def connection(self) -> list[str]:
        raise NotImplementedError

    def stream(self, argv: list[str], on_stdout: Callable[[bytes], None], on_start: Callable[[str], None] = lambda _id: None) -> ExecOutcome:
        raise NotImplementedError

    def stage(self, source: BinaryIO, size: int, chunks: Iterable[bytes]) -> Staged:
        raise NotImplementedError

    def unstage(self, staged: Staged) -> None:
        raise NotImplementedError

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        raise NotImplementedError

    def run(self, argv: list[str]) -> tuple[ExecOutcome, str]:
        """A short tool run: its outcome and its whole (small) standard output."""
        out = bytearray()
        outcome = self.stream(argv, out.extend)
        return outcome, out.decode("utf-8", errors="replace")

    def check(self, argv: list[str], what: str) -> str:
        outcome, out = self.run(argv)
        if outcome.exit_code != 0:
            raise ToolError(f"{what} failed {self.where} (exit code {outcome.exit_code}): {last_lines(outcome.stderr)}")
        return out


def last_lines(text: str, count: int = 4) -> str:
    """A tool's error output in one line: from its first error on (pg_restore's DETAIL follows it), else the end."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if "error" in line.lower()), max(len(lines) - count, 0))
    return " / ".join(lines[first : first + count])[:600] or "no error output"


class ContainerTools(PgTools):
    """The tools of the postgres service's own image, as the operator guide runs pg_dump."""

    def __init__(self, docker_stack: ComposeStack, database: DatabaseSection):
        self._docker, self._db = docker_stack, database
        self.where = f"in the {database.compose_service} container"

    def connection(self) -> list[str]:
        return ["-U", self._db.user]

    def stream(self, argv, on_stdout, on_start=lambda _id: None) -> ExecOutcome:
        try:
            return self._docker.exec_stream(self._db.compose_service, argv, on_stdout, on_start, environment={"PGAPPNAME": MAINTENANCE_APP})
        except docker.errors.APIError as error:
            raise ToolError(f"The Docker engine refused to run {argv[0]} {self.where}: {error.explanation or error}") from None

    def stage(self, source, size, chunks) -> Staged:
        name = f"flowstate-restore-{secrets.token_hex(6)}.dump"
        try:
            self._docker.put_file(self._db.compose_service, STAGING_DIR, name, size, chunks)
        except docker.errors.APIError as error:
            raise ToolError(f"The backup could not be copied {self.where}: {error.explanation or error}") from None
        return Staged(f"{STAGING_DIR}/{name}", copied=True)

    def unstage(self, staged: Staged) -> None:
        if staged.copied:
            self.run(["rm", "-f", "--", staged.path])

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        return self._docker.exec_state(exec_id)


class LocalTools(PgTools):
    """For a stack file without Docker: the machine's own pg_dump and pg_restore against the DSN."""

    where = "on the bot's machine"

    def __init__(self, database: DatabaseSection):
        params = psycopg.conninfo.conninfo_to_dict(database.dsn)
        self._args = []
        for option, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
            if params.get(key):
                self._args += [option, str(params[key])]
        self._env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": MAINTENANCE_APP}
        if params.get("password"):
            self._env["PGPASSWORD"] = str(params["password"])
        self._running: dict[str, subprocess.Popen] = {}
        self._staged: set[int] = set()  # the open backup files the tools are given (pass_fds)

    def connection(self) -> list[str]:
        return list(self._args)

    def stream(self, argv, on_stdout, on_start=lambda _id: None) -> ExecOutcome:
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env, pass_fds=tuple(self._staged)
            )
        except OSError as error:
            raise ToolError(f"{argv[0]} cannot run {self.where}: {error.strerror}") from None
        exec_id = f"pid:{process.pid}"
        self._running[exec_id] = process
        on_start(exec_id)
        stderr = OutputTail()
        drain = threading.Thread(target=lambda: [stderr.add(chunk) for chunk in iter(lambda: process.stderr.read(4096), b"")], daemon=True)
        drain.start()
        try:
            while chunk := process.stdout.read(CHUNK):
                on_stdout(chunk)
        finally:  # whatever failed here, the change (and its lock) ends only after the tool has
            process.stdout.close()
            code = process.wait()
        drain.join()
        self._running.pop(exec_id, None)
        return ExecOutcome(code, stderr.text())

    def stage(self, source, size, chunks) -> Staged:
        for _chunk in chunks:  # read through (the caller checksums on the way); the tools read the same open file
            pass
        fd = os.dup(source.fileno())
        self._staged.add(fd)
        return Staged(f"/dev/fd/{fd}", copied=False, fd=fd)

    def unstage(self, staged: Staged) -> None:
        if staged.fd is not None and staged.fd in self._staged:
            self._staged.discard(staged.fd)
            os.close(staged.fd)

    def exec_state(self, exec_id: str) -> tuple[bool, int | None]:
        process = self._running.get(exec_id)
        if process is None:  # started by a bot process that is gone: its exit code went with it
            return False, None
        code = process.poll()
        return code is None, code


def no_database(config: StackConfig, default_file: Path) -> str:
    """Why backups cannot run without a [database] section, and where an example is."""
    return f"Backups need the application's PostgreSQL: {missing_section(config, 'database', default_file)}"


def tools_for(stack: "Stack") -> PgTools:
    database = stack.config.database
    if database is None:
        raise ToolError(no_database(stack.config, Path("flowstate.toml")))
    if stack.compose is not None and database.compose_service:
        return ContainerTools(stack.compose, database)
    return LocalTools(database)


def wait_for_exec(tools: PgTools, exec_id: str, timeout: float) -> int | None:
    """The exit code of a tool run once it has ended; None if it is still running after timeout or unknown."""
    deadline = time.monotonic() + timeout
    while True:
        running, code = tools.exec_state(exec_id)
        if not running:
            return code
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)
