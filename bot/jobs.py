"""Command work runs in worker processes, so the process that acknowledges Slack never waits for the GIL.

A slash command's work (authorization, the handler, the reply) can take seconds of Python time; on
threads it competes with the threads that must answer Slack within 3 s. Each worker process builds
its own runtime from the same settings and stack file and delivers its replies itself.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable

from bot.config import ConfigError, Settings, StackConfig
from bot.registry import Invocation, Reply

log = logging.getLogger(__name__)

_worker: tuple | None = None  # (runtime, client) inside a worker process
WORKER_NICENESS = 19
STARTUP_SECONDS = 120


def _exit_with_parent() -> None:
    """A worker whose bot process was killed (SIGKILL, OOM) exits too, instead of lingering as an orphan."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(0)


def _start_worker(settings: Settings, stack: StackConfig, all_started: threading.Barrier) -> None:
    global _worker
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()
    # Acks are the latency that Slack enforces; command work can wait a few milliseconds for a core.
    os.nice(WORKER_NICENESS)
    try:
        from bot.redact import configure_logging
        from bot.runtime import Runtime
        from bot.slack_client import group_members, web_client

        configure_logging(settings.log_level)
        client = web_client(settings)
        # The parent migrated the database before starting any worker.
        _worker = (Runtime.build(settings, stack, group_members=group_members(client), migrate=False), client)
    except BaseException:
        all_started.abort()  # the parent stops waiting at once and reports the failure
        raise
    all_started.wait(timeout=STARTUP_SECONDS)


def _nothing() -> None:
    pass


def _run(invocation: Invocation, response_url: str | None) -> None:
    from bot.slack_client import deliver

    runtime, client = _worker
    reply = runtime.dispatcher.dispatch(
        invocation, progress=lambda text: deliver(client, invocation, response_url, Reply(text))
    )
    deliver(client, invocation, response_url, reply)


LostJob = Callable[[Invocation, str | None, BaseException], None]


class JobRunner:
    def __init__(self, settings: Settings, stack: StackConfig, on_lost: LostJob):
        self._settings, self._stack, self._on_lost = settings, stack, on_lost
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the parent runs server threads, and a forked copy of a held lock deadlocks.
        context = multiprocessing.get_context("spawn")
        workers = self._settings.workers
        all_started = context.Barrier(workers + 1)
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(self._settings, self._stack, all_started)
        )
        # Start every worker now, not on the first commands (a worker takes about a second to start): no
        # worker is idle before all have started, so each of these tasks spawns one more.
        for _ in range(workers):
            pool.submit(_nothing)
        try:
            all_started.wait(timeout=STARTUP_SECONDS)
        except threading.BrokenBarrierError:
            pool.shutdown(wait=False, cancel_futures=True)
            raise ConfigError("FLOWSTATE_WORKERS: the worker processes could not start; their error is in the log above") from None
        return pool

    def submit(self, invocation: Invocation, response_url: str | None) -> None:
        with self._lock:
            try:
                future = self._pool.submit(_run, invocation, response_url)
            except BrokenProcessPool:
                log.error("a worker process died; starting a new pool")
                self._pool = self._new_pool()
                future = self._pool.submit(_run, invocation, response_url)
        future.add_done_callback(lambda done: self._finished(done, invocation, response_url))

    def _finished(self, future: Future, invocation: Invocation, response_url: str | None) -> None:
        error = future.exception()
        if error is not None:
            log.error("/%s from %s was lost: %r", invocation.command, invocation.user_id, error)
            self._on_lost(invocation, response_url, error)

    def shutdown(self) -> None:
        with self._lock:
            self._pool.shutdown(wait=True)
