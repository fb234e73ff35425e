"""Secrets never reach logs, messages or the audit table: everything user-given passes through here."""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "***"

# Every pattern is linear: each starts at a fixed literal and its unbounded runs stop at a character
# that the next start must contain, so no run is scanned again from a later start. (The old URL
# pattern began with a free-running scheme and cost seconds on 40 kB of "a.a.a.".)
_SECRET_KEY = r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?)"
# A quoted value may hold spaces; an unquoted one runs to the next space.
_VALUE = r"""(?:'[^'\n]*'|"[^"\n]*"|\S+)"""

_PATTERNS = [
    # Slack tokens: bot, user, app-level, config and refresh tokens.
    (re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]+"), MASK),
    # Passwords inside URLs: scheme://user:password@host. A password may hold "@" and ":" but no "/",
    # which ends the authority (as libpq and urllib read it).
    (re.compile(r"(://[^:/@\s]*:)[^\s/?#]*@"), rf"\1{MASK}@"),
    # key=value, key: value, "key": "value" whose key names a secret, also inside a longer name
    # (PGPASSWORD=, db_password=, SLACK_SIGNING_SECRET=); "password value", "--password value" and "PASSWORD 'value'" (SQL);
    # Authorization headers and bearer tokens.
    (
        re.compile(
            rf"""({_SECRET_KEY}["']?\s*[=:]\s*|(?:password|passwd|passphrase)\s+"""
            rf"""|authorization["']?\s*[=:]\s*(?:[a-z]+\s+)?|\bbearer\s+){_VALUE}""",
            re.I,
        ),
        rf"\1{MASK}",
    ),
]


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


class RedactingFilter(logging.Filter):
    """Applied to every handler of the bot's logging, so no code path can log a token by mistake."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.msg, record.args = redact(message), None
        return True


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(max(logging.WARNING, root.level))
    # At DEBUG the Slack libraries log each request's URL and body: response_urls (capabilities to post
    # as the bot) and message texts. The bot's own DEBUG lines are enough to follow a command.
    for name in ("slack_sdk", "slack_bolt", "urllib3"):
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
