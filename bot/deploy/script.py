"""The deploy script: an argument list run in the checkout with no shell, in a process group of its own,
its output written to a file and read line by line as it comes, the whole group killed when it overruns its timeout."""

from __future__ import annotations

import errno
import logging
import os
import pwd
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bot.frame.config import DeploySection
from bot.deploy.git import minimal_env
from bot.deploy.model import OUTPUT_LIMIT
from bot.jobs.queue import process_identity
from bot.frame.redact import redact

log = logging.getLogger(__name__)

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


def run_script(deploy: DeploySection, log_path: Path, show: Callable[[list[str]], None],
               on_start: Callable[[int], None] = lambda _pid: None) -> ScriptOutcome:
    """Run the deploy command; `show` gets the last lines of output at most once a second, and once at the end.

    Its output goes to a file, not a pipe: a bot that dies mid-deploy must not take the script down with it
    (a write to a pipe nobody reads kills the writer), and the bot that starts next can still read what it said.
    Once started, it is waited for whatever fails here (recording its pid, showing its output): the change, and the
    stack's lock with it, must not end while the script still deploys."""
    started = time.monotonic()
    output = _Output()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        as_user = _as_user(deploy)
        with open(log_path, "wb") as sink:
            process = subprocess.Popen(
                deploy.command, cwd=deploy.workdir, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout kills what it started too
                **as_user,
            )
    except OSError as error:
        return ScriptOutcome(None, 0.0, "", error=f"{deploy.command[0]} could not be started in {deploy.workdir}: {error.strerror or error}")
    try:
        on_start(process.pid)
    except Exception:
        log.exception("could not record the deploy script's pid %s; waiting for it all the same", process.pid)
    deadline = started + deploy.timeout
    try:
        return _follow(process, log_path, deadline, show, output, started)
    finally:
        _outlive(process, deadline)


def _follow(process: subprocess.Popen, log_path: Path, deadline: float, show: Callable[[list[str]], None],
            output: _Output, started: float) -> ScriptOutcome:
    shown_at, changed, timed_out = 0.0, False, False
    with open(log_path, "rb") as source:
        pending = b""
        while True:
            ended = process.poll() is not None
            chunk = source.read(65536)
            while chunk:  # everything written so far (after the end: all of it)
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    output.add(line.decode("utf-8", errors="replace"))
                changed = changed or bool(complete)
                chunk = source.read(65536)
            if changed and (ended or time.monotonic() - shown_at >= SHOW_EVERY):
                show(list(output.tail))
                shown_at, changed = time.monotonic(), False
            if ended:
                break
            if not timed_out and time.monotonic() >= deadline:
                timed_out = True
                _kill_group(process)
            time.sleep(0.1)
        if pending:
            output.add(pending.decode("utf-8", errors="replace"))
            show(list(output.tail))
    return ScriptOutcome(None if timed_out else process.returncode, time.monotonic() - started, output.text(), timed_out)


def _as_user(deploy: DeploySection) -> dict:
    """Who the script runs as, and its environment: the minimal one, never the bot's (which held its tokens), with
    the home of `run_as` when it is set."""
    if deploy.run_as is None:
        return {"env": minimal_env(deploy.env)}
    try:
        user = pwd.getpwnam(deploy.run_as)
    except KeyError:
        raise OSError(errno.ENOENT, f"there is no user {deploy.run_as!r} for [deploy] run_as") from None
    if os.geteuid() not in (0, user.pw_uid):
        raise OSError(errno.EPERM, f"[deploy] run_as = {deploy.run_as!r} needs the bot to run as root")
    return {
        "env": minimal_env({"HOME": user.pw_dir, **deploy.env}), "user": user.pw_uid, "group": user.pw_gid,
        "extra_groups": os.getgrouplist(user.pw_name, user.pw_gid),  # its own groups, none of the bot's
    }


def _outlive(process: subprocess.Popen, deadline: float) -> None:
    """Return only once the script has ended: at its deadline its group is killed (a no-op when it has ended)."""
    try:
        process.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _kill_group(process)
        process.wait()


def writers_of(log_path: Path) -> list[str]:
    """The processes whose output goes to this file, as process_identity() names them: a script whose pid the bot
    could not record (killed, or its store down, right after starting it) is still found by the file it writes."""
    found = []
    for fd in Path("/proc").glob("[0-9]*/fd/1"):
        try:
            if os.readlink(fd) == str(log_path) and (identity := process_identity(int(fd.parts[2]))):
                found.append(identity)
        except OSError:  # gone, or not ours to look at
            continue
    return found


def read_output(log_path: Path) -> str:
    """What a script that outlived its bot wrote (its last OUTPUT_LIMIT bytes), redacted."""
    output = _Output()
    try:
        with open(log_path, "rb") as source:
            source.seek(max(0, source.seek(0, os.SEEK_END) - OUTPUT_LIMIT))
            for line in source.read().split(b"\n"):
                output.add(line.decode("utf-8", errors="replace"))
    except OSError:
        return ""
    return output.text()


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
