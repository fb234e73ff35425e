"""The terminal adapter: the same pipeline as Slack, commands typed as in Slack, replies printed."""

from __future__ import annotations

import getpass
import logging
import os
import secrets
import sys
import threading
from pathlib import Path
from typing import Iterator, TextIO

from bot.frame.blocks import to_text
from bot.frame.publish import Returned
from bot.frame.registry import Invocation, Reply
from bot.runtime import Runtime

log = logging.getLogger(__name__)

PROMPT = "flowstate> "
CONSOLE_LOG = "console.log"  # the bot's log while a console runs, in its home


def _interactive_lines(history: Path) -> Iterator[str]:
    import readline

    try:
        history.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # reported when it is written
    try:
        readline.read_history_file(history)
    except OSError:
        pass
    try:
        while True:
            try:
                yield input(PROMPT)
            except EOFError:
                print()
                return
            except KeyboardInterrupt:
                print()
                continue
    finally:
        save_history(history)


def save_history(history: Path) -> None:
    import readline

    readline.set_history_length(1000)
    try:
        readline.write_history_file(history)
    except OSError as error:  # the history is a convenience: losing it must not end in a traceback
        print(f"(the command history could not be saved to {history}: {error.strerror})", file=sys.stderr)


def os_user() -> str:
    """Who really typed it: the audit shows this next to the user a console acted as (--as)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid {os.getuid()}"


def run_queued(runtime: Runtime, publisher) -> Iterator[Reply]:
    """What is queued for this console (a request approved here) runs here, through the pipeline, as a runner runs it."""
    while (job := runtime.jobs.claim_next(runtime.holder, source="console")) is not None:
        yield runtime.pipeline.run(job, publisher, holder=runtime.holder)


def run_approved(runtime: Runtime, progress) -> Iterator[Reply]:
    """run_queued for a caller that takes the replies itself (tests)."""
    return run_queued(runtime, Returned(progress))


class Screen:
    """What the console prints of a command: every progress line once, and then the reply without the lines its
    progress already showed (a restore's steps, a deploy's result lines). A stream's tail that comes again (the deploy
    script's output, in place in Slack) prints only its new lines."""

    def __init__(self, stdout: TextIO):
        self._stdout = stdout
        self._shown: set[str] = set()
        self._entry: list[str] = []  # the last progress entry, as printed (a stream's tail grows here)

    def progress(self, text: str) -> None:
        first, *body = _terminal_lines(to_text(Reply(text))) or [""]
        body = [line for line in body if line.strip()]
        if body and self._entry and first == self._entry[0]:
            printed = _after_overlap(self._entry[1:], body)
        else:
            printed = [f"… {first}", *body]
        self._entry = [first, *body]
        self._shown.update(line.strip() for line in self._entry)
        if printed:
            print("\n".join(printed), file=self._stdout, flush=True)

    def publish(self, reply: Reply) -> None:
        """The console's publisher: the pipeline hands it each reply."""
        self.reply(reply)

    def reply(self, reply: Reply) -> None:
        lines = [line for line in _terminal_lines(to_text(reply)) if not line.strip() or line.strip() not in self._shown]
        print("\n".join(lines), file=self._stdout, flush=True)
        self._shown.clear()
        self._entry = []


def _terminal_lines(text: str) -> list[str]:
    """A reply's lines for a terminal: a code block (a statement, a script's output) indented, without its fences."""
    lines, in_block = [], False
    for line in text.splitlines():
        opens = not in_block and "```" in line
        if opens:  # a block may open after some words ("• 3 calls: ```SELECT …"): they stay a line of their own
            before, _, line = line.partition("```")
            if before.strip():
                lines.append(before.rstrip())
            in_block = True
        closes = in_block and line.endswith("```")
        if closes:
            line = line[:-3]
        if in_block and (line or not (opens or closes)):
            lines.append(f"    {line}")
        elif not in_block:
            lines.append(line)
        in_block = in_block and not closes
    return lines


def _after_overlap(before: list[str], now: list[str]) -> list[str]:
    """The lines of a tail that the one printed before did not have: `now` after its longest start that ended `before`."""
    for size in range(min(len(before), len(now)), 0, -1):
        if before[-size:] == now[:size]:
            return now[size:]
    return now


def run_console(runtime: Runtime, user_id: str, channel_id: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    interactive = stdin.isatty()
    operator = os_user()
    if interactive:
        role = runtime.authz.role_of(user_id)
        print(f"Flowstate ops console as {user_id} ({role.name if role else 'no role'}). /help lists commands; Ctrl-D quits. "
              f"The bot's log: {runtime.settings.home / CONSOLE_LOG}", file=stdout)
        lines: Iterator[str] = _interactive_lines(runtime.settings.home / "console_history")
    else:
        lines = iter(stdin)
    publisher = Screen(stdout)
    queued = threading.Event()
    runtime.wake = queued.set  # an approval rings as it rings the runners: the console is this bot's runner
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line in ("exit", "quit"):
            break
        if not line.startswith("/") or len(line) == 1:
            print("Commands start with a slash, as in Slack; try /help.", file=stdout)
            continue
        name, _, text = line[1:].partition(" ")
        invocation = Invocation(user_id, name, text.strip(), channel_id, "console", origin=operator)
        _sweep(runtime)
        runtime.pipeline.run(invocation, publisher)
        _sweep(runtime)
        if queued.is_set():  # a request this line approved (or that waited for the lock) runs here, its progress on this terminal
            queued.clear()
            _run_here(runtime, publisher, stdout)
        if not interactive:
            print(file=stdout)
    return 0


def _sweep(runtime: Runtime) -> None:
    """What the runners' sweep does on a clock (bot/jobs/runner.py), done here before and after each command: the
    console has no runner. A role granted for a while ends on time, and a request waiting for the stack's lock whose
    holder (another console) died holding it gets the lock (expired, it goes to the one approved first) and runs here;
    the key metrics of a minute not sampled yet are (bot/stack/trends.py); a /restore --to request's new database is
    filled in the background, and what an ended one left is removed."""
    for part, what in (
        (lambda: runtime.access.sweep(runtime.duties.clock.now()), "the sweep of roles granted for a while"),
        (runtime.locks.hand_over_free, "handing a free lock to a waiting request"),
        (lambda: runtime.sampler.sweep(runtime.duties.clock.now()), "the sampling of the key metrics"),  # a minute at most once
        (lambda: runtime.scratches and runtime.scratches.sweep(), "the sweep of /restore --to's scratch instances and copies"),
        # a /restore --to request this line made: its new database is filled on a thread while it waits for approval
        (lambda: runtime.scratches and runtime.scratches.prefill_in_background(runtime.at_fault), "the background copies of /restore --to"),
    ):
        try:
            part()
        except Exception:
            log.exception("%s failed; the next command tries again", what)


def _run_here(runtime: Runtime, publisher: "Screen", stdout: TextIO) -> None:
    try:
        for _ in run_queued(runtime, publisher):
            pass
    except Exception:
        error_id = secrets.token_hex(4)
        log.exception("running the console's queued requests failed [error id %s]", error_id)
        print(f"The approved request could not be run (error id {error_id}); the details are in the bot's log.", file=stdout, flush=True)
