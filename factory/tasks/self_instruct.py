"""Self-Instruct (Wang et al., 2023): a pool of tasks grown from human-written seed tasks.

A unit is one request for `instructions_per_request` new instructions, prompted with a
few-shot list drawn from the pool (by default 6 human-written and 2 machine-made
tasks, as in the paper). Units run in rounds of `round_size` (tasks/rounds.py): every
prompt of round r samples the pool as round r-1 left it, and the round's new
instructions are then settled in sample order, each one checked against the pool as it
stands, the earlier ones of its round included:

- numbering the model wrote ("Task 12:", "3.", "(4)") is cut away, and two tasks run
  together on one line are split;
- too short or too long (`min_words`, `max_words`), a word a language model cannot act
  on (`blocked_words`: image, graph, file ...), "Write a program" (unclear whether to
  write or run it), or a start that is not a letter or digit: rejected;
- ROUGE-L F1 with an instruction in the pool at or above `max_similarity`: rejected
  as too similar (tasks/rouge.py says why ROUGE-L);
- accepted instructions join the pool, and each gets its instances: the teacher is
  asked whether the task is classification; classification tasks are written
  output-first (the class labels, then an input for each), the others input-first, so
  labels are not all the first one a model thinks of.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.config.pipeline import PipelineFile
from factory.core import jsonlines
from factory.core.errors import RequestRefused, SeedError
from factory.config.instruction import SelfInstructGenerate
from factory.core.record import Record, Rejection, record_id
from factory.inputs.seeds import SeedSpace
from factory.core.structured import JSONNotFound, extract_json, list_answer, strict_object
from factory.tasks.asking import NoUsableAnswer, Unusable, ask_until_usable
from factory.tasks.base import Asker, MultiSampleTask
from factory.tasks.rouge import RougePool, words
from factory.tasks.rounds import Rounds, refuse_shards
from factory.teachers.base import Completion
from factory.inputs.templates import TemplateLibrary

OWN_VARIABLES = frozenset({"tasks", "next_number", "count", "instruction", "examples"})
# "Task 12:" anywhere (two tasks run together on one line are two tasks); a bare "12.",
# "(12)" or a bullet only at the start of a line, where it is numbering rather than a
# version number.
_TASK_LABEL = re.compile(r"(?:\*\*)?\b(?:Task|Instruction)\s*#?\s*\d+\s*(?:\*\*)?\s*[:.)\-]\s*(?:\*\*)?", re.IGNORECASE)
_LINE_NUMBER = re.compile(r"^[ \t]*(?:\(?\d{1,3}[.):]|#\d{1,3}[.:)]?|[-*•])[ \t]+", re.MULTILINE)
_LEADING = re.compile(r"^\s*(?:(?:\*\*)?(?:Task|Instruction)\s*#?\s*\d+\s*(?:\*\*)?\s*[:.)\-]|\(?\d{1,3}[.):]|#\d{1,3}[.:)]?|[-*•])\s*",
                      re.IGNORECASE)
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


@dataclass
class SeedTask:
    instruction: str
    instances: list[dict[str, str]]
    is_classification: bool


def read_seed_tasks(path: Path) -> list[SeedTask]:
    """Self-Instruct's seed format, one task a line. Raises SeedError naming the line."""
    try:
        rows = list(jsonlines.read(path, SeedError))
    except FileNotFoundError as err:
        raise SeedError(f"{path}: seed tasks file not found (generate.seed_tasks)") from err
    except OSError as err:
        raise SeedError(f"{path}: cannot read seed tasks ({err.__class__.__name__}: {err})") from err
    tasks = []
    for number, row in rows:
        instruction = row.get("instruction") if isinstance(row, dict) else None
        if not isinstance(instruction, str) or not instruction.strip():
            raise SeedError(f"{path}:{number}: a seed task needs a non-empty 'instruction'")
        instances = row.get("instances", [])
        if not isinstance(instances, list) or not all(
                isinstance(i, dict) and isinstance(i.get("input", ""), str) and isinstance(i.get("output"), str)
                for i in instances):
            raise SeedError(f"{path}:{number}: 'instances' must be a list of {{input, output}} strings")
        flag = row.get("is_classification", False)
        if not isinstance(flag, bool):
            raise SeedError(f"{path}:{number}: 'is_classification' must be true or false")
        tasks.append(SeedTask(instruction.strip(), [{"input": i.get("input", ""), "output": i["output"]}
                                                    for i in instances], flag))
    if not tasks:
        raise SeedError(f"{path}: no seed tasks")
    return tasks


