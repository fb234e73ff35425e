"""Probe failures as /health and `check` show them: one line naming the target and the reason, no secrets."""

import pytest
from pydantic import TypeAdapter

from bot.frame.config import Probe, StackConfig
from bot.stack.probes import run_probe
from tests.conftest import run
from tests.loopback import closed_port


def _probe(kind: str, port: int) -> dict:
    address = {
        "http": {"url": f"http://127.0.0.1:{port}/health"},
        "tcp": {"host": "127.0.0.1", "port": port},
        "postgres": {"dsn": f"postgresql://flowstate:hunter2@127.0.0.1:{port}/flowstate_ai"},
        "redis": {"url": f"redis://:hunter2@127.0.0.1:{port}/0"},
    }[kind]
    return {"name": "target", "kind": kind, **address}


@pytest.mark.parametrize("kind", ["http", "tcp", "postgres", "redis"])
def test_an_unreachable_target_is_named_with_the_reason_on_one_line(kind):
    port = closed_port()
    result = run_probe(TypeAdapter(Probe).validate_python(_probe(kind, port)))
    assert not result.ok
    assert result.error == f"connection refused at 127.0.0.1:{port}"


MALFORMED = [
    ("postgres", {"dsn": "postgresql://flowstate:hunter 2@127.0.0.1:5432/app"}, "the DSN of probe db is malformed; write a space in it as %20"),
    ("postgres", {"dsn": "postgresql://flowstate:hunter%2@127.0.0.1:5432/app"}, "the DSN of probe db is malformed; write a % in it as %25"),
    ("postgres", {"dsn": "host=127.0.0.1 password=hunter 2"}, "the DSN of probe db is malformed"),
    ("http", {"url": "http://ops:hunter 2@127.0.0.1:8080/health"}, "the URL of probe db is malformed"),
    ("http", {"url": "http://ops:hunter2@127.0.0.1:port/health"}, "the URL of probe db is malformed"),
    ("redis", {"url": "redis://:hunter 2@127.0.0.1:6379/0"}, "the URL of probe db is malformed"),
    ("redis", {"url": "//:hunter2@127.0.0.1:6379/0"}, "the URL of probe db is malformed"),
]


@pytest.mark.parametrize(("kind", "address", "error"), MALFORMED, ids=[str(m[1])[:60] for m in MALFORMED])
def test_a_malformed_address_is_named_never_quoted_in_the_channel(make_runtime, kind, address, error):
    stack = StackConfig(probes=[{"name": "db", "kind": kind, **address}])
    reply = run(make_runtime(stack, admins=["UA"]), "UA", "/health")
    assert reply.in_channel
    assert f"🔴 *db*: {error} (" in reply.text
    assert "hunter" not in reply.text
