"""Pipeline files written into a test folder, with their prompts and seeds: the Q&A pipeline
most tests start from, and the dialogue, grounded Q&A, generate.keep and preference
pipelines that several test files run. (The instruction-growing tasks have theirs in
instruction_pipelines.py.)"""

from __future__ import annotations

from pathlib import Path

import yaml

QA_USER = 'Write {{ k }} question/answer pairs about "{{ topic }}" for {{ persona }}.'
QA_SYSTEM = "You write {{ k }} pairs at a time."
TOPICS = ["tides", "volcanoes", "glaciers", "coral reefs"]
PERSONAS = ["a student", "a ship captain"]


def write_pipeline(folder: Path, base_url: str = "http://127.0.0.1:9/v1", **changes) -> Path:
    """A small Q&A pipeline with its own prompts and seed files; `changes` are dotted keys."""
    (folder / "prompts" / "qa").mkdir(parents=True, exist_ok=True)
    (folder / "prompts" / "qa" / "user.j2").write_text(QA_USER)
    (folder / "prompts" / "qa" / "system.j2").write_text(QA_SYSTEM)
    (folder / "topics.txt").write_text("".join(f"{topic}\n" for topic in TOPICS))
    config = {
        "name": "test-qa",
        "seed": 3,
        "teacher": {"backend": "openai", "model": "loopback", "base_url": base_url, "timeout": 10, "max_retries": 4},
        "seeds": {"topic": {"file": "topics.txt"}, "persona": list(PERSONAS)},
        "generate": {"task": "qa", "count": 12, "pairs_per_request": 2,
                     "templates": {"system": "qa/system.j2", "user": "qa/user.j2"}},
        "output": {"dir": str(folder / "out")},
    }
    for dotted, value in changes.items():
        node = config
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def slow_pipeline(folder: Path, loopback, count: int, slots: int, latency: float) -> Path:
    """One request per sample to a new loopback teacher that answers `slots` at a time
    after `latency` s, with as many in flight: a run long enough to act on while it goes."""
    url = loopback(latency_median=latency, slots=slots)
    return write_pipeline(folder, url, generate__count=count, generate__pairs_per_request=1,
                          teacher__max_concurrency=slots)


DIALOGUE_SYSTEM = "You are the support assistant of Orbit Notes."


def dialogue_pipeline(folder, url, generate=None, seeds=None, opening=None, **changes):
    gen = {"task": "dialogue", "count": 6, "turns": 3, "system_prompt": DIALOGUE_SYSTEM, **(generate or {})}
    seeds = seeds or {"persona": ["a student", "a teacher", "a baker"], "goal": ["fix sync", "get a refund"]}
    path = write_pipeline(folder, url, generate=gen, seeds=seeds, **changes)
    if opening is not None:
        (folder / "prompts" / "dialogue").mkdir(parents=True, exist_ok=True)
        (folder / "prompts" / "dialogue" / "user_opening.j2").write_text(opening)
    return path


def exchanges(messages):
    """A dialogue's (user, assistant) pairs, checking the roles alternate after the system message."""
    turns = [m for m in messages if m["role"] != "system"]
    assert [m["role"] for m in turns] == ["user", "assistant"] * (len(turns) // 2), turns
    return [(turns[i]["content"], turns[i + 1]["content"]) for i in range(0, len(turns), 2)]


def grounded_pipeline(folder, url, generate=None, **changes):
    """grounded_qa over the documents in folder/docs (the test writes them)."""
    gen = {"task": "grounded_qa", "documents": "docs", "id_field": "id", "pairs_per_chunk": 2,
           "chunking": {"size": 240, "overlap": 60, "min_chars": 40}, **(generate or {})}
    return write_pipeline(folder, url, generate=gen, seeds={"persona": ["a student", "a sailor"]}, filters=[], **changes)


# generate.keep's pipeline: the rubric shows the judge stand-in the record's cell and
# index; KEEP_SCRIPT (the loopback's replies) fails half of the volcano samples (the even
# ones) and passes everything else.
KEEP_RUBRIC = "Grade topic={{ metadata.seed.topic }} sample={{ metadata.sample_index }}: {{ answer }}"
KEEP_SCRIPT = [(r"topic=volcanoes sample=\d*[02468]:", '{"rationale": "off", "score": 1}'),
               (r"topic=", '{"rationale": "fine", "score": 9}')]


def keep_pipeline(tmp_path, url, **changes):
    (tmp_path / "prompts" / "judge").mkdir(parents=True, exist_ok=True)
    (tmp_path / "prompts" / "judge" / "cells.j2").write_text(KEEP_RUBRIC)
    return write_pipeline(tmp_path, url, generate__keep=12, generate__balance="topic",
                          filters=[{"type": "judge", "min_score": 5, "rubric": "judge/cells.j2"}], **changes)


PREFERENCE_PROMPTS = ["How do I store winter squash?", "Explain crop rotation to a child.", "Why do tomatoes split?",
                      "What is a cover crop for?", "How deep should garlic be planted?",
                      "When should I prune apple trees?"]


def write_preference(folder: Path, url: str, **generate) -> Path:
    (folder / "prompts.txt").write_text("\n".join(PREFERENCE_PROMPTS) + "\n")
    config = {
        "name": "test-pref",
        "seed": 5,
        "teacher": {"backend": "openai", "model": "loopback", "base_url": url, "timeout": 10, "max_retries": 2},
        "seeds": {"prompt": {"file": "prompts.txt"}},
        "generate": {"task": "preference", "count": 6, "combine": "product",
                     "templates": {"system": "preference/system.j2"}, **generate},
        "output": {"dir": str(folder / "out"), "formats": ["jsonl", "parquet", "openai"]},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
