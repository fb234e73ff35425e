"""Replies to Slack over HTTPS: the certificate is checked, and every call shares one TLS context instead of
building it (and loading the system's certificate authorities) again for each reply."""

import json
from types import SimpleNamespace

import pytest

from bot.adapters.slack import client as slack_client
from bot.adapters.slack.client import deliver, patient_client, tls_context, web_client
from bot.frame.config import Settings
from bot.frame.registry import Invocation, Reply
from tests.loopback import TlsHookServer

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


def test_every_slack_client_of_the_bot_shares_the_one_tls_context(monkeypatch):
    # Without it slack_sdk builds a new default context per request: 27 ms of CPU per reply (bench/reply_tls.py).
    client = web_client(Settings(_env_file=None, slack_api_url="https://slack.example/api/", slack_bot_token="xoxb-test"))
    assert client.ssl is tls_context() and patient_client(client).ssl is tls_context()
    used = []

    class Webhook:  # records the context a reply's client was given
        def __init__(self, url, **options):
            used.append(options.get("ssl"))

        def send(self, **_body):
            return SimpleNamespace(status_code=200, headers={})

    monkeypatch.setattr(slack_client, "WebhookClient", Webhook)
    slack_client._by_response_url("https://hooks.example/T1/B1/x", Reply("x"))()
    assert used == [tls_context()]
