"""Records with known answers for the filter stages: near-duplicate documents for dedup,
and paraphrased topics for diversity."""

from __future__ import annotations

import random

from factory.core.record import Record

WORDS = ("river delta sediment flood plain current erosion basin channel estuary tide marsh salt fresh water "
         "bank levee meander oxbow silt clay gravel sand dune wind storm surge wave harbour pier dock boat "
         "crew cargo route chart depth sounding buoy light signal coast cliff rock reef shoal island").split()


def doc(rng: random.Random, n: int = 90) -> list[str]:
    return [rng.choice(WORDS) + str(rng.randint(0, 40)) for _ in range(n)]


def rec(i: int, text: str, **meta) -> Record:
    return Record(f"r{i}", [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": text}], meta)


def clustered_texts(seed: int, bases: int) -> list[str]:
    """Documents with copies, edits of several strengths, edits of edits (chains whose
    ends differ more than their links) and exact repeats, shuffled."""
    rng = random.Random(seed)
    texts = []
    for _ in range(bases):
        family = [doc(rng, rng.choice([12, 40, 90]))]
        for _ in range(rng.choice([0, 1, 3, 8, 30])):
            words = list(rng.choice(family))
            for _ in range(rng.choice([0, 1, 2, 4, 8])):
                words[rng.randrange(len(words))] = rng.choice(WORDS) + "x"
            family.append(words)
        texts += [" ".join(w) for w in family]
    rng.shuffle(texts)
    return texts


TOPICS = [
    ["How do I reset my router to factory settings?", "How can I reset my router to its factory settings?",
     "How do I reset my router to the factory settings?"],
    ["What is the best soil for growing tomatoes?", "What's the best soil for growing tomatoes?",
     "Which soil is best for growing tomatoes?"],
    ["Explain how a bill becomes law in the United States.", "Explain how a bill becomes a law in the United States.",
     "Explain how a bill becomes law in the US."],
    ["Write a haiku about autumn leaves falling.", "Write a haiku about falling autumn leaves.",
     "Write a short haiku about autumn leaves falling."],
]


def topic_records(scores: bool = False) -> list[Record]:
    """Three phrasings of each of four topics; with `scores`, the last phrasing of each scores best."""
    out = []
    for t, phrasings in enumerate(TOPICS):
        for p, text in enumerate(phrasings):
            meta = {"topic": t}
            if scores:
                meta["judge_score"] = 5 + p  # the last phrasing of each topic is best
            out.append(Record(f"t{t}p{p}", [{"role": "user", "content": text},
                                            {"role": "assistant", "content": "Here is how."}], meta))
    return out
