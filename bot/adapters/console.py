"""The terminal adapter: the same dispatcher as Slack, commands typed as in Slack."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import Iterator, TextIO

from bot.frame.blocks import to_text
from bot.frame.registry import Invocation, Reply
from bot.runtime import Runtime

PROMPT = "flowstate> "


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


def run_approved(runtime: Runtime, progress) -> Iterator[Reply]:
    while (job := runtime.jobs.claim_next(runtime.holder, source="console")) is not None:
        yield runtime.dispatcher.clean(runtime.approvals.run_job(job, runtime.holder, progress))


def run_console(runtime: Runtime, user_id: str, channel_id: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> int:
    interactive = stdin.isatty()
    operator = os_user()
    if interactive:
        role = runtime.authz.role_of(user_id)
        print(f"Flowstate ops console as {user_id} ({role.name if role else 'no role'}). /help lists commands; Ctrl-D quits.", file=stdout)
        lines: Iterator[str] = _interactive_lines(runtime.settings.home / "console_history")
    else:
        lines = iter(stdin)
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
        progress = lambda text: print(to_text(Reply(f"… {text}")), file=stdout, flush=True)  # noqa: E731
        reply = runtime.dispatcher.dispatch(invocation, progress=progress)
        print(to_text(reply), file=stdout, flush=True)
        # An approval typed here lets its request run here, at once, with its progress on this terminal.
        if invocation.command == "approvals" and not reply.failed:
            try:
                for approved in run_approved(runtime, progress):
                    print(to_text(approved), file=stdout, flush=True)
            except Exception:
                print(to_text(runtime.dispatcher.failed(invocation)), file=stdout, flush=True)
        if not interactive:
            print(file=stdout)
    return 0
