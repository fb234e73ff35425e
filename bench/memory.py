"""The bot's memory as an operator runs it: PSS of the bot process and all its descendants, idle and under a burst.

Run from the repository root:  .venv/bin/python bench/memory.py [--requests 50] [--settle 3] [--loopback]

The bot is started as an operator would: `flowstate-bot run --http --port 0` in an empty directory, configured
only through the environment (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, FLOWSTATE_SLACK_API_URL on the Slack
double, FLOWSTATE_ADMINS, FLOWSTATE_HOME, FLOWSTATE_STACK_FILE). The Slack double (and, with --loopback,
three loopback services to probe) runs in a fixtures child process, the one bench/ack_latency.py uses.
By default the stack file is the live test stack's (tests/stack/flowstate.toml, or FLOWSTATE_TEST_STACK's), so /health does real work against the live test stack.

Memory is PSS (proportional set size: the `Pss:` line of /proc/PID/smaps_rollup, shared pages divided among
the processes sharing them), summed over the bot process and every descendant: the runner processes and
multiprocessing's resource tracker, if any. Idle: once startup has settled. Peak: the largest sum of samples
every 50 ms while N concurrent signed /health commands are acked and run, until all N replies have reached
their response_urls. MB are 10^6 bytes.
Exit status: 0 whatever the verdict; 2 if the benchmark could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ack_latency import SECRET, TOKEN, USER, Broken, Child, fire  # noqa: E402
from tests.stack_setting import STACK_FILE  # noqa: E402

TARGET_MB = 200.0
SAMPLE_SECONDS = 0.05
LIVE_STACK = STACK_FILE


# ---- /proc --------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """pid and every process below it (children of all its threads, recursively)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                queue += [int(child) for child in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    return found


def pss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone meanwhile
        return None
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else None


def label(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    line = " ".join(part.decode(errors="replace") for part in argv if part)
    if "resource_tracker" in line:
        return "multiprocessing resource tracker"
    if "multiprocessing.spawn" in line or "spawn_main" in line:
        return "runner process"
    if "flowstate-bot" in line:
        return "bot process (flowstate-bot run)"
    return line[:60]


def sample(root: int) -> dict[int, int]:
    """PSS in KiB of the tree under root, by pid."""
    sizes = {}
    for pid in descendants(root):
        kib = pss_kib(pid)
        if kib is not None:
            sizes[pid] = kib
    return sizes


def mb(kib: float) -> float:
    return kib * 1024 / 1e6


# ---- the bot, as an operator starts it ----------------------------------------------------------


class Bot:
    def __init__(self, workdir: Path, env: dict[str, str]):
        exe = Path(sys.executable).with_name("flowstate-bot")
        if not exe.exists():
            raise Broken(f"{exe} does not exist; install the bot first (make)")
        self.log = workdir / "bot.log"
        self._lines: list[str] = []
        self.proc = subprocess.Popen([str(exe), "run", "--http", "--port", "0"], cwd=workdir, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        deadline = time.monotonic() + 90
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Broken(f"the bot did not start:\n{self.log_tail()}")
            self._lines.append(line)
            if match := re.search(r"serving Slack requests on http://127\.0\.0\.1:(\d+)", line):
                self.port = int(match.group(1))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self._lines.append(line)

    def log_tail(self) -> str:
        return "".join(self._lines[-20:])

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: the bot stops its runners and exits
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(requests: int, settle: float, loopback: bool) -> int:
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp, contextlib.ExitStack() as stack:
        workdir = Path(tmp)
        fixtures = Child("fixtures", workdir)
        stack.callback(fixtures.stop)
        if loopback:
            stack_file = workdir / "flowstate.toml"
            stack_file.write_text("".join(
                f'[[probes]]\nname = "service{i}"\nkind = "http"\nurl = "{url}"\n\n' for i, url in enumerate(fixtures.info["probes"])
            ))
        else:
            stack_file = LIVE_STACK
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWSTATE_", "SLACK_"))}
        env.update(
            SLACK_BOT_TOKEN=TOKEN,
            SLACK_SIGNING_SECRET=SECRET,
            FLOWSTATE_SLACK_API_URL=fixtures.info["api_url"],
            FLOWSTATE_ADMINS=USER,
            FLOWSTATE_HOME=str(workdir / "home"),
            FLOWSTATE_STACK_FILE=str(stack_file),
        )
        bot = Bot(workdir, env)
        stack.callback(bot.stop)

        time.sleep(settle)
        idle = sample(bot.proc.pid)
        idle_total = sum(idle.values())
        names = {pid: label(pid) for pid in idle}

        # peak: sample every 50 ms while the burst is acked and run, until every reply has arrived
        samples: list[dict[int, int]] = []
        done = threading.Event()

        def sampler() -> None:
            while not done.is_set():
                samples.append(sample(bot.proc.pid))
                done.wait(SAMPLE_SECONDS)

        watcher = threading.Thread(target=sampler, daemon=True)
        started = time.monotonic()
        watcher.start()
        try:
            elapsed, failed = fire(bot.port, requests, f"{fixtures.info['response_url']}burst-")
            fixtures.wait_for_replies("burst-", requests - len(failed), bot)
        finally:
            done.set()
            watcher.join()
        burst_seconds = time.monotonic() - started
        peak = max(samples, key=lambda sizes: sum(sizes.values()))
        peak_total = sum(peak.values())
        after = sample(bot.proc.pid)
        names.update({pid: label(pid) for pid in set(peak) - set(names)})

    print(f"Bot memory (PSS, bot process and descendants), `flowstate-bot run --http`, stack file "
          f"{'loopback probes' if loopback else LIVE_STACK}; {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'process':<36}{'pid':>8}{'idle MB':>10}{'peak MB':>10}")
    for pid in sorted(set(idle) | set(peak)):
        idle_mb = f"{mb(idle[pid]):.1f}" if pid in idle else "-"
        peak_mb = f"{mb(peak[pid]):.1f}" if pid in peak else "-"
        print(f"{names.get(pid, '?'):<36}{pid:>8}{idle_mb:>10}{peak_mb:>10}")
    print(f"{'total':<44}{mb(idle_total):>10.1f}{mb(peak_total):>10.1f}")
    print(f"burst: {requests} concurrent signed /health, {len(samples)} samples over {burst_seconds:.1f} s "
          f"until every reply arrived; {len(failed)} failed acks; after the burst {mb(sum(after.values())):.1f} MB")
    verdict = "MET" if mb(idle_total) < TARGET_MB else "MISSED"
    print(f"target 'idle < {TARGET_MB:.0f} MB': {verdict} ({mb(idle_total):.1f} MB idle, {mb(peak_total):.1f} MB peak)")
    for error in sorted(set(failed))[:5]:
        print(f"failure: {error} (x{failed.count(error)})", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=50, help="concurrent /health commands in the burst (default 50)")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after startup before the idle sample (default 3)")
    parser.add_argument("--loopback", action="store_true", help="probe three loopback services instead of the live test stack")
    args = parser.parse_args()
    if args.requests < 1 or args.settle < 0:
        parser.error("--requests must be at least 1 and --settle not negative")
    try:
        return measure(args.requests, args.settle, args.loopback)
    except Broken as error:
        print(f"benchmark broken: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