def split_instructions(text: str, cut_off: bool) -> list[str]:
    """The instructions in a list the teacher wrote (after a prompt ending "Task N:"),
    numbering removed. A list cut off at max_tokens loses its last, unfinished item."""
    text = _TASK_LABEL.sub("\n\x00", text)
    text = _LINE_NUMBER.sub("\x00", text)
    items = []
    for chunk in text.split("\x00"):
        item = chunk.strip()
        while (match := _LEADING.match(item)) and match.end() > 0:
            item = item[match.end():].strip()  # "Task 9: 1. Write ..." loses both
        if item:
            items.append(" ".join(item.split()))
    if cut_off and items:
        items.pop()
    return items


@dataclass
class Proposal:
    """One unit's request for new instructions: what came back, or why nothing did."""

    instructions: list[str] = field(default_factory=list)
    completion: Completion | None = None
    attempts: int = 0
    failure: tuple[str, str] | None = None
    refused: RequestRefused | None = None
    few_shot: dict[str, int] = field(default_factory=dict)  # how many human and machine examples


@dataclass
class Verdict:
    instruction: str
    reason: str | None  # None: accepted into the pool
    detail: str
    nearest: float


@dataclass
class Round:
    # Every instruction accepted so far (the seed tasks' first), and the machine-made ones
    # in order: handed on to the next round, which takes them over (None after that).
    pool: RougePool | None
    machine: list[str] | None
    proposals: dict[int, Proposal]
    verdicts: dict[int, list[Verdict]]


