"""Q&A rows about four topics in a chosen mix, for `factory compare` (its tests and its benchmark)."""

from __future__ import annotations

import random

TOPICS = {
    "astronomy": ["telescope", "galaxy", "nebula", "comet", "orbit", "planet", "asteroid", "supernova", "eclipse",
                  "meteor"],
    "baking": ["bread", "oven", "flour", "yeast", "dough", "crust", "butter", "pastry", "sourdough", "croissant"],
    "gardening": ["tomato", "soil", "compost", "seedling", "pruning", "mulch", "roses", "hedge", "fertiliser",
                  "greenhouse"],
    "taxes": ["deduction", "income", "refund", "audit", "pension", "bracket", "receipt", "accountant", "invoice",
              "payroll"],
}
QUESTIONS = ["How does the {a} relate to the {b}?", "What should a beginner know about {a} and {b}?",
             "Why is the {a} important when thinking about the {b}?",
             "Can you explain the {a} in simple terms, and the {b} too?", "What is the difference between a {a} and a {b}?"]
SENTENCES = ["The {a} and the {b} are closely linked: every {c} depends on both.",
             "Start with the {a}; once you understand it, the {b} and the {c} follow naturally.",
             "A {a} is not the same as a {b}, although people often mention a {c} alongside them.",
             "Most experts say the {a} matters more than the {b}, but the {c} decides the outcome."]
EVEN = {name: 0.25 for name in TOPICS}


def qa_rows(mix: dict[str, float], n: int, seed: int, sentences: tuple[int, int] = (1, 2)) -> list[dict]:
    """`n` rows in the messages format, topics drawn with the weights in `mix` (metadata.topic says which)."""
    rng = random.Random(seed)
    names = list(mix)
    rows = []
    for _ in range(n):
        topic = rng.choices(names, weights=[mix[t] for t in names])[0]
        a, b, c = rng.sample(TOPICS[topic], 3)
        answer = " ".join(rng.choice(SENTENCES).format(a=a, b=b, c=c) for _ in range(rng.randint(*sentences)))
        rows.append({"messages": [{"role": "user", "content": rng.choice(QUESTIONS).format(a=a, b=b)},
                                  {"role": "assistant", "content": answer}], "metadata": {"topic": topic}})
    return rows
