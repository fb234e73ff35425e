"""User text shown safely: in Slack it can mention people but never @channel; in Markdown it is text, not markup.

Text from Slack arrives as Slack writes it (`&lt;` for <, mentions as `<@U123|name>`); text from the
console arrives raw. Both are stored as they came and made safe where they are shown.
"""

from __future__ import annotations

import html
import re
from typing import Mapping

# What Slack itself writes into a message: mentions of users and channels, and links.
_TOKEN = re.compile(r"<(@[UW][A-Z0-9]+|#C[A-Z0-9]+|https?://[^\s<>|]+)(?:\|([^<>]*))?>")
# Inline code stays code in Markdown: nothing inside a code span is markup there.
_CODE_OR_TOKEN = re.compile(r"`([^`\n]+)`|" + _TOKEN.pattern)
_LONE_AMPERSAND = re.compile(r"&(?!(?:amp|lt|gt);)")
_MARKDOWN_ESCAPES = str.maketrans({c: "\\" + c for c in "\\`*_{}[]<>|~"})
# A heading, a list item or a rule, at the start of any line (a summary may have many): `\#`, `1\.`.
_MARKDOWN_LINE_START = re.compile(r"^([ \t]*)(?:([#+=-])|(\d+)([.)]))", re.MULTILINE)


def slack_safe(text: str) -> str:
    """Slack mrkdwn that keeps user and channel mentions and links but cannot broadcast (<!channel>) or forge tokens."""
    out, last = [], 0
    for match in _TOKEN.finditer(text):
        out.append(_escape_slack(text[last : match.start()]))
        out.append(match.group(0))
        last = match.end()
    out.append(_escape_slack(text[last:]))
    return "".join(out)


def _escape_slack(text: str) -> str:
    return _LONE_AMPERSAND.sub("&amp;", text).replace("<", "&lt;").replace(">", "&gt;")


def markdown_safe(text: str) -> str:
    """Plain text as Markdown that shows exactly that text (no emphasis, links, HTML or headings)."""
    escaped = text.translate(_MARKDOWN_ESCAPES)
    return _MARKDOWN_LINE_START.sub(_escape_line_start, escaped)


def _escape_line_start(match: re.Match) -> str:
    indent, starter, number, dot = match.groups()
    return f"{indent}\\{starter}" if starter else f"{indent}{number}\\{dot}"


def to_markdown(text: str, names: Mapping[str, str]) -> str:
    """A Slack message as escaped Markdown on one line: mentions become @name, links and inline code stay."""
    if "<" not in text and "`" not in text:  # most messages: no mention, link or code
        return " ".join(_plain_markdown(text).split())
    out, last = [], 0
    for match in _CODE_OR_TOKEN.finditer(text):
        out.append(_plain_markdown(text[last : match.start()]))
        code, target, label = match.group(1), match.group(2), match.group(3)
        if code is not None:
            out.append(f"`{html.unescape(code)}`")
        elif target.startswith("@"):
            out.append("@" + markdown_safe(names.get(target[1:]) or label or target[1:]))
        elif target.startswith("#"):
            out.append("#" + markdown_safe(label or target[1:]))
        else:
            url = target.replace("(", "%28").replace(")", "%29")
            out.append(f"[{markdown_safe(label)}]({url})" if label else f"<{url}>")
        last = match.end()
    out.append(_plain_markdown(text[last:]))
    return " ".join("".join(out).split())


def _plain_markdown(text: str) -> str:
    return markdown_safe(html.unescape(text) if "&" in text else text)


def plain(text: str, names: Mapping[str, str]) -> str:
    """A Slack message as plain text (for a terminal): mentions become @name."""
    def name(match: re.Match) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith("@"):
            return "@" + (names.get(target[1:]) or label or target[1:])
        if target.startswith("#"):
            return "#" + (label or target[1:])
        return label or target

    return html.unescape(_TOKEN.sub(name, text))
