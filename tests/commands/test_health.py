"""/health against real services on loopback: failures first, with the error in words, then the verdict."""

import re

from bot.frame.config import StackConfig
from bot.stack.probes import run_probes
from tests.conftest import run
from tests.loopback import SilentServer, StatusServer, closed_port


def stack(*probes) -> StackConfig:
    return StackConfig(probes=list(probes))


def test_every_kind_of_probe_reports_healthy_services(postgres_admin, redis_url):
    with StatusServer(200) as web:
        results = run_probes(
            stack(
                {"name": "web", "kind": "http", "url": web.url + "/health"},
                {"name": "db", "kind": "postgres", "dsn": postgres_admin},
                {"name": "cache", "kind": "redis", "url": redis_url},
                {"name": "port", "kind": "tcp", "host": "127.0.0.1", "port": int(web.url.rsplit(":", 1)[1])},
            ).probes
        )
    assert [(r.name, r.ok) for r in results] == [("web", True), ("db", True), ("cache", True), ("port", True)]
    assert re.fullmatch(r"SELECT 1 ok, \d+ of \d+ connections in use \(max_connections\), PostgreSQL 15", results[1].detail)
    assert results[1].metrics["max_connections"] >= results[1].metrics["connections"] >= 1
    assert re.fullmatch(r"PONG, [\d.]+[KMG]? used", results[2].detail)


def test_failures_say_what_is_wrong_in_words(postgres_admin):
    dead = closed_port()
    with StatusServer(500) as broken, SilentServer() as hung:
        hung_port = hung.port
        results = {
            r.name: r.error
            for r in run_probes(
                stack(
                    {"name": "backend", "kind": "http", "url": broken.url + "/health"},
                    {"name": "hung", "kind": "http", "url": f"http://127.0.0.1:{hung.port}/health", "timeout": 0.5},
                    {"name": "gone", "kind": "tcp", "host": "127.0.0.1", "port": dead},
                    {"name": "cache", "kind": "redis", "url": f"redis://127.0.0.1:{dead}/0"},
                    {"name": "db", "kind": "postgres", "dsn": postgres_admin.rsplit("/", 1)[0] + "/no_such_db"},
                    {"name": "db gone", "kind": "postgres", "dsn": f"postgresql://flowstate@127.0.0.1:{dead}/flowstate_ai"},
                ).probes
            )
        }
    assert results["backend"] == "answered HTTP 500, expected 200"
    assert results["hung"] == f"no answer within 0.5 s at 127.0.0.1:{hung_port}"
    assert results["gone"] == f"connection refused at 127.0.0.1:{dead}"
    assert results["cache"] == f"connection refused at 127.0.0.1:{dead}"
    assert results["db gone"] == f"connection refused at 127.0.0.1:{dead}"
    assert re.fullmatch(r'database "no_such_db" does not exist at [\w.]+:\d+', results["db"]), results["db"]


def test_a_hung_service_is_reported_at_its_own_timeout_beside_a_healthy_one(redis_url):
    with SilentServer() as hung:
        results = run_probes(
            stack(
                {"name": "hung-db", "kind": "postgres", "dsn": f"postgresql://x@127.0.0.1:{hung.port}/x", "timeout": 0.5},
                {"name": "cache", "kind": "redis", "url": redis_url},
            ).probes
        )
    assert [(r.name, r.ok) for r in results] == [("hung-db", False), ("cache", True)]
    assert results[0].error == "no answer within 0.5 s"


def test_the_health_message_lists_failures_first_then_the_healthy_then_the_verdict(make_runtime, redis_url):
    with StatusServer(200) as frontend, StatusServer(503) as backend:
        runtime = make_runtime(
            stack(
                {"name": "frontend", "kind": "http", "url": frontend.url},
                {"name": "backend", "kind": "http", "url": backend.url},
                {"name": "redis", "kind": "redis", "url": redis_url},
            ),
            admins=["UA"],
        )
        reply = run(runtime, "UA", "/health")
    report, card = reply.text.split("\n\n", 1)
    assert card.startswith("What changed in "), "a failure ends with the change card (tests/changes)"
    lines = report.splitlines()
    assert lines[0].startswith("🔴 *backend*: answered HTTP 503, expected 200")
    assert lines[1].startswith("🟢 Checks: frontend ") and " · redis " in lines[1]
    assert lines[-1] == "🔴 1 of 3 checks failing"
    assert len(lines) == 3
    assert reply.in_channel
    assert reply.blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "Health"}}


def test_health_and_stats_with_no_stack_file_say_what_to_do_in_one_sentence(make_runtime):
    runtime = make_runtime(admins=["UA"])
    hint = "write one (tests/stack/flowstate.toml is a complete example) or run `make demo` to try the bot on a live test stack."
    assert run(runtime, "UA", "/health").text == (
        f"No services to check: the stack file (flowstate.toml) names no Compose project and no probes; {hint}"
    )
    assert run(runtime, "UA", "/stats").text == (
        f"Nothing to measure: the stack file (flowstate.toml) names no Compose project and has no [database] or [queue] section; {hint}"
    )


def test_stats_vouches_only_for_what_it_measured(make_runtime):
    unreachable = StackConfig(database={"dsn": f"postgresql://flowstate@127.0.0.1:{closed_port()}/app"})
    reply = run(make_runtime(unreachable, admins=["UA"]), "UA", "/stats")
    assert "No threshold crossed." not in reply.text
    assert reply.text.splitlines()[-1] == "⚪ Nothing was measured, so nothing can be said about thresholds."
