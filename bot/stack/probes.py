"""Reachability probes of the operated stack, run in parallel, each bounded by its own timeout."""

from __future__ import annotations

import http.client
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import psycopg
import redis

from bot.frame.config import HttpProbe, PostgresProbe, Probe, RedisProbe, TcpProbe
from bot.stack.compose import StackError
from bot.frame.redact import redact
from bot.stack.database import StackDatabase


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


# psycopg's first line names the server and the reason; the lines after it are libpq's hints.
_PG_FAILURE = re.compile(r"connection to server (?:at|on) .*? failed: (.*)")
# "Error 111 connecting to 127.0.0.1:1. Connection refused."
_REDIS_FAILURE = re.compile(r"connecting to \S+?\. (.*)")


def _reason(text: str, timeout: float) -> str:
    lowered = text.lower()
    if "timeout" in lowered or "timed out" in lowered:
        return f"no answer within {timeout:g} s"
    if "refused" in lowered:
        return "connection refused"
    if "name or service not known" in lowered:
        return "host name not found"
    return text


def describe_error(error: BaseException, timeout: float) -> str:
    """An exception from a network client, in the words an operator wants at 3 a.m.: one line, the reason."""
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
        match = _REDIS_FAILURE.search(str(error))
        return _reason(match.group(1).rstrip(".") if match else str(error), timeout)
    if isinstance(error, psycopg.OperationalError):
        first = str(error).strip().partition("\n")[0] or type(error).__name__
        match = _PG_FAILURE.search(first)
        return _reason(match.group(1).removeprefix("FATAL:").strip() if match else first, timeout)
    if isinstance(error, http.client.HTTPException):
        return f"bad HTTP answer: {type(error).__name__}"
    first_line = str(error).strip().partition("\n")[0]
    return f"{type(error).__name__}: {first_line}"


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
    with StackDatabase(probe.dsn, probe.timeout, f"probe {probe.name}").connect() as conn:
        conn.execute("SELECT 1").fetchone()
        used, limit = StackDatabase.connection_usage(conn)
        detail = f"SELECT 1 ok, {used} of {limit} connections in use (max_connections), PostgreSQL {conn.info.server_version // 10000}"
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


def _url_address(probe: HttpProbe | RedisProbe, default_ports: dict[str, int]) -> str:
    # urllib's and redis-py's own messages about a bad URL quote it, password and all: name the mistake instead.
    malformed = ProbeFailure(f"the URL of probe {probe.name} is malformed")
    if any(char.isspace() or not char.isprintable() for char in probe.url):
        raise malformed
    try:
        parts = urllib.parse.urlsplit(probe.url)
        port = parts.port  # ValueError when it is not a number
    except ValueError:
        raise malformed from None
    if parts.scheme not in default_ports:
        raise malformed
    if parts.scheme == "unix":
        return parts.path
    if not parts.hostname:
        raise malformed
    port = port or default_ports[parts.scheme]
    return f"[{parts.hostname}]:{port}" if ":" in parts.hostname else f"{parts.hostname}:{port}"


def address(probe: Probe) -> str:
    """Where a probe connects, host:port (or a socket), never with its credentials."""
    if probe.kind == "tcp":
        return f"{probe.host}:{probe.port}"
    if probe.kind == "postgres":
        return StackDatabase(probe.dsn, probe.timeout, f"probe {probe.name}").address
    if probe.kind == "redis":
        return _url_address(probe, {"redis": 6379, "rediss": 6379, "unix": 0})
    return _url_address(probe, {"http": 80, "https": 443})


def run_probe(probe: Probe) -> ProbeResult:
    """One line either way; a failure to reach the target names the target and the reason."""
    started = time.monotonic()
    try:
        target = address(probe)
        detail, metrics = _RUNNERS[probe.kind](probe)
    except (ProbeFailure, StackError) as error:  # already says what is wrong, and whose
        return ProbeResult(probe.name, False, (time.monotonic() - started) * 1000, str(error))
    except Exception as error:  # every failure becomes a line in the report, never an exception
        text = f"{describe_error(error, probe.timeout)} at {target}"
        return ProbeResult(probe.name, False, (time.monotonic() - started) * 1000, redact(text))
    return ProbeResult(probe.name, True, (time.monotonic() - started) * 1000, detail=detail, metrics=metrics)


def run_probes(probes: list[Probe], pool: ThreadPoolExecutor | None = None, grace: float = 0.25) -> list[ProbeResult]:
    """All probes at once; one that outlives its own timeout is reported as timed out and left behind.

    `pool`: the stack's check pool (bot/stack/stack.py); without one (`flowstate-bot check`), threads of this call's own."""
    started = time.monotonic()
    own = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=max(1, len(probes)), thread_name_prefix="probe")
    futures = [pool.submit(run_probe, probe) for probe in probes]
    if own:
        pool.shutdown(wait=False)  # a hung probe's thread ends at its own socket timeout; nobody waits for it
    results = []
    for probe, future in zip(probes, futures):
        try:
            results.append(future.result(timeout=max(0.0, started + probe.timeout + grace - time.monotonic())))
        except FutureTimeout:
            elapsed = (time.monotonic() - started) * 1000
            results.append(ProbeResult(probe.name, False, elapsed, f"no answer within {probe.timeout:g} s"))
    return results
