"""The redactor: every secret shape an operator might paste is masked, and no input makes it slow."""

import pytest

import random

from bot.frame.redact import _PATTERNS, MASK, redact
from bot.store.engine import AuditEntry
from tests.conftest import run

# (what someone typed, the secret in it, what must survive)
SECRET_SHAPES = [
    ("token xoxb-1234-5678-AbCdEf", "xoxb-1234-5678-AbCdEf", "token"),
    ("xapp-1-A1-4f9a0c", "xapp-1-A1-4f9a0c", ""),
    ("refresh xoxe.xoxp-1-Mi0yLTE", "xoxp-1-Mi0yLTE", "refresh"),
    ("postgresql://flowstate:hunter2@db:5432/app", "hunter2", "postgresql://flowstate:***@db:5432/app"),
    ("redis://:hunter2@cache:6379/0", "hunter2", "redis://:***@cache:6379/0"),
    ("https://ops:p@ss:w0rd@example.com/x?to=a@b.c", "p@ss:w0rd", "https://ops:***@example.com/x?to=a@b.c"),
    ("PGPASSWORD=hunter2 psql -h db", "hunter2", "psql -h db"),
    ("db_password=hunter2", "hunter2", "db_password="),
    ("export SLACK_SIGNING_SECRET=8f14e45fceea167a5a36dedd4bea2543", "8f14e45fceea167a5a36dedd4bea2543", "SLACK_SIGNING_SECRET="),
    ("SLACK_BOT_TOKEN=xoxb-1-2-abc", "xoxb-1-2-abc", "SLACK_BOT_TOKEN="),
    ("MYSQL_PWD=hunter2", "hunter2", "MYSQL_PWD="),
    ("api_key: sk_live_51Habc", "sk_live_51Habc", "api_key:"),
    ("X-Api-Key: 0a1b2c3d", "0a1b2c3d", "X-Api-Key:"),
    ('{"password": "hunter2", "user": "ops"}', "hunter2", '"user": "ops"'),
    ("{'client_secret': 'hunter2'}", "hunter2", "client_secret"),
    ("host=db password='hunter 2' dbname=app", "hunter 2", "dbname=app"),
    ("password hunter2", "hunter2", "password"),
    ("login with --password hunter2 now", "hunter2", "now"),
    ("ALTER ROLE app PASSWORD 'correct horse'", "correct horse", "ALTER ROLE app PASSWORD"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "eyJhbGciOiJIUzI1NiJ9.e30.sig", "Authorization:"),
    ("curl -H 'Authorization: Basic b3BzOmh1bnRlcjI=' x", "b3BzOmh1bnRlcjI=", "curl -H"),
    ("bearer abc.def-ghi_jkl", "abc.def-ghi_jkl", "bearer"),
    # What web logs hold (issue 18.3): session cookies, JWTs, vendor keys, AWS key ids, *_KEY_BASE assignments.
    ("Cookie: connect.sid=s%3AQ2xpZW50.abc%2Bdef; theme=dark", "s%3AQ2xpZW50.abc%2Bdef", "Cookie:"),
    ("Set-Cookie: connect.sid=s%3Ah1dd3n.sig; Path=/; HttpOnly", "s%3Ah1dd3n.sig", "Set-Cookie:"),
    ("headers: { cookie: 'connect.sid=s%3Ah1dd3n.sig', host: 'x' }", "s%3Ah1dd3n.sig", "headers:"),
    ("GET /x?connect.sid=s%3Ah1dd3n.sig HTTP/1.1", "s%3Ah1dd3n.sig", "HTTP/1.1"),
    ("curl -b PHPSESSID=9f8e7d6c5b4a https://x", "9f8e7d6c5b4a", "curl -b"),
    ("jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk ok",
     "eyJzdWIiOiIxIn0", "ok"),
    ("charge failed with key sk_live_51HxT4bLzPqK2v9Xa", "sk_live_51HxT4bLzPqK2v9Xa", "charge failed with key"),
    ("restricted rk_live_51HxT4bLzPqK2v9Xa used", "rk_live_51HxT4bLzPqK2v9Xa", "used"),
    ("git clone https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "github.com/o/r"),
    ("oauth gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a", "oauth"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", ""),
    ("gitlab glpat-xXyYzZ0123456789abcd", "glpat-xXyYzZ0123456789abcd", "gitlab"),
    ("webhook xoxr-1-2-3 and xoxa-2-abc", "xoxr-1-2-3", "webhook"),
    ("aws AKIAIOSFODNN7EXAMPLE key", "AKIAIOSFODNN7EXAMPLE", "aws"),
    ("sts ASIAY34FZKBOKMUTVV7A key", "ASIAY34FZKBOKMUTVV7A", "sts"),
    ("SECRET_KEY_BASE=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "9f86d081884c7d659a2feaa0c", "SECRET_KEY_BASE="),
    ("STRIPE_KEY=whatever-it-is", "whatever-it-is", "STRIPE_KEY="),
    ("OAUTH_CLIENT_SECRET: abc123", "abc123", "OAUTH_CLIENT_SECRET:"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx3kq\nZ9vT0pQ==\n-----END RSA PRIVATE KEY-----\nnext line",
     "MIIEowIBAAKCAQEAx3kq", "next line"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA (cut off here", "b3BlbnNzaC1rZXktdjEAAAAA", ""),
]


@pytest.mark.parametrize(("text", "secret", "kept"), SECRET_SHAPES, ids=[shape[0][:40] for shape in SECRET_SHAPES])
def test_every_secret_shape_is_masked(text, secret, kept):
    redacted = redact(text)
    assert secret not in redacted
    assert MASK in redacted
    assert kept in redacted


@pytest.mark.parametrize(
    "text",
    [
        "/stats 15m",
        "Connections: 12/50 (24%): active 3, idle 9",
        "http://127.0.0.1:58080/api/health answered HTTP 500",
        "backend: CPU 1.2%, memory 10.0 MiB / 256.0 MiB (3.9%)",
        "tokens used: 5, passwordless login",
        "GET /api/items/42 200 12ms sessions=3 cookies enabled",
        "monkey=banana eyJust a word, skip_live_tests=1, AKIA is short",
        "-----BEGIN CERTIFICATE----- is public",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert redact(text) == text


def test_the_reviewers_secrets_are_not_stored_in_the_audit_table(make_runtime):
    runtime = make_runtime(admins=["UA"])
    secrets = ["hunter2", "8f14e45fceea167a5a36dedd4bea2543", "s3cr3t-db", "eyJhbGciOiJIUzI1NiJ9", "pa55word"]
    typed = (
        "PGPASSWORD=hunter2 SLACK_SIGNING_SECRET=8f14e45fceea167a5a36dedd4bea2543 db_password=s3cr3t-db"
        " 'Bearer eyJhbGciOiJIUzI1NiJ9' 'password pa55word'"
    )
    run(runtime, "UA", f"/stats {typed}")
    run(runtime, "UNOBODY", f"/role grant {typed}")
    with runtime.store.session() as session:
        rows = [f"{row.arguments} {row.error}" for row in session.query(AuditEntry).order_by(AuditEntry.id)]
    assert [row.split("'text': ")[0] for row in rows] == ["{", "{"]
    for secret in secrets:
        assert not [row for row in rows if secret in row]


# One input per way a pattern could backtrack: a run with no end, many starts sharing one run, and the
# shape that cost the old URL pattern 3.4 s at 40 kB. Linear patterns finish 200 kB in milliseconds; a
# quadratic one would take hours, which the timeout turns into a failure.
SIZE = 200_000


def _fill(unit: str, head: str = "", tail: str = "") -> str:
    return head + unit * (SIZE // len(unit) + 1) + tail


ADVERSARIAL = {
    "scheme-like words": _fill("a."),
    "URLs without @": _fill("a://b:"),
    "URL with an endless password": _fill("p", head="x://u:"),
    "schemes and colons": _fill("://"),
    "keys without values": _fill("password "),
    "unclosed quotes": _fill("password='"),
    "mixed unclosed quotes": _fill("password=' ", head='password="'),
    "spaces after a key": _fill(" ", head="token", tail="=x"),
    "authorization schemes": _fill("Authorization: "),
    "bearers": _fill("bearer "),
    "token prefixes": _fill("xoxb-"),
    "near-token words": _fill("xo"),
    "cookie headers": _fill("Cookie: "),
    "JWT-like segments without a dot": _fill("eyJ-"),
    "JWT-like segments with one dot": _fill("eyJa.eyJa-"),
    "PEM headers without an end": _fill("-----BEGIN RSA PRIVATE KEY-----"),
    "dashes": _fill("-"),
    "key assignments": _fill("_KEY_BASE "),
    "vendor prefixes": _fill("sk_live_"),
    "AWS-like ids": _fill("AKIA"),
}


@pytest.mark.timeout(5)
@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_input_is_redacted_in_linear_time(text):
    assert "hunter2" not in redact(text + " password=hunter2")


def test_a_private_key_in_log_lines_is_masked_from_its_begin_line_to_its_end_line():
    """Container logs are redacted line by line: the lines between BEGIN and END are the key."""
    from bot.frame.redact import LineRedactor

    lines = [
        "2026-01-01T00:00:00.1Z loading key",
        "2026-01-01T00:00:00.2Z -----BEGIN PRIVATE KEY-----",
        "2026-01-01T00:00:00.3Z MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        "2026-01-01T00:00:00.4Z Zm9vYmFyYmF6cXV4",
        "2026-01-01T00:00:00.5Z -----END PRIVATE KEY-----",
        "2026-01-01T00:00:00.6Z password=hunter2 listening on 3000",
    ]
    redactor = LineRedactor()
    out = [redactor(line) for line in lines]
    assert out[0] == lines[0] and out[5] == "2026-01-01T00:00:00.6Z password=*** listening on 3000"
    for line in out[1:5]:
        assert line.startswith("2026-01-01T00:00:00.") and MASK in line, out
    assert "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" not in " ".join(out) and "Zm9vYmFyYmF6cXV4" not in " ".join(out)


def _every_pattern(text: str) -> str:
    """redact() without its look for what each pattern cannot match without: every pattern scans the whole text."""
    for pattern, replacement, _needs in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def test_skipping_the_patterns_a_text_cannot_match_changes_nothing_that_is_masked():
    # What the skip is decided on: case-insensitive look-alikes (the Kelvin sign, the long s, the dotted and dotless I),
    # every shape above, ordinary text, and random text made of the patterns' own characters.
    alike = ["paſſword=hunter2", "PAſſWORD: x", "api_\u212aey=abc", "authorİzation: Basic abc", "AUTHORıZATION: x",
             "ſessionid=abc", "SESSİON_ID=x", "CREDENT\u0130ALS=abc", "cookıe: a=b", "COOKİE: a=b", "BEARER  abc", "ToKeN=\"a b\"",
             "github_pat_11ABCDEFG0123456789_ABCDEFGHIJKLMNOPQRSTUV", "rk_test_0123456789ABCDEF", "sk-proj-0123456789ABCDEFXYZ01",
             "npm_0123456789ABCDEFXYZ0123456789ABCDEFG", "AIza0123456789ABCDEFXYZ0123456789ABCDEF", "\u212aEY=abc"]
    random_text = random.Random(7)
    pieces = ["pass", "word", "=", ":", " ", "key", "_", "-", "xox", "b", "://", "@", "eyJ", ".", "sess", "ion", "id", "İ", "ı", "ſ",
              "cookie", "bearer", "token", "AKIA", "ghp_", "github_pat_", "glpat-", "npm_", "AIza", "sk_live_", "xapp-", "sk-", "1234567890ABCDEFxyz_0123456789abcdef", "\n", "'", '"', "-----BEGIN", " PRIVATE KEY"]
    made = ["".join(random_text.choice(pieces) for _ in range(random_text.randint(1, 30))) for _ in range(3000)]
    corpus = alike + [shape[0] for shape in SECRET_SHAPES] + made
    differing = [text for text in corpus if redact(text) != _every_pattern(text)]
    assert differing == []
    assert all(MASK in redact(text) for text in alike[:-1]), [redact(text) for text in alike]
