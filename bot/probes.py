"""Reachability probes of the operated stack, run in parallel, each bounded by its own timeout."""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import psycopg
import redis

from bot.config import HttpProbe, PostgresProbe, Probe, RedisProbe, TcpProbe
from bot.docker_stack import StackError
from bot.stack_db import StackDatabase


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    latency_ms: float
    error: str | None = None
    detail: str | None = None
    metrics: dict = field(default_factory=dict)


class ProbeFailure(Exception):
    """A probe's failure, already in words an operator reads at a glance."""


def describe_error(error: BaseException, timeout: float) -> str:
    """An exception from a network client, in the words an operator wants at 3 a.m."""
    if isinstance(error, (ProbeFailure, StackError, ValueError)):
        return str(error)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return "host name not found"
    if isinstance(error, urllib.error.URLError):
        return describe_error(error.reason, timeout) if isinstance(error.reason, BaseException) else str(error.reason)
    if isinstance(error, redis.TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, redis.ConnectionError):
        return "connection refused" if "refused" in str(error).lower() else f"cannot connect: {error}"
    if isinstance(error, psycopg.OperationalError):
        # libpq puts the cause first and may add a hint line ("Is the server running on that host...?").
        message = str(error).strip()
        if "timeout" in message.lower():
            return f"no answer within {timeout:g} s"
        if "refused" in message.lower():
            return "connection refused"
        return message.splitlines()[-1] if message else type(error).__name__
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP answer: {type(error).__name__}"
    return f"{type(error).__name__}: {error}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


Outcome = tuple[str, dict]


def _http(probe: HttpProbe) -> Outcome:
    try:
        with _opener.open(probe.url, timeout=probe.timeout) as response:
            status = response.status
            response.read(65536)
    except urllib.error.HTTPError as error:
        status = error.code
    if status != probe.expect_status:
        raise ProbeFailure(f"answered HTTP {status}, expected {probe.expect_status}")
    return f"HTTP {status}", {}


def _tcp(probe: TcpProbe) -> Outcome:
    with socket.create_connection((probe.host, probe.port), timeout=probe.timeout):
        return "port open", {}


def _postgres(probe: PostgresProbe) -> Outcome:
    with StackDatabase(probe.dsn, probe.timeout).connect() as conn:
        conn.execute("SELECT 1").fetchone()
        used, limit = StackDatabase.connection_usage(conn)
        detail = f"SELECT 1 ok, {used}/{limit} connections (server {conn.info.server_version // 10000})"
        return detail, {"connections": used, "max_connections": limit}


def _redis(probe: RedisProbe) -> Outcome:
    client = redis.Redis.from_url(probe.url, socket_timeout=probe.timeout, socket_connect_timeout=probe.timeout)
    try:
        if not client.ping():
            raise ProbeFailure("PING did not answer PONG")
        memory = client.info("memory")
        used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        detail = f"PONG, {memory.get('used_memory_human', used)} used"
        if limit:
            detail += f" of {memory.get('maxmemory_human', limit)}"
        return detail, {"memory_bytes": used, "maxmemory_bytes": limit}
    finally:
        client.close()


_RUNNERS = {"http": _http, "tcp": _tcp, "postgres": _postgres, "redis": _redis}


def run_probe(probe: Probe) -> ProbeResult:
    started = time.monotonic()
    try:
        detail, metrics = _RUNNERS[probe.kind](probe)
    except Exception as error:  # every failure becomes a line in the report, never an exception
        return ProbeResult(probe.name, False, (time.monotonic() - started) * 1000, describe_error(error, probe.timeout))
    return ProbeResult(probe.name, True, (time.monotonic() - started) * 1000, detail=detail, metrics=metrics)


# One pool for every check, kept warm: starting threads per /health cost more than the checks themselves.
# A hung check holds a worker only until its own socket timeout.
CHECK_POOL = ThreadPoolExecutor(max_workers=32, thread_name_prefix="check")


def run_probes(probes: list[Probe], grace: float = 0.25) -> list[ProbeResult]:
    """All probes at once; one that outlives its own timeout is reported as timed out and left behind."""
    started = time.monotonic()
    futures = [CHECK_POOL.submit(run_probe, probe) for probe in probes]
    results = []
    for probe, future in zip(probes, futures):
        try:
            results.append(future.result(timeout=max(0.0, started + probe.timeout + grace - time.monotonic())))
        except FutureTimeout:
            elapsed = (time.monotonic() - started) * 1000
            results.append(ProbeResult(probe.name, False, elapsed, f"no answer within {probe.timeout:g} s"))
    return results
