"""Instruction-shaped answers for the loopback teacher: what instruction-growing tasks ask.

A real model asked to list new tasks, rewrite a prompt, compare two prompts, say whether
a task is classification, or write the user's turn after a chat template's pre-query
prefix answers in those shapes; so does the loopback, recognising the request by its
last lines. The instructions are built from a set of task forms filled with words of the
prompt (or built-in topics), so they vary from request to request, and two from the
same form are near each other (what similarity and dedup checks are for).
"""

from __future__ import annotations

import random
import re

_TOPICS = (
    "tides", "volcanoes", "glaciers", "beekeeping", "sourdough bread", "compost", "vegetable gardens",
    "household budgeting", "marathon training", "solar panels", "bicycle repair", "chess openings", "coral reefs",
    "medieval castles", "jazz history", "tea ceremonies", "home insulation", "bird migration", "cloud computing",
    "spreadsheets", "first aid", "origami", "board games", "public speaking", "houseplants", "river ecology",
    "vaccines", "photography", "typography", "sleep hygiene",
)
# Each form is one kind of task; {a} and {b} are topics. The classification ones matter
# for output-first instance generation.
_FORMS = (
    "Explain how {a} works to someone who has never heard of it.",
    "Write a short poem about {a}.",
    "List three common mistakes people make with {a} and how to avoid them.",
    "Compare {a} and {b} in a few sentences.",
    "Give me a step-by-step plan to get started with {a}.",
    "Summarize the main arguments for and against {a}.",
    "Suggest five questions a beginner might ask about {a}.",
    "Write a friendly email inviting a colleague to a workshop on {a}.",
    "What is the connection between {a} and {b}?",
    "Describe a typical day for someone who works with {a}.",
    "Rewrite the following sentence about {a} so that it is more formal.",
    "Create a quiz with three multiple-choice questions on {a}.",
    "Classify the following statement about {a} as fact or opinion.",
    "Is the following review of a book on {a} positive or negative?",
    "Classify each item as related to {a} or to {b}.",
    "Tell me whether this sentence about {a} is grammatically correct.",
)
_CLASSIFYING = re.compile(r"\b(classify|classification|positive or negative|fact or opinion|true or false|"
                          r"whether|which category|is it correct)\b", re.IGNORECASE)
_CONSTRAINTS = (
    "Keep the answer under 150 words.",
    "Include one concrete example involving {a}.",
    "Explain the reasoning behind each step.",
    "Present the result as a table with two columns.",
    "Assume the reader is a ten-year-old.",
    "Mention at least one common misconception about {a}.",
    "End with a one-sentence summary.",
    "Cite the season or place where {a} matters most.",
)
_MARKUP = re.compile(r"<[^<>\s]{1,40}>|\[/?INST\]")  # chat template tokens are not words to write about
_WORD = re.compile(r"[A-Za-z][a-z]{4,}")
_STOP = frozenset(["about", "above", "after", "again", "their", "there", "these", "those", "which", "while", "would", "could", "should", "being", "other", "first", "second", "prompt", "prompts", "given", "rewritten", "created", "tasks", "following", "write", "every"])
# A chat template's opening of a user turn, at the very end of a raw prompt.
_USER_TURN = re.compile(r"(?:user\n|user<\|end_header_id\|>\n\n|\[INST\]\s?|<start_of_turn>user\n|<\|user\|>\n?)$")
_NEXT_TASK = re.compile(r"Task\s+(\d+)\s*:\s*$")
_HOW_MANY = re.compile(r"\b(\d+)\s+(?:new|more)\s+tasks?\b", re.IGNORECASE)


def chat_answer(messages: list[dict], rng: random.Random) -> str | None:
    """An answer in the shape the last user message asks for, or None when it asks for none of these."""
    last = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    text = last.rstrip()
    next_task = _NEXT_TASK.search(text)
    if next_task:
        return _task_list(text, int(next_task.group(1)), rng)
    if text.endswith("Is it classification?"):
        task = text.rsplit("Task:", 1)[-1].removesuffix("Is it classification?")
        return "Yes" if _CLASSIFYING.search(task) else "No"
    if "#Rewritten Prompt#:" in text[-40:] or "#Created Prompt#:" in text[-40:]:
        return _rewrite(text, rng)
    if "The First Prompt:" in text and "The Second Prompt:" in text:
        first = text.split("The First Prompt:", 1)[1].split("The Second Prompt:", 1)[0]
        second = text.split("The Second Prompt:", 1)[1].split("Your Judgement", 1)[0]
        return "Equal" if _overlap(first, second) >= 0.9 else "Not Equal"
    return None


def raw_answer(prompt: str, rng: random.Random) -> str | None:
    """The user's turn after a pre-query prefix (Magpie), or None for any other raw prompt."""
    if not _USER_TURN.search(prompt):
        return None
    return instruction(rng, _topics(prompt))


def instruction(rng: random.Random, topics: list[str]) -> str:
    a, b = rng.choice(topics), rng.choice(topics)
    return rng.choice(_FORMS).format(a=a, b=b if b != a else rng.choice(_TOPICS))


def _task_list(prompt: str, number: int, rng: random.Random) -> str:
    wanted = _HOW_MANY.search(prompt)
    count = int(wanted.group(1)) if wanted else 5
    topics = _topics(prompt)
    lines = [instruction(rng, topics)]  # the prompt ends with "Task N:": the first one continues it
    lines += [f"Task {number + i}: {instruction(rng, topics)}" for i in range(1, count)]
    return "\n".join(lines)


def _rewrite(prompt: str, rng: random.Random) -> str:
    breadth = "#Created Prompt#:" in prompt[-40:]
    given = re.split(r"#(?:The )?Given Prompt#:", prompt)[-1]
    given = re.split(r"#(?:Rewritten|Created) Prompt#:", given)[0].strip()
    topics = _topics(given)
    if breadth:
        return instruction(rng, topics)
    if rng.random() < 0.15:
        return given  # a rewrite that adds nothing: the equality check's business
    return f"{given} {rng.choice(_CONSTRAINTS).format(a=rng.choice(topics))}"


def _topics(text: str) -> list[str]:
    """Words of the prompt to write about (its last 30 distinct ones), topped up with built-in
    topics when it has few: a bare chat template says nothing to write about."""
    text = _MARKUP.sub(" ", text)
    found = list(dict.fromkeys(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP))[-30:]
    return found if len(found) >= 6 else found + list(_TOPICS)


def _overlap(a: str, b: str) -> float:
    x, y = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    return len(x & y) / len(x | y) if x | y else 1.0
