"""Deterministic, varied answers for the loopback teacher.

Given the request, produce text that is a pure function of (messages, seed): JSON
that follows the requested schema when there is one, plain sentences otherwise. Words
are drawn from the prompt itself and a small vocabulary, so answers differ from
prompt to prompt and look like text rather than placeholders.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from typing import Any

from factory.loopback.instructions import chat_answer, raw_answer

_WORDS = (
    "system process method result example value reason step detail practice risk cost "
    "model rule case effect source measure balance pattern signal limit choice factor "
    "approach context feature problem answer question tradeoff baseline check record"
).split()
_STARTS = ("What", "How", "Why", "When", "Which", "Where")
_TOKEN = re.compile(r"[A-Za-z][A-Za-z-]{3,}")
_SCHEMA_BLOCK = re.compile(r"```json\s*(\{.*?\})\s*```", re.S)
_PASSAGE = re.compile(r"<(passage|document|context)>(.*?)</\1>", re.S)
_SENTENCE = re.compile(r"[^.!?\n]{12,}[.!?]")
_CANDIDATE = re.compile(r'<candidate id="([A-Z])">\n?(.*?)\n?</candidate>', re.S)


def seed_of(messages: list[dict], seed: Any) -> int:
    text = json.dumps([messages, seed], sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def answer(messages: list[dict], seed: Any, schema: dict | None, position_bias: int = 0) -> str:
    rng = random.Random(seed_of(messages, seed))
    prompt = " ".join(str(m.get("content", "")) for m in messages)
    prose = _SCHEMA_BLOCK.sub(" ", prompt)  # schema keywords are not the topic
    vocab = list(dict.fromkeys(_TOKEN.findall(prose)))[-200:] or _WORDS
    # A field named like a quote copies a sentence of the passage the prompt holds.
    passage = _PASSAGE.search(prompt)
    quotable = _SENTENCE.findall(passage.group(2) if passage else prose) or [_sentence(rng, vocab)]
    if schema is None:
        shaped = chat_answer(messages, rng)
        if shaped is not None:
            return shaped
        found = _schema_in_prompt(prompt)
        if found is not None:
            # Prompt-mode clients get the JSON wrapped the way real models wrap it.
            body = json.dumps(_judged(_value(found, rng, vocab, "", quotable), found, prompt, position_bias), indent=1)
            return f"Here is the JSON you asked for:\n```json\n{body}\n```"
        return " ".join(_sentence(rng, vocab) for _ in range(rng.randint(2, 4)))
    return json.dumps(_judged(_value(schema, rng, vocab, "", quotable), schema, prompt, position_bias),
                      ensure_ascii=False)


def _judged(value: Any, schema: dict, prompt: str, position_bias: int = 0) -> Any:
    """A preference verdict scores each `<candidate id="X">` in the prompt by its text alone,
    as a consistent judge would: the same answer gets the same score in any position, so
    shuffled and reversed orders agree. `position_bias` adds that many points to whichever
    candidate is shown first (within the scale), as judges that favour a position do."""
    candidates = _CANDIDATE.findall(prompt)
    scores = schema.get("properties", {}).get("scores", {}).get("properties", {})
    if not candidates or not isinstance(value, dict) or not isinstance(value.get("scores"), dict):
        return value
    first = candidates[0][0]
    for label, text in candidates:
        rule = scores.get(label)
        if rule is None:
            continue
        lo, hi = rule.get("minimum", 1), rule.get("maximum", 10)
        digest = hashlib.blake2b(text.strip().encode(), digest_size=4).digest()
        score = lo + int.from_bytes(digest, "big") % (hi - lo + 1)
        value["scores"][label] = min(hi, score + position_bias) if label == first else score
    return value


def complete_text(prompt: str, seed: Any) -> str:
    """A raw-text continuation: the user's turn after a chat template's pre-query prefix,
    else sentences from the prompt's words."""
    rng = random.Random(seed_of([{"prompt": prompt}], seed))
    shaped = raw_answer(prompt, rng)
    if shaped is not None:
        return shaped
    vocab = list(dict.fromkeys(_TOKEN.findall(prompt)))[-200:] or _WORDS
    return " ".join(_sentence(rng, vocab) for _ in range(rng.randint(1, 3)))


def _schema_in_prompt(prompt: str) -> dict | None:
    for block in _SCHEMA_BLOCK.findall(prompt):
        try:
            schema = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(schema, dict) and "type" in schema:
            return schema
    return None


def _value(schema: dict, rng: random.Random, vocab: list[str], name: str, quotable: list[str]) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        props = schema.get("properties", {})
        return {key: _value(sub, rng, vocab, key, quotable) for key, sub in props.items()}
    if kind == "array":
        lo = schema.get("minItems", 1)
        hi = schema.get("maxItems", max(lo, 3))
        items = schema.get("items", {"type": "string"})
        return [_value(items, rng, vocab, name, quotable) for _ in range(rng.randint(lo, hi))]
    if kind == "integer":
        return rng.randint(schema.get("minimum", 1), schema.get("maximum", 10))
    if kind == "number":
        return round(rng.uniform(schema.get("minimum", 0), schema.get("maximum", 1)), 3)
    if kind == "boolean":
        return rng.random() < 0.9  # e.g. "supported": a real teacher mostly says yes
    if name in ("quote", "evidence", "support"):
        return rng.choice(quotable).strip()
    if "question" in name or name in ("user", "prompt", "instruction"):
        return _question(rng, vocab)
    return " ".join(_sentence(rng, vocab) for _ in range(rng.randint(1, 3)))


def _question(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(vocab).lower() for _ in range(rng.randint(3, 7))]
    return f"{rng.choice(_STARTS)} {' '.join(words)}?"


def _sentence(rng: random.Random, vocab: list[str]) -> str:
    words = [rng.choice(vocab if rng.random() < 0.6 else _WORDS).lower() for _ in range(rng.randint(6, 14))]
    return " ".join(words).capitalize() + "."


def thinking(messages: list[dict], seed: Any) -> str:
    """Deterministic thinking text for reasoning-model imitations: a few sentences about the prompt."""
    rng = random.Random(seed_of(messages, ["thinking", seed]))
    prompt = _SCHEMA_BLOCK.sub(" ", " ".join(str(m.get("content", "")) for m in messages))
    vocab = list(dict.fromkeys(_TOKEN.findall(prompt)))[-200:] or _WORDS
    return "Let me think this through. " + " ".join(_sentence(rng, vocab) for _ in range(rng.randint(2, 4)))
