"""Replies to Slack over HTTPS: the certificate is checked, and every call shares one TLS context instead of
building it (and loading the system's certificate authorities) again for each reply."""

import json
import ssl

import pytest

from bot.adapters.slack.client import deliver, patient_client, tls_context, web_client
from bot.frame.config import Settings
from bot.frame.registry import Invocation, Reply
from tests.loopback import HookServer, TlsHookServer

ASKED = Invocation("U0ONCALL", "whoami", "", "C0OPS", "slack")


@pytest.fixture
def hook(tmp_path):
    with TlsHookServer(tmp_path) as server:
        yield server


@pytest.fixture
def trusting(hook, monkeypatch):
    """The bot's TLS context as built where SSL_CERT_FILE names the hook's certificate (as an operator would for a
    proxy's CA); the context built before and after the test is the machine's own."""
    monkeypatch.setenv("SSL_CERT_FILE", str(hook.certificate))
    tls_context.cache_clear()
    yield
    tls_context.cache_clear()


@pytest.fixture
def client(slack_double):
    return web_client(Settings(_env_file=None, slack_api_url=slack_double.api_url, slack_bot_token="xoxb-test"))


def test_a_reply_to_an_https_response_url_arrives_when_its_certificate_is_trusted(hook, trusting, client, slack_double):
    assert deliver(client, ASKED, hook.url("T1/B1/ok"), Reply("You are the admin.")) is None
    assert [json.loads(body)["text"] for body in hook.received] == ["You are the admin."]
    assert slack_double.calls_to("chat.postEphemeral") == [], "no fallback was needed"


def test_a_response_url_whose_certificate_is_not_trusted_gets_nothing_and_the_reply_goes_by_the_web_api(hook, client, slack_double):
    tls_context.cache_clear()  # the machine's authorities: the hook's self-signed certificate is not among them
    try:
        assert deliver(client, ASKED, hook.url("T1/B1/untrusted"), Reply("You are the admin.")) is None
    finally:
        tls_context.cache_clear()
    assert hook.received == [], "verification is on: nothing is sent to a server whose certificate is not trusted"
    assert [call.params["text"] for call in slack_double.calls_to("chat.postEphemeral")] == ["You are the admin."]


def test_every_slack_client_of_the_bot_shares_the_one_tls_context(hook, trusting, client, monkeypatch):
    # Without it slack_sdk builds a new default context per request: 27 ms of CPU per reply (bench/reply_tls.py).
    api = web_client(Settings(_env_file=None, slack_api_url="https://slack.example/api/", slack_bot_token="xoxb-test"))
    assert api.ssl is tls_context() and patient_client(api).ssl is tls_context()
    built = []
    for name in ("create_default_context", "_create_default_https_context"):  # urllib's default is the second
        real = getattr(ssl, name)
        monkeypatch.setattr(ssl, name, lambda *args, _real=real, **kwargs: built.append(1) or _real(*args, **kwargs))
    tls_context.cache_clear()
    for n in range(3):
        assert deliver(client, ASKED, hook.url(f"T1/B1/{n}"), Reply(f"reply {n}")) is None
    assert len(hook.received) == 3 and len(built) == 1, f"{len(built)} TLS contexts built for 3 replies"


def test_behind_a_proxy_the_environment_names_a_reply_goes_through_it(client, monkeypatch):
    proxy = HookServer().start()
    try:
        for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        assert deliver(client, ASKED, "http://127.0.0.2:9/actions/T1/B1/x", Reply("through the proxy")) is None
    finally:
        proxy.stop()
    assert proxy.requests == ["POST http://127.0.0.2:9/actions/T1/B1/x"]
    assert [json.loads(body)["text"] for body in proxy.received] == ["through the proxy"]
