"""The deploy script: an argument list run in the checkout with no shell, in a process group of its own,
its output read line by line as it comes, and the whole group killed when it overruns its timeout."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from bot.config import DeploySection
from bot.deploy.git import minimal_env
from bot.deploy.model import OUTPUT_LIMIT
from bot.redact import redact

TAIL_LINES = 10  # what the progress message shows of the output
SHOW_EVERY = 1.0  # seconds between two progress updates (the message is updated at most about once a second)
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL of a timed-out script's group
LINE_LIMIT = 4000  # characters of one output line that are kept


@dataclass
class ScriptOutcome:
    exit_code: int | None  # None when it was killed on its timeout (or could not start)
    seconds: float
    output: str  # redacted, its last OUTPUT_LIMIT characters
    timed_out: bool = False
    error: str | None = None  # why it could not start

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class _Output:
    """All of the output up to a bound (the oldest goes first), and the last lines for the progress message."""

    def __init__(self) -> None:
        self.kept: deque[str] = deque()
        self.size = 0
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)

    def add(self, line: str) -> None:
        line = redact(line.rstrip("\r\n")[:LINE_LIMIT])
        self.kept.append(line)
        self.tail.append(line)
        self.size += len(line) + 1
        while self.size > OUTPUT_LIMIT and len(self.kept) > 1:
            self.size -= len(self.kept.popleft()) + 1

    def text(self) -> str:
        return "\n".join(self.kept)


def _read(stream, lines: "queue.Queue[str | None]") -> None:
    for line in iter(stream.readline, ""):
        lines.put(line)
    lines.put(None)


def run_script(deploy: DeploySection, show: Callable[[list[str]], None], on_start: Callable[[int], None] = lambda _pid: None) -> ScriptOutcome:
    """Run the deploy command; `show` gets the last lines of output at most once a second, and once at the end."""
    started = time.monotonic()
    output = _Output()
    try:
        process = subprocess.Popen(
            deploy.command, cwd=deploy.workdir, env=minimal_env(deploy.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
            start_new_session=True,  # its own process group: a timeout kills what it started too
        )
    except OSError as error:
        return ScriptOutcome(None, 0.0, "", error=f"{deploy.command[0]} could not be started in {deploy.workdir}: {error.strerror or error}")
    on_start(process.pid)
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_read, args=(process.stdout, lines), name="deploy-output", daemon=True)
    reader.start()
    deadline = started + deploy.timeout
    shown_at, changed, timed_out, ended = 0.0, False, False, False
    while not ended:
        now = time.monotonic()
        if not timed_out and now >= deadline:
            timed_out = True
            _kill_group(process)
            deadline = now + KILL_GRACE + 5  # its output ends when the whole group is gone
        elif timed_out and now >= deadline:
            break  # something escaped the group and holds the pipe open: stop reading it
        try:
            line = lines.get(timeout=min(0.2, max(deadline - now, 0.01)))
        except queue.Empty:
            line = ""
        if line is None:
            ended = True
        elif line:
            output.add(line)
            changed = True
        if changed and time.monotonic() - shown_at >= SHOW_EVERY:
            show(list(output.tail))
            shown_at, changed = time.monotonic(), False
    code = _wait(process)
    if changed:
        show(list(output.tail))
    return ScriptOutcome(None if timed_out else code, time.monotonic() - started, output.text(), timed_out)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole group, SIGKILL to what is left of it after a grace period."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    def finish() -> None:
        try:
            process.wait(KILL_GRACE)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # children that outlived their parent too
        except ProcessLookupError:
            pass

    threading.Thread(target=finish, name="deploy-kill", daemon=True).start()


def _wait(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(KILL_GRACE + 5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(5)
