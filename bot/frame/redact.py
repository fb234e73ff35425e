"""Secrets never reach logs, messages or the audit table: everything user-given passes through here."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

MASK = "***"

# Every pattern is linear: each starts at a fixed literal and its unbounded runs stop at a character
# that the next start must contain, so no run is scanned again from a later start. (The old URL
# pattern began with a free-running scheme and cost seconds on 40 kB of "a.a.a.".)
# `[_-]key`: any *_KEY= or *_KEY_BASE= assignment (SECRET_KEY_BASE, STRIPE_KEY); a bare "key" is too common a word.
_SECRET_KEY = (
    r"(?:password|passwd|passphrase|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|[_-]key(?:[_-]base)?|credentials?)"
)
# A quoted value may hold spaces; an unquoted one runs to the next space.
_VALUE = r"""(?:'[^'\n]*'|"[^"\n]*"|\S+)"""

# A PEM private key: from its BEGIN line to its END line, or to the next "-----" or the end of the text when
# the END is missing (a cut-off key is still a key). The body stops at any "-----", so no start rescans it.
_PEM_BEGIN = r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY"
_PEM_END = r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY"


class _Folded:
    """The words a case-insensitive pattern cannot match without, casefolded (re.IGNORECASE matches as casefold()
    compares, except that it also takes the dotted and dotless capital and small I for "i": no stem holds an "i")."""

    def __init__(self, *stems: str):
        assert all("i" not in stem for stem in stems), stems
        self.stems = stems


# Each pattern with the text it cannot match without: a literal it starts with or must contain (the patterns are run
# only on a text that holds one; a reply without any costs a few substring searches, not nine scans by the regex
# engine: 114 us for a /whoami reply, more than its delivery's share of CPU).
_PATTERNS = [
    # Slack tokens: bot, user, app-level, config and refresh tokens.
    (re.compile(r"\bx(?:ox[abposre]|app)-[A-Za-z0-9-]+"), MASK, ("xox", "xapp-")),
    (re.compile(rf"{_PEM_BEGIN}[A-Z ]{{0,10}}-----(?:[^-]|-(?!----))*(?:{_PEM_END}[A-Z ]{{0,10}}-----)?"), MASK, ("-----BEGIN",)),
    # Vendors' key shapes: Stripe secret and restricted keys, GitHub and GitLab tokens, AWS access key ids,
    # OpenAI, npm and Google API keys. Each run stops at a character its prefix needs, or is bounded.
    (
        re.compile(
            r"\b(?:[sr]k_(?:live|test)_[A-Za-z0-9]{8,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
            r"|glpat-[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[A-Z0-9]{16}\b|sk-(?:proj-)?[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{36}"
            r"|AIza[A-Za-z0-9_-]{35})"
        ),
        MASK,
        ("k_live_", "k_test_", "gh", "github_pat_", "glpat-", "AKIA", "ASIA", "sk-", "npm_", "AIza"),
    ),
    # JWTs: base64url JSON header and payload ("eyJ" is `{"`). A start only where no run is under way, so a
    # failed run is not scanned again from each "eyJ" inside it.
    (re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK, ("eyJ",)),
    # Cookie and Set-Cookie headers (node's `cookie: '...'` too): the whole value, to the line's end when unquoted;
    # and the usual session cookies wherever they appear (a query string, curl -b).
    (re.compile(r"""(cookies?["']?\s*[=:]\s*)(?:'[^'\n]*'|"[^"\n]*"|[^\n]*)""", re.I), rf"\1{MASK}", _Folded("cook")),
    (
        re.compile(r"""\b((?:connect\.sid|phpsessid|jsessionid|sessionid|session_id|_session)=)[^;\s"'&,]+""", re.I),
        rf"\1{MASK}",
        _Folded("sess", "connect."),
    ),
    # Passwords inside URLs: scheme://user:password@host. A password may hold "@" and ":" but no "/",
    # which ends the authority (as libpq and urllib read it).
    (re.compile(r"(://[^:/@\s]*:)[^\s/?#]*@"), rf"\1{MASK}@", ("://",)),
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
        _Folded("pass", "pwd", "secret", "token", "key", "credent", "author", "bearer"),
    ),
]


def redact(text: str) -> str:
    folded = None
    for pattern, replacement, needs in _PATTERNS:
        if isinstance(needs, _Folded):
            if folded is None:
                folded = text.casefold()
            if not any(stem in folded for stem in needs.stems):
                continue
        elif not any(stem in text for stem in needs):
            continue
        changed = pattern.sub(replacement, text)
        if changed != text:
            text, folded = changed, None
    return text


class LineRedactor:
    """Redacts text that arrives line by line (container logs): the lines of a PEM private key between its BEGIN
    and END lines are masked whole, keeping a Docker timestamp in front of them."""

    MAX_KEY_LINES = 200  # an 8192-bit RSA key is about 100 lines; a BEGIN without an END hides no more than this

    _begin = re.compile(_PEM_BEGIN)
    _end = re.compile(_PEM_END)
    _stamp = re.compile(r"\d{4}-\d\d-\d\dT[0-9:.]+Z ")

    def __init__(self) -> None:
        self._key_lines_left = 0

    def __call__(self, line: str) -> str:
        if self._key_lines_left:
            self._key_lines_left = 0 if self._end.search(line) else self._key_lines_left - 1
            stamp = self._stamp.match(line)
            return (stamp.group(0) if stamp else "") + MASK
        if self._begin.search(line) and not self._end.search(line):
            self._key_lines_left = self.MAX_KEY_LINES
        return redact(line)


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


def configure_logging(level: str, to_file: Path | None = None) -> None:
    """The bot's log on stderr, or in a file (the console's: its log lines never land inside a command's output)."""
    if to_file is None:
        handler: logging.Handler = logging.StreamHandler()
    else:
        os.close(os.open(to_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # the log is the bot's user's alone
        handler = logging.FileHandler(to_file, encoding="utf-8")
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
