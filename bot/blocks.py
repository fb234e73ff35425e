"""Block Kit builders, and the plain-text rendering the console shows for the same reply."""

from __future__ import annotations

import re

from bot.registry import Reply

_SECTION_LIMIT = 3000  # Slack rejects a section text longer than this


def header(text: str) -> dict:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def section(text: str) -> dict:
    if len(text) > _SECTION_LIMIT:
        text = text[: _SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def sections(lines: list[str]) -> list[dict]:
    """Lines packed into as few sections as Slack's per-section limit allows."""
    result: list[dict] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > _SECTION_LIMIT:
            result.append(section("\n".join(chunk)))
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        result.append(section("\n".join(chunk)))
    return result


def context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:_SECTION_LIMIT]}]}


def divider() -> dict:
    return {"type": "divider"}


def to_text(reply: Reply) -> str:
    """What a terminal shows: the blocks' text in order, or the fallback text when there are none."""
    if not reply.blocks:
        return _plain(reply.text)
    lines: list[str] = []
    for block in reply.blocks:
        kind = block["type"]
        if kind == "header":
            lines.append(block["text"]["text"])
        elif kind == "section":
            lines.append(block["text"]["text"])
        elif kind == "context":
            lines.extend(element["text"] for element in block["elements"])
        elif kind == "divider":
            lines.append("-" * 40)
    return _plain("\n".join(lines))


def _plain(text: str) -> str:
    """Slack's escapes in words a terminal shows: <@U123> as @U123, <!subteam^S1> as @S1."""
    return re.sub(r"<[@!](?:subteam\^)?([A-Za-z0-9]+)(?:\|[^>]*)?>", r"@\1", text)