class SelfInstructTask(MultiSampleTask):
    name = "self_instruct"

    def __init__(self, pipeline: PipelineFile, seeds: SeedSpace, library: TemplateLibrary):
        super().__init__(pipeline, seeds)
        cfg: SelfInstructGenerate = self.cfg
        refuse_shards(pipeline, "self_instruct", "each round's prompts sample the pool the rounds before grew")
        self.k = cfg.instructions_per_request
        self.samples_per_unit = self.k
        self.seed_path = pipeline.resolve(cfg.seed_tasks)
        self.seed_tasks = read_seed_tasks(self.seed_path)
        where = f"{pipeline.path}: generate.templates"
        provided = set(seeds.names) | OWN_VARIABLES
        self.templates = {role: library.load(name, provided, where=f"{where}.{role}")
                          for role, name in cfg.templates.items()}
        blocked = [re.escape(w.lower()) for w in cfg.blocked_words]
        self.blocked = re.compile(r"\b(?:" + "|".join(blocked) + r")\b", re.IGNORECASE) if blocked else None
        self.rounds: Rounds[Round] = Rounds(self._round)
        self._asker: Asker | None = None

    # -- shape of the run --------------------------------------------------------------

    def units(self) -> int:
        return math.ceil(self.cfg.count / self.k)

    def requested(self) -> int:
        return self.cfg.count

    def template_variables(self) -> set[str]:
        return set(OWN_VARIABLES)

    def roles(self) -> set[str]:
        return {"user", "assistant"} | ({"system"} if self.cfg.system_prompt else set())

    def metadata_fields(self) -> set[str]:
        return super().metadata_fields() | {"round", "instruction", "is_classification", "instances", "few_shot",
                                            "few_shot.human", "few_shot.machine", "nearest_rouge_l",
                                            "teacher_model"}

    def data_digest(self) -> str:
        import hashlib

        tasks = [(t.instruction, t.instances, t.is_classification) for t in self.seed_tasks]
        return hashlib.sha256(json.dumps([super().data_digest(), tasks], sort_keys=True).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {"task": self.name, "seed_tasks": len(self.seed_tasks), "round_size": c.round_size,
                "few_shot": {"human": c.human_examples, "machine": c.machine_examples},
                "similarity": {"measure": "rouge_l_f1", "max": c.max_similarity}}

    def summary(self) -> str:
        rounds = math.ceil(self.units() / self.cfg.round_size)
        return (f"{self.requested()} new instructions from {len(self.seed_tasks)} seed tasks: {self.units()} "
                f"requests in {rounds} rounds, then 2 requests per accepted instruction")

    # -- prompts -----------------------------------------------------------------------

    def _few_shot(self, unit: int, machine: list[str]) -> tuple[list[str], int]:
        """The unit's example tasks (drawn by a generator seeded with the unit) and how many are machine-made."""
        rng = random.Random(f"{self.pipeline_seed}:self_instruct:{unit}")
        c = self.cfg
        from_machine = rng.sample(machine, min(c.machine_examples, len(machine)))
        # Human tasks stand in for machine ones the pool does not have yet.
        humans = [t.instruction for t in self.seed_tasks]
        wanted = c.human_examples + c.machine_examples - len(from_machine)
        chosen = rng.sample(humans, min(wanted, len(humans))) + from_machine
        rng.shuffle(chosen)
        return chosen, len(from_machine)

    def _instructions_prompt(self, unit: int, examples: list[str]) -> list[dict[str, str]]:
        values = {**self.seeds.values(unit), "tasks": examples, "next_number": len(examples) + 1, "count": self.k}
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        return messages + [{"role": "user", "content": self.templates["instructions"].render(values)}]

    def _classify_prompt(self, unit: int, instruction: str) -> list[dict[str, str]]:
        rng = random.Random(f"{self.pipeline_seed}:classify:{instruction}")
        yes = [t for t in self.seed_tasks if t.is_classification]
        no = [t for t in self.seed_tasks if not t.is_classification]
        examples = rng.sample(yes, min(6, len(yes))) + rng.sample(no, min(6, len(no)))
        rng.shuffle(examples)
        values = {**self.seeds.values(unit), "instruction": instruction,
                  "examples": [{"instruction": t.instruction, "is_classification": t.is_classification}
                               for t in examples]}
        return [{"role": "user", "content": self.templates["classify"].render(values)}]

    def _instances_prompt(self, unit: int, instruction: str, classification: bool) -> list[dict[str, str]]:
        rng = random.Random(f"{self.pipeline_seed}:instances:{instruction}")
        alike = [t for t in self.seed_tasks if t.is_classification == classification and t.instances]
        examples = rng.sample(alike, min(3, len(alike)))
        values = {**self.seeds.values(unit), "instruction": instruction, "count": self.cfg.instances_per_task,
                  "examples": [{"instruction": t.instruction, "instances": t.instances} for t in examples]}
        role = "output_first" if classification else "input_first"
        return [{"role": "user", "content": self.templates[role].render(values)}]

    def _instances_schema(self, classification: bool) -> dict[str, Any]:
        # Output-first: the label comes before the input, in the schema's order too.
        order = ("output", "input") if classification else ("input", "output")
        item = strict_object({name: {"type": "string"} for name in order})
        return list_answer("instances", item, 1, self.cfg.instances_per_task)

    def check(self) -> list[dict[str, Any]]:
        base = self.seeds.values(0)
        for name, values in zip(self.seeds.names, self.seeds.lists):
            for value in values:
                self.templates["instructions"].render({**base, name: value, "tasks": ["x"], "next_number": 2,
                                                      "count": self.k})
        sample = self.seed_tasks[0].instruction
        self._classify_prompt(0, sample)
        self._instances_prompt(0, sample, True)
        self._instances_prompt(0, sample, False)
        return [{"seed": self.seeds.values(u), "messages": self._instructions_prompt(u, self._few_shot(u, [])[0])}
                for u in range(min(3, self.units()))]

    # -- rounds ------------------------------------------------------------------------

    def _round_of(self, unit: int) -> int:
        return unit // self.cfg.round_size

    async def _round(self, r: int) -> Round:
        if r == 0:
            pool, machine = RougePool([t.instruction for t in self.seed_tasks]), []
        else:
            # Taken over, not copied: only this round reads the pool the round before left,
            # and copying it every round would cost time and memory that grow with the pool.
            before = await self.rounds.get(r - 1)
            pool, machine = before.pool, before.machine
            before.pool, before.machine = None, None
        # Top-up units (generate.keep) join the rounds their indices fall in, after the units
        # already there: those keep their prompts and verdicts.
        units = [u for u in self.unit_list() if u // self.cfg.round_size == r]
        # Every prompt of the round sees the pool as it was when the round began.
        proposals = await asyncio.gather(*(self._propose(u, machine) for u in units))
        verdicts: dict[int, list[Verdict]] = {}
        for unit, proposal in zip(units, proposals):
            verdicts[unit] = []
            for text in proposal.instructions[: len(self._samples(unit))]:
                verdict = self._judge(text, pool)
                verdicts[unit].append(verdict)
                if verdict.reason is None:
                    pool.add(text)
                    machine.append(text)
        return Round(pool, machine, dict(zip(units, proposals)), verdicts)

    async def _propose(self, unit: int, machine: list[str]) -> Proposal:
        examples, from_machine = self._few_shot(unit, machine)
        messages = self._instructions_prompt(unit, examples)

        def use(completion: Completion, attempt: int) -> list[str]:
            found = split_instructions(completion.text, completion.finish_reason == "length")
            if not found:
                reason = "truncated" if completion.finish_reason == "length" else "unparseable"
                raise Unusable(reason, f"no instruction in the answer (attempt {attempt + 1})")
            return found

        try:
            answer = await ask_until_usable(self._asker, messages, use, unit=unit, pipeline_seed=self.pipeline_seed,
                                            max_attempts=self.cfg.max_attempts, schema_name="instructions",
                                            step=lambda attempt: f"instructions:{attempt}")
        except NoUsableAnswer as err:
            return Proposal(failure=(err.reason, err.detail), attempts=err.attempts)
        except RequestRefused as err:
            return Proposal(refused=err)  # raised by this unit alone, as a refusal of its own
        return Proposal(answer.value, answer.completion, answer.attempts,
                        few_shot={"human": len(examples) - from_machine, "machine": from_machine})

    def _judge(self, text: str, pool: RougePool) -> Verdict:
        c = self.cfg
        n = len(words(text))
        if n < c.min_words:
            return Verdict(text, "too_short", f"{n} words, fewer than min_words {c.min_words}", 0.0)
        if n > c.max_words:
            return Verdict(text, "too_long", f"{n} words, more than max_words {c.max_words}", 0.0)
        if self.blocked is not None and (found := self.blocked.search(text)):
            return Verdict(text, "unsuitable", f"mentions {found.group(0)!r}, which a language model cannot "
                                               "act on (blocked_words)", 0.0)
        if text.lower().startswith("write a program"):
            return Verdict(text, "unsuitable", "'Write a program' leaves unclear whether to write or run it", 0.0)
        if not text[0].isascii() or not text[0].isalnum():
            return Verdict(text, "bad_start", f"starts with {text[0]!r}, not a letter or digit", 0.0)
        score, nearest = pool.nearest(text)
        if score >= c.max_similarity:
            return Verdict(text, "too_similar", f"ROUGE-L {score:.2f} with {nearest!r} "
                                                f"(max_similarity {c.max_similarity})", score)
        return Verdict(text, None, "", score)

    # -- a unit: its instructions' verdicts, and instances for those accepted -----------

    async def run_unit(self, unit: int, asker: Asker) -> list[Record | Rejection]:
        self._asker = asker
        r = self._round_of(unit)
        settled = await self.rounds.get(r)
        proposal = settled.proposals[unit]
        if proposal.refused is not None:
            raise proposal.refused
        samples = self._samples(unit)
        meta = {"task": self.name, "seed": self.seeds.values(unit), "round": r,
                "templates": {role: {"name": t.name, "sha256": t.short_hash} for role, t in self.templates.items()}}
        if proposal.failure is not None:
            reason, detail = proposal.failure
            return [self._reject(i, reason, f"{proposal.attempts} attempts: {detail}", meta) for i in samples]
        completion = proposal.completion
        share = len(settled.verdicts[unit]) or 1
        meta |= {"few_shot": proposal.few_shot, "teacher_model": completion.model}
        proposal_usage = {"prompt_tokens": completion.prompt_tokens / share,
                          "completion_tokens": completion.completion_tokens / share}
        jobs = []
        for position, sample in enumerate(samples):
            if position >= len(settled.verdicts[unit]):
                jobs.append(_done(self._reject(sample, "too_few_instructions",
                                               f"the teacher wrote {len(proposal.instructions)} of {self.k}", meta)))
                continue
            verdict = settled.verdicts[unit][position]
            item_meta = {**meta, "instruction": verdict.instruction, "nearest_rouge_l": round(verdict.nearest, 4),
                         "usage": dict(proposal_usage)}
            if verdict.reason is not None:
                jobs.append(_done(self._reject(sample, verdict.reason, verdict.detail, item_meta,
                                               [{"role": "user", "content": verdict.instruction}])))
            else:
                jobs.append(self._instances(unit, sample, position, verdict.instruction, item_meta, asker))
        return list(await asyncio.gather(*jobs))

    async def _instances(self, unit: int, sample: int, position: int, instruction: str, meta: dict,
                         asker: Asker) -> Record | Rejection:
        usage = meta["usage"]

        def counted(use):
            def inner(completion: Completion, attempt: int):
                usage["prompt_tokens"] += completion.prompt_tokens
                usage["completion_tokens"] += completion.completion_tokens
                return use(completion, attempt)
            return inner

        def is_classification(completion: Completion, attempt: int) -> bool:
            found = _YES_NO.search(completion.text)
            if not found:
                raise Unusable("unparseable", f"expected Yes or No, got {completion.text[:60]!r}")
            return found.group(1).lower() == "yes"

        try:
            classification = (await ask_until_usable(
                asker, self._classify_prompt(unit, instruction), counted(is_classification), unit=unit,
                pipeline_seed=self.pipeline_seed, max_attempts=self.cfg.max_attempts, schema_name="classify",
                step=lambda attempt: f"classify:{position}:{attempt}")).value
            meta["is_classification"] = classification
            instances = (await ask_until_usable(
                asker, self._instances_prompt(unit, instruction, classification), counted(_instances), unit=unit,
                pipeline_seed=self.pipeline_seed, max_attempts=self.cfg.max_attempts,
                schema=self._instances_schema(classification), schema_name="instances",
                step=lambda attempt: f"instances:{position}:{attempt}")).value
        except NoUsableAnswer as err:
            return self._reject(sample, err.reason, f"{err.attempts} attempts: {err.detail}", meta,
                                [{"role": "user", "content": instruction}])
        first = instances[0]
        prompt = instruction + (f"\n\n{first['input']}" if first["input"] else "")
        messages = [{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else []
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": first["output"]}]
        return Record(record_id(self.pipeline_name, self.name, sample), messages,
                      {**meta, "instances": instances, "sample_index": sample})

    def _reject(self, sample: int, reason: str, detail: str, meta: dict,
                messages: list[dict[str, str]] | None = None) -> Rejection:
        return Rejection(record_id(self.pipeline_name, self.name, sample), "generate", reason, detail,
                         messages=messages, metadata={**meta, "sample_index": sample})


def _instances(completion: Completion, attempt: int) -> list[dict[str, str]]:
    """The answer's instances after the paper's instance filters: no empty output, no exact
    repeat, no input given two different outputs. Raises Unusable when none is left."""
    try:
        value = extract_json(completion.text)
    except JSONNotFound as err:
        reason = "truncated" if completion.finish_reason == "length" else "unparseable"
        raise Unusable(reason, str(err)) from err
    items = value.get("instances") if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise Unusable("unparseable", "JSON has no 'instances' list")
    seen: dict[str, str] = {}
    conflicting: set[str] = set()
    kept = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("output"), str) or not item["output"].strip():
            continue
        given = item.get("input") if isinstance(item.get("input"), str) else ""
        pair = {"input": given.strip(), "output": item["output"].strip()}
        if pair["input"] in seen:
            if seen[pair["input"]] != pair["output"]:
                conflicting.add(pair["input"])
            continue
        seen[pair["input"]] = pair["output"]
        kept.append(pair)
    # An empty input may have several outputs (an open task); a real input must have one.
    kept = [p for p in kept if not (p["input"] and p["input"] in conflicting)]
    if not kept:
        raise Unusable("no_valid_instance", "no instance with an output (and one output per input)")
    return kept


async def _done(value):
    return value
