"""Block Kit builders, and the plain-text rendering the console shows for the same reply."""

from __future__ import annotations

import re

from bot.frame.registry import Reply

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


def command_buttons(block_id: str, buttons: list[tuple[str, str, str]]) -> dict:
    """Buttons (label, action_id, value) whose label is the command a click runs, as if the clicker typed it
    (bot/adapters/slack/listeners.py maps each action_id to its command); a terminal shows the labels as text."""
    elements = [{"type": "button", "action_id": action, "text": {"type": "plain_text", "text": label[:75]}, "value": value}
                for label, action, value in buttons]
    return {"type": "actions", "block_id": f"{COMMANDS_BLOCK}{block_id}"[:255], "elements": elements}


COMMANDS_BLOCK = "commands:"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(text: str) -> str:
    """Someone's stored text, shown safely: on one line, no control characters, no Slack markup (&, <, >)."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: str) -> str:
    """Text from the stack (a log line, a healthcheck's output) in a code span it cannot close: escaped as above,
    and a backtick in it shown as ʼ (a backtick would end the span and turn the rest into live markup)."""
    return "`" + escape(text).replace("`", "ʼ") + "`"


def code_block(text: str) -> str:
    """Several lines from the stack (a statement's full text) in a code block they cannot close, line breaks kept."""
    lines = [escape(line).replace("`", "ʼ") for line in text.splitlines()]
    return "```" + "\n".join(lines) + "```"


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
        elif kind == "actions" and block.get("block_id", "").startswith(COMMANDS_BLOCK):
            lines.append("→ next: " + " · ".join(element["text"]["text"] for element in block["elements"]))
        elif kind == "divider":
            lines.append("-" * 40)
    return _plain("\n".join(lines))


def _plain(text: str) -> str:
    """Slack's escapes in words a terminal shows (<@U123> as @U123, &lt; as <), and never a control
    character: an ESC in anyone's text could rewrite the screen or set the clipboard."""
    # Mentions and channels as Slack shows them: their label when the markup has one (<#C123|ops> as #ops), else the id.
    text = re.sub(r"<([@#])([A-Za-z0-9_-]+)\|@?#?([^>]*)>", lambda m: m.group(1) + (m.group(3) or m.group(2)), text)
    text = re.sub(r"<([@#])([A-Za-z0-9_-]+)>", r"\1\2", text)
    text = re.sub(r"<!subteam\^([A-Za-z0-9]+)(?:\|@?([^>]*))?>", lambda m: "@" + (m.group(2) or m.group(1)), text)
    text = re.sub(r"<!([A-Za-z0-9]+)(?:\|[^>]*)?>", r"@\1", text)  # <!here>, <!channel>, <!everyone>
    text = re.sub(r"<(https?://[^|>\s]+)\|([^>]*)>", r"\2 (\1)", text)
    text = re.sub(r"<((?:https?|mailto):[^|>\s]+)>", r"\1", text)
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
