"""`flowstate-bot run` as a real process (a replica), in HTTP mode or in Socket Mode, for tests of several of them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SIGNING_SECRET, bot_env
from tests.slack_signing import SlackSender

BOT = str(Path(sys.executable).with_name("flowstate-bot"))
APP_TOKEN = "xapp-1-A0APP-1-replica-test"


class RunningBot:
    """`flowstate-bot run` as a subprocess; stderr is drained in the background so the pipe never fills."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self._lines: list[str] = []
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        for line in self.process.stderr:
            self._lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self._lines)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        """SIGTERM, as a service manager stops it; returns the exit code once stderr is fully read."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the bot did not stop within 30 s of SIGTERM; its stderr:\n{self.stderr}", pytrace=False)
        self._reader.join(timeout=10)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


class Replica(RunningBot):
    """One replica: its own home (as on its own host), the settings given, in HTTP mode or Socket Mode."""

    def __init__(self, cwd: Path, home: Path, slack_double, *, socket_mode: bool = False, **env: str):
        values = dict(
            SLACK_BOT_TOKEN="xoxb-replica-test",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            FLOWSTATE_SLACK_API_URL=slack_double.api_url,
            FLOWSTATE_HOME=str(home),
            FLOWSTATE_ADMINS="U0ADMIN",
            FLOWSTATE_WORKERS="2",
        )
        if socket_mode:
            values["SLACK_APP_TOKEN"] = APP_TOKEN
        values.update(env)
        args = ["run"] if socket_mode else ["run", "--http", "--port", "0"]
        self.env = bot_env(**values)
        super().__init__(subprocess.Popen([BOT, *args], cwd=cwd, env=self.env, stderr=subprocess.PIPE, text=True))

    def wait_for_line(self, pattern: str, timeout: float = 90) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.stderr):
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the bot (pid {self.pid}, exit {self.process.poll()}) never logged {pattern!r}; it said:\n{self.stderr}")

    def sender(self) -> SlackSender:
        port = self.wait_for_line(r"serving Slack requests on http://127\.0\.0\.1:(\d+)/").group(1)
        return SlackSender(f"http://127.0.0.1:{port}", SIGNING_SECRET)

    def metrics_url(self) -> str:
        port = self.wait_for_line(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics").group(1)
        return f"http://127.0.0.1:{port}/metrics"


def parent_of(pid: int) -> int | None:
    """The parent of a process (a runner's bot process), None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(re.search(r"^PPid:\s+(\d+)", status, re.M).group(1))


def runner_pid(holder: str) -> int:
    """The pid in a job's holder (host/pid/token)."""
    return int(holder.split("/")[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
