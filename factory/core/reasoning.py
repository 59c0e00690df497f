"""Thinking text kept apart from the answer.

Reasoning models hand back their thinking in one of three ways: a field of its own
(vLLM with a reasoning parser: `message.reasoning`; older vLLM and DeepSeek's API:
`reasoning_content`), or inside `content` between `<think>` and `</think>` (a Qwen3
or DeepSeek-R1 distill served without a parser). Some chat templates open the tag in
the prompt, so the content starts with the thinking and only closes it; an answer cut
off at max_tokens may open the tag and never close it. `split_thinking` turns each of
these into (answer, thinking), so no answer, in any task or in the judge, carries
thinking text; where the thinking then goes is `output.reasoning` (tasks/base.py).
"""

from __future__ import annotations

import re

# The tags reasoning models write; matched case-insensitively.
_BLOCK = re.compile(r"<(think|thinking)>(.*?)</\1>\s*", re.DOTALL | re.IGNORECASE)
_OPEN = re.compile(r"^\s*<(think|thinking)>", re.IGNORECASE)
_CLOSE = re.compile(r"</(think|thinking)>", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?(think|thinking)>", re.IGNORECASE)


def split_thinking(content: str, reasoning: str | None = None) -> tuple[str, str | None]:
    """(answer, thinking) from a message's content and its reasoning field, if any.

    Closed blocks anywhere are taken out; a content that closes a tag it never opened
    was thinking up to the close; one that opens a tag first and never closes it is
    all thinking (the answer is empty, as it would be at max_tokens). Thinking from the
    field comes first, then from the content, joined by a blank line.
    """
    parts = [reasoning.strip()] if reasoning and reasoning.strip() else []
    text = content or ""
    if not _ANY_TAG.search(text):
        return text, "\n\n".join(parts) or None
    close = _CLOSE.search(text)
    opened = re.search(r"<(think|thinking)>", text, re.IGNORECASE)
    if close and (opened is None or opened.start() > close.start()):
        parts.append(text[: close.start()].strip())
        text = text[close.end():]
    found = [m.group(2).strip() for m in _BLOCK.finditer(text)]
    text = _BLOCK.sub("", text)
    parts += found
    leading = _OPEN.match(text)
    if leading and not _CLOSE.search(text, leading.end()):
        parts.append(text[leading.end():].strip())
        text = ""
    return text.strip(), "\n\n".join(p for p in parts if p) or None


def has_thinking_tag(text: str) -> bool:
    """Whether `text` still holds a think tag, opening or closing."""
    return bool(_ANY_TAG.search(text or ""))
