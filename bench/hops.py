"""The modules one approved `/restart SERVICE` passes through, and the calls from one project module into another.

Run from the repository root (needs the live test stack, already up; takes its machine-wide lock):
    .venv/bin/python bench/hops.py [--service frontend] [--json]

The real path, in this one process so that one profiler sees it all: the Slack Web API double, the bot in
HTTP mode (waitress, the guard, Bolt, the listeners, the ack writer) and a runner (bot/jobs/runner.py's
Runner on its thread pool, built as a runner process builds it; only the process boundary is left out).
Three phases: an operator's signed `/restart SERVICE` until the request's message and the reply are there;
an approver's signed click on Approve until its answer is there; the run until the message says it is done.

A call counts when `sys.setprofile` sees a function of the project (`bot/`, `commands/`) called directly from a
function of another project module, on the threads that serve the request: waitress's and Bolt's (the ack), the
runner's job threads and the pools they use (the health checks); the runner's loop (its sweep and idle claims),
the heartbeat thread and the bench's own thread are left out (the doubles are not project code). The health gate
polls, so the raw count grows with the time a restart takes; the distinct edges (caller function -> callee
function across modules) do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHANNEL = "C0OPS"
STACK = "bot.stack."
# Threads that do not serve the request: the bench's own, the runner's loop (sweeps, idle claims), heartbeats.
BACKGROUND = ("MainThread", "runner-serve", "runner-heartbeat", "runner-watch", "doorbell", "parent-watch", "job-notifications")


class Tracer:
    """Counts cross-module calls of the project on the threads that serve the request, by phase."""

    def __init__(self, project: Path):
        self.prefixes = (str(project / "bot") + "/", str(project / "commands") + "/")
        self.project = project
        self.phase = "setup"
        self.modules: dict[str, set[str]] = {}
        self.calls: dict[str, Counter] = {}
        self.edges: dict[str, set[tuple[str, str]]] = {}
        self._names: dict[str, str | None] = {}

    def module(self, filename: str) -> str | None:
        name = self._names.get(filename)
        if name is None and filename not in self._names:
            name = None
            if filename.startswith(self.prefixes):
                name = str(Path(filename).relative_to(self.project).with_suffix("")).replace("/", ".").removesuffix(".__init__")
            self._names[filename] = name
        return name

    def hook(self, frame, event, _arg):
        if event != "call" or self.phase == "setup":
            return
        if threading.current_thread().name.startswith(BACKGROUND):
            return
        callee = self.module(frame.f_code.co_filename)
        if callee is None:
            return
        self.modules.setdefault(self.phase, set()).add(callee)
        back = frame.f_back
        caller = self.module(back.f_code.co_filename) if back is not None else None
        if caller is None or caller == callee:
            return
        self.calls.setdefault(self.phase, Counter())[(caller, callee)] += 1
        self.edges.setdefault(self.phase, set()).add((f"{caller}.{back.f_code.co_name}", f"{callee}.{frame.f_code.co_name}"))

    def start(self) -> None:
        threading.setprofile(self.hook)
        sys.setprofile(self.hook)

    def stop(self) -> None:
        sys.setprofile(None)
        threading.setprofile(None)


def in_process_runners(tracer: Tracer):
    """A stand-in for RunnerProcesses: one Runner on threads of this process, built as runner_main builds it."""
    from bot.adapters.slack.client import SlackNotifier, group_members, web_client
    from bot.jobs.runner import Runner
    from bot.runtime import Runtime

    class InProcessRunners:
        def __init__(self, settings, stack, _runtime):
            client = web_client(settings)
            self.runtime = Runtime.build(
                settings, stack, group_members=group_members(client), migrate=False, notifier=SlackNotifier(client), slack=client
            )
            self.runner = Runner(self.runtime, client)
            self.runtime.wake = self.runner.wake.set
            self.runner.recover()
            self.thread = threading.Thread(target=self.runner.serve, name="runner-serve", daemon=True)
            self.thread.start()

        def notify(self) -> None:
            self.runner.wake.set()

        def shutdown(self) -> None:
            self.runner.stopping.set()
            self.runner.wake.set()
            self.thread.join(timeout=10)
            self.runner.pool.shutdown(wait=True)
            self.runtime.close()

    return InProcessRunners


def measure(service: str) -> Tracer:
    from bot.adapters.slack import listeners
    from bot.adapters.slack.client import group_members, web_client
    from bot.approvals.service import APPROVE
    from bot.frame.config import load_stack
    from bot.frame.roles import Role
    from bot.runtime import Runtime
    from tests.bot.test_slack_approvals import _wait_message
    from tests.conftest import SIGNING_SECRET, _hold_stack_for_this_session, _serve_until_closed, grant, make_settings
    from tests.slack_double import SlackDouble
    from tests.slack_signing import SlackSender
    from tests import stack_setting

    import bot

    tracer = Tracer(Path(bot.__file__).resolve().parent.parent)
    _hold_stack_for_this_session()
    stack = load_stack(stack_setting.STACK_FILE, required=True)  # the stack FLOWSTATE_TEST_STACK names, whose lock it holds
    listeners.RunnerProcesses = in_process_runners(tracer)
    with tempfile.TemporaryDirectory() as home, SlackDouble() as double:
        settings = make_settings(
            Path(home), slack_api_url=double.api_url, slack_bot_token="xoxb-bench-token", slack_signing_secret=SIGNING_SECRET,
            workers=4, admins=["U0ADMIN"],
        )
        client = web_client(settings)
        runtime = Runtime.build(settings, stack, group_members=group_members(client))
        grant(runtime, "U0OP", Role.operator)
        grant(runtime, "U0APP", Role.approver)
        tracer.start()
        adapter = listeners.SlackAdapter(runtime, client, http_mode=True)
        server = adapter.http_server("127.0.0.1", 0)
        serving = threading.Thread(target=_serve_until_closed, args=(server,), daemon=True)
        serving.start()
        sender = SlackSender(f"http://127.0.0.1:{server.effective_port}", SIGNING_SECRET)
        try:
            time.sleep(1.0)
            tracer.phase = "request"
            assert sender.slash("/restart", service, "U0OP", CHANNEL, response_url=double.response_url("ask")).status == 200
            (told,) = double.wait_for_response("ask", timeout=30)
            assert told["text"].startswith("Request #1:"), told["text"]
            double.wait_for("chat.postMessage", timeout=30, predicate=lambda c: str(c.params.get("text")).startswith("Request #1: "))
            ts = next(m for m in double.messages(CHANNEL) if m["text"].startswith("Request #1: "))["ts"]
            time.sleep(1.0)
            tracer.phase = "click"
            assert sender.click(APPROVE, "1", "U0APP", CHANNEL, ts, double.response_url("approver")).status == 200
            (answer,) = double.wait_for_response("approver", timeout=30)
            assert answer["text"] == "You approved request #1; it runs now.", answer["text"]
            tracer.phase = "run"
            _wait_message(double, ts, "✅ Done", timeout=180)
            time.sleep(1.0)
            tracer.phase = "setup"
        finally:
            tracer.stop()
            server.close()
            serving.join(timeout=5)
            adapter.shutdown()
            runtime.close()
    return tracer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--service", default="frontend", help="a service of the live test stack (default frontend)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    tracer = measure(args.service)
    phases = ["request", "click", "run"]
    modules = sorted(set().union(*(tracer.modules.get(p, set()) for p in phases)))
    total = {p: sum(tracer.calls.get(p, Counter()).values()) for p in phases}
    edges = {p: len(tracer.edges.get(p, set())) for p in phases}
    all_edges = set().union(*(tracer.edges.get(p, set()) for p in phases))
    pairs = Counter()
    for p in phases:
        pairs.update(tracer.calls.get(p, Counter()))
    if args.json:
        print(json.dumps({"modules": modules, "calls": total, "edges": edges, "distinct_edges": len(all_edges),
                          "pairs": {f"{a} -> {b}": n for (a, b), n in pairs.most_common()}}, indent=2))
        return 0
    print(f"one approved /restart {args.service}: {len(modules)} project modules, "
          f"{sum(total.values())} calls between modules, {len(all_edges)} distinct cross-module edges")
    # The health gate's polling (how long the restart takes) is all inside the operated stack's modules.
    polling = sum(n for (a, b), n in pairs.items() if a.startswith(STACK) or b.startswith(STACK))
    print(f"  without the calls that touch bot.stack (the gate's polling): {sum(total.values()) - polling} calls, "
          f"{len([m for m in modules if not m.startswith(STACK)])} modules")
    for p in phases:
        print(f"  {p:8} {len(tracer.modules.get(p, set())):3} modules {total[p]:6} calls {edges[p]:4} distinct edges")
    print("modules:", ", ".join(modules))
    print("module pairs (calls):")
    for (a, b), n in pairs.most_common():
        print(f"  {n:6}  {a} -> {b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
