"""Preference pairs for DPO, ORPO and KTO: candidates for one prompt, a judge, best against worst.

A unit is one prompt. Each of its 2-4 candidates is written by the pipeline's teacher
with that candidate's own `teacher:` keys (a temperature, or another model); then a
judge scores all of them side by side in one structured verdict. The candidates'
order is shuffled per judgement, from the pipeline seed and the unit, so no candidate
is always first; `judge.both_orders` judges the reverse order too and averages, which
cancels a judge's preference for a position. The best-scored candidate is `chosen`,
the worst `rejected`.

A unit is rejected, with its reason, when fewer than two candidates are usable, when
the judge gives no score for some candidate (`missing_score`, after its retries), when
chosen and rejected say the same thing (`identical_answers`), when the best and the
worst tie (`tied_scores`), or when their margin is below `min_margin` (`low_margin`).

The record is `messages` = the prompt and the chosen answer, so every filter reads the
pair the way it reads a Q&A record; the rejected answer rides in `metadata.rejected`
and becomes the `rejected` column on export (factory/outputs/dataset.py).
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
from typing import Any

from factory.config.pipeline import PipelineFile, TeacherConfig, derived_teacher
from factory.config.generate import PreferenceGenerate
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.core.structured import JSONNotFound, extract_json, strict_object
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import RoleAsker, Task
from factory.teachers.base import Completion
from factory.inputs.templates import TemplateLibrary

LABELS = "ABCD"
# What the judge's rubric may use.
RUBRIC_VARIABLES = frozenset({"prompt", "system", "messages", "candidates", "scale_min", "scale_max", "seed"})
_LABELLED_SCORE = re.compile(r"(?:candidate|answer|response)?\s*\b([A-D])\b\s*[:=)\]-]\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def candidate_role(index: int) -> str:
    return f"candidate_{index + 1}"


def verdict_schema(labels: str, lo: int, hi: int) -> dict[str, Any]:
    score = {"type": "integer", "minimum": lo, "maximum": hi}
    # The rationale first: a judge that compares before it scores scores more carefully.
    return strict_object({"rationale": {"type": "string"}, "scores": strict_object({label: score for label in labels})})


def parse_verdict(text: str, labels: str, lo: float, hi: float) -> tuple[dict[str, float], str]:
    """({label: score}, rationale) from a judge's answer: the JSON verdict, else lines like
    `A: 7`. Raises Unusable ("unparseable": nothing readable; "missing_score": some
    candidate has no score on the scale)."""
    scores: dict[str, Any] = {}
    rationale = ""
    try:
        value = extract_json(text)
    except JSONNotFound:
        value = None
    if isinstance(value, dict) and "scores" in value:
        given = value["scores"]
        if isinstance(given, list):  # [{"candidate": "A", "score": 7}, ...]
            given = {str(item.get("candidate") or item.get("label") or item.get("id")): item.get("score")
                     for item in given if isinstance(item, dict)}
        if isinstance(given, dict):
            scores = {str(k).strip().upper(): v for k, v in given.items()}
        rationale = str(value.get("rationale") or "").strip()
    else:
        for match in _LABELLED_SCORE.finditer(text or ""):
            scores.setdefault(match.group(1).upper(), match.group(2))
        rationale = (text or "").strip()
    if not scores:
        raise Unusable("unparseable", f"no scores in the judge's answer: {(text or '')[:200]!r}")
    out = {}
    for label in labels:
        try:
            score = float(scores[label])
        except KeyError:
            raise Unusable("missing_score", f"no score for candidate {label}") from None
        except (TypeError, ValueError):
            raise Unusable("missing_score", f"candidate {label}'s score {scores[label]!r} is not a number") from None
        if not lo <= score <= hi:
            raise Unusable("missing_score", f"candidate {label}'s score {score:g} is outside the scale {lo:g}-{hi:g}")
        out[label] = score
    return out, rationale[:2000]


def same_text(a: str, b: str) -> bool:
    """The same answer but for spacing and case: no preference can be learnt from the pair."""
    return _SPACE.sub(" ", a).strip().casefold() == _SPACE.sub(" ", b).strip().casefold()


class PreferenceTask(Task):
    name = "preference"
    pairs = True

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg: PreferenceGenerate = self.cfg
        self.where = f"{pipeline.path}: generate"
        provided = set(seeds.names)
        self.templates = {role: library.load(name, provided, where=f"{self.where}.templates.{role}")
                          for role, name in cfg.templates.items()}
        # Among the task's templates, so the rubric's hash is in the records and in what
        # makes a stored unit current (a changed rubric judges again).
        self.templates["judge"] = library.load(cfg.judge.rubric, RUBRIC_VARIABLES, where=f"{self.where}.judge.rubric")
        # Derived now, so a bad key in a candidate or the judge is exit 2 before anything is
        # sent; and again when the run starts (a dry run points every teacher at the loopback).
        self._derive_teachers(pipeline)
        self.labels = LABELS[: len(cfg.candidates)]
        lo, hi = cfg.judge.scale
        self.schema = verdict_schema(self.labels, lo, hi)

    # -- what the run needs to know ------------------------------------------------------

    def units(self) -> int:
        return self.cfg.count

    def requested(self) -> int:
        return self.cfg.count

    def _derive_teachers(self, pipeline: PipelineFile) -> None:
        self.candidate_teachers = [derived_teacher(pipeline, overrides, f"{self.where}.candidates[{i}]")
                                   for i, overrides in enumerate(self.cfg.candidates)]
        self.judge_teacher = derived_teacher(pipeline, self.cfg.judge.teacher, f"{self.where}.judge.teacher",
                                             sampling_defaults={"temperature": 0.0})

    def role_teachers(self, pipeline: PipelineFile) -> dict[str, TeacherConfig]:
        self._derive_teachers(pipeline)
        roles = {candidate_role(i): t for i, t in enumerate(self.candidate_teachers)}
        return {**roles, "judge": self.judge_teacher}

    def roles(self) -> set[str]:
        return {"user", "assistant"} | ({"system"} if "system" in self.templates else set())

    def metadata_fields(self) -> set[str]:
        side = ("candidate", "model", "temperature", "score")
        fields = super().metadata_fields() | {"margin", "candidates", "judge", "judge.model", "judge.rationales",
                                              "judge.orders", "judge.scale", "chosen", "rejected",
                                              "rejected.content"}
        return fields | {f"{which}.{key}" for which in ("chosen", "rejected") for key in side}

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "candidates": [self._candidate_label(i) for i in range(len(self.labels))],
                "judge": {"model": self.judge_teacher.model, "scale": list(self.cfg.judge.scale),
                          "both_orders": self.cfg.judge.both_orders},
                "min_margin": self.cfg.min_margin}

    def summary(self) -> str:
        judgements = 2 if self.cfg.judge.both_orders else 1
        return (f"{self.cfg.count} prompts, {len(self.labels)} candidates each "
                f"({', '.join(self._candidate_label(i) for i in range(len(self.labels)))}), "
                f"{judgements} judgement{'s' if judgements > 1 else ''} each by {self.judge_teacher.model}")

    def _candidate_label(self, index: int) -> str:
        t = self.candidate_teachers[index]
        return f"{t.model} at temperature {t.sampling.temperature:g}"

    # -- prompts -------------------------------------------------------------------------

    def _prompt(self, values: dict[str, Any]) -> list[dict[str, str]]:
        messages = []
        if "system" in self.templates:
            messages.append({"role": "system", "content": self.templates["system"].render(values)})
        messages.append({"role": "user", "content": self.templates["user"].render(values)})
        return messages

    def _verdict_prompt(self, prompt: list[dict[str, str]], texts: list[str], order: list[int],
                        seed_values: dict[str, Any]) -> list[dict[str, str]]:
        lo, hi = self.cfg.judge.scale
        candidates = [{"label": label, "text": texts[i]} for label, i in zip(self.labels, order)]
        values = {"prompt": prompt[-1]["content"], "messages": prompt, "candidates": candidates,
                  "system": "\n".join(m["content"] for m in prompt if m["role"] == "system"),
                  "scale_min": lo, "scale_max": hi, "seed": seed_values}
        return [{"role": "user", "content": self.templates["judge"].render(values)}]

    def check(self) -> list[dict[str, Any]]:
        base = self.seeds.values(0)
        for name, values in zip(self.seeds.names, self.seeds.lists):
            for value in values:
                self._prompt({**base, name: value})
        # The rubric renders with stand-in candidates, so a broken one fails before the run.
        self._verdict_prompt(self._prompt(base), ["…"] * len(self.labels), list(range(len(self.labels))), base)
        return [{"seed": self.seeds.values(u), "messages": self._prompt(self.seeds.values(u))}
                for u in range(min(3, self.units()))]

    def orders(self, unit: int) -> list[list[int]]:
        """The candidates' order in each judgement: shuffled from (pipeline seed, unit), so a
        rerun shows the judge the same order; with both_orders, also reversed."""
        order = list(range(len(self.labels)))
        random.Random(f"{self.pipeline_seed}:preference-order:{unit}").shuffle(order)
        return [order, order[::-1]] if self.cfg.judge.both_orders else [order]

    # -- running -------------------------------------------------------------------------

    async def run_unit(self, unit: int, asker: RoleAsker) -> list[Record | Rejection]:
        seed_values = self.seeds.values(unit)
        prompt = self._prompt(seed_values)
        meta: dict[str, Any] = {
            "task": self.name, "seed": seed_values, "sample_index": unit,
            "templates": {role: {"name": t.name, "sha256": t.short_hash} for role, t in self.templates.items()},
        }
        usage: list[Completion] = []
        written = await asyncio.gather(*(self._candidate(unit, i, prompt, asker, usage)
                                         for i in range(len(self.labels))))
        candidates = [{"candidate": i + 1, "model": c.model if c else self.candidate_teachers[i].model,
                       "temperature": self.candidate_teachers[i].sampling.temperature,
                       **({"finish_reason": c.finish_reason} if c else {"failed": err})}
                      for i, (text, c, err) in enumerate(written)]
        usable = [i for i, (text, _, _) in enumerate(written) if text is not None]
        meta["candidates"] = candidates
        if len(usable) < 2:
            reason, detail = next((err for _, _, err in written if err), ("too_few_candidates", ""))
            return [self._reject(unit, reason, f"{len(usable)} of {len(self.labels)} candidates usable: {detail}",
                                 prompt, None, meta, usage)]
        texts = [text for text, _, _ in written]
        try:
            judged = await self._judge(unit, prompt, texts, usable, seed_values, asker, usage)
        except NoUsableAnswer as err:
            return [self._reject(unit, err.reason, f"judge, {err.attempts} attempts: {err.detail}", prompt,
                                 None, meta, usage)]
        scores, rationales, shown = judged
        for i, score in scores.items():
            candidates[i]["score"] = round(statistics.fmean(score), 4)
            candidates[i]["scores"] = score
        # Best first; among equal scores the lower candidate number, so the choice is fixed.
        ranked = sorted(usable, key=lambda i: (-candidates[i]["score"], i))
        best, worst = ranked[0], ranked[-1]
        margin = round(candidates[best]["score"] - candidates[worst]["score"], 4)
        meta.update({
            "chosen": self._side(candidates[best]),
            "rejected": {**self._side(candidates[worst]), "content": texts[worst]},
            "margin": margin,
            "judge": {"model": self.judge_teacher.model, "rationales": rationales, "orders": shown,
                      "scale": list(self.cfg.judge.scale)},
        })
        problem = self._problem(texts[best], texts[worst], margin)
        if problem is not None:
            return [self._reject(unit, *problem, prompt, texts[best], meta, usage)]
        return [Record(self._id(unit), prompt + [{"role": "assistant", "content": texts[best]}],
                       self._with_usage(meta, usage))]

    def _problem(self, chosen: str, rejected: str, margin: float) -> tuple[str, str] | None:
        if same_text(chosen, rejected):
            return "identical_answers", "the best and the worst candidate say the same thing"
        if margin <= 0:
            return "tied_scores", "the judge scored the best and the worst candidate alike"
        if margin < self.cfg.min_margin:
            return "low_margin", f"margin {margin:g} < min_margin {self.cfg.min_margin:g}"
        return None

    async def _candidate(self, unit: int, index: int, prompt: list[dict[str, str]], asker: RoleAsker,
                         usage: list[Completion]) -> tuple[str | None, Completion | None, tuple[str, str] | None]:
        """(text, completion, None) for a usable answer, else (None, None, (reason, detail))."""

        def use(completion: Completion, attempt: int) -> str:
            usage.append(completion)  # every attempt was paid for
            text = completion.text.strip()
            if completion.finish_reason == "length":
                raise Unusable("truncated", f"candidate {index + 1} hit max_tokens (attempt {attempt + 1})")
            if not text:
                raise Unusable("empty", f"candidate {index + 1} is empty (attempt {attempt + 1})")
            return text

        try:
            answer = await ask_until_usable(
                asker.for_role(candidate_role(index)), prompt, use, unit=unit, pipeline_seed=self.pipeline_seed,
                max_attempts=self.cfg.max_attempts, schema_name="candidate",
                step=lambda attempt: f"candidate:{index}:{attempt}")
        except NoUsableAnswer as err:
            return None, None, (err.reason, err.detail)
        return answer.value, answer.completion, None

    async def _judge(self, unit: int, prompt: list[dict[str, str]], texts: list[str | None], usable: list[int],
                     seed_values: dict[str, Any], asker: RoleAsker, usage: list[Completion]):
        """Each usable candidate's scores (one per judgement), the judge's rationales, and the
        order it saw them in (candidate numbers by label). Raises NoUsableAnswer."""
        lo, hi = self.cfg.judge.scale
        # Unusable candidates are left out: the judge sees only the ones that can be chosen.
        orders = [[i for i in order if i in usable] for order in self.orders(unit)]
        labels = self.labels[: len(usable)]
        schema = verdict_schema(labels, lo, hi)

        async def judgement(number: int, order: list[int]) -> tuple[dict[str, float], str]:
            messages = self._verdict_prompt(prompt, texts, order, seed_values)

            def use(completion: Completion, attempt: int) -> tuple[dict[str, float], str]:
                usage.append(completion)
                try:
                    return parse_verdict(completion.text, labels, lo, hi)
                except Unusable as err:
                    raise Unusable(err.reason, f"{err.detail} (judgement {number + 1}, attempt {attempt + 1})") from err

            return (await ask_until_usable(
                asker.for_role("judge"), messages, use, unit=unit, pipeline_seed=self.pipeline_seed,
                max_attempts=self.cfg.judge.max_attempts, schema=schema, schema_name="preference_verdict",
                step=lambda attempt: f"judge:{number}:{attempt}")).value

        verdicts = await asyncio.gather(*(judgement(n, order) for n, order in enumerate(orders)))
        scores: dict[int, list[float]] = {i: [] for i in usable}
        for order, (by_label, _) in zip(orders, verdicts):
            for label, i in zip(labels, order):
                scores[i].append(by_label[label])
        shown = [{label: i + 1 for label, i in zip(labels, order)} for order in orders]
        return scores, [rationale for _, rationale in verdicts], shown

    # -- output --------------------------------------------------------------------------

    @staticmethod
    def _side(candidate: dict[str, Any]) -> dict[str, Any]:
        return {key: candidate[key] for key in ("candidate", "model", "temperature", "score")}

    def _id(self, unit: int) -> str:
        return record_id(self.pipeline_name, self.name, unit)

    @staticmethod
    def _with_usage(meta: dict[str, Any], usage: list[Completion]) -> dict[str, Any]:
        return {**meta, "usage": {"prompt_tokens": sum(c.prompt_tokens for c in usage),
                                  "completion_tokens": sum(c.completion_tokens for c in usage)}}

    def _reject(self, unit: int, reason: str, detail: str, prompt: list[dict[str, str]], chosen: str | None,
                meta: dict[str, Any], usage: list[Completion]) -> Rejection:
        messages = prompt + ([{"role": "assistant", "content": chosen}] if chosen is not None else [])
        return Rejection(self._id(unit), "generate", reason, detail, messages=messages,
                         metadata=self._with_usage(meta, usage))
