"""The dataset card: Hub YAML metadata, then how the data was made and how to use it."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import yaml

from factory.config.backends import BACKENDS
from factory.config.formats import FORMATS
from factory.config.sizing import Sizing
from factory.config.tasks import TASKS, TaskKind
from factory.core.cost import token_summary



def _task_kind(task: str) -> TaskKind:
    # A task no longer listed (an old run folder) gets the plain words.
    return TASKS.get(task) or TaskKind(Sizing, "")


def size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M")]
    for bound, label in bounds:
        if n < bound:
            return label
    return "10M<n<100M"


@dataclass(frozen=True)
class Place:
    """Where the card lives: what its `configs` point at and how its snippet loads the data."""

    configs: list[dict[str, Any]]
    load: str  # the Python lines that load the kept records as `ds`


def local_place(folder: str, formats: list[str]) -> Place:
    """A run folder: `load_dataset(folder)` reads the card's `configs`, which name the
    kept records only (never rejected.jsonl or the training formats beside them)."""
    if "parquet" in formats:
        files = "data.parquet"
    elif "jsonl" in formats:
        files = "data.jsonl"
    else:
        files = "dataset/*.arrow"  # save_to_disk's shards
    configs = [{"config_name": "default", "data_files": [{"split": "train", "path": files}]}]
    load = (f"from datasets import load_dataset\n"
            f"ds = load_dataset({folder!r}, split=\"train\")  # this folder; or load_from_disk({folder + '/dataset'!r})")
    return Place(configs, load)


def hub_place(repo_id: str, config_name: str, splits: list[str]) -> Place:
    configs = [{"config_name": config_name,
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}]
    load = f"from datasets import load_dataset\nds = load_dataset({repo_id!r}, split={splits[0]!r})"
    return Place(configs, load)


def render_card(info: dict[str, Any], examples: list[dict], place: Place) -> str:
    cfg = info["config"]
    out = cfg["output"]
    task = cfg["generate"]["task"]
    kept = info["funnel"]["kept"]
    header: dict[str, Any] = {
        "license": out["license"],
        "language": out["language"],
        "task_categories": list(_task_kind(task).categories),
        "size_categories": [size_category(kept)],
        "tags": sorted({"factory", *out.get("tags", []), *(() if "input" in info else ("synthetic", task)),
                        *(("dpo",) if task == "preference" else ())}),
        "pretty_name": out.get("pretty_name") or cfg["name"],
    }
    header["configs"] = place.configs
    name = header["pretty_name"]
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# {name}",
        "",
        _description(info, cfg, task),
        "",
        "## How it was made",
        "",
        *(_filtered_from(info) if "input" in info else _generated_by(info, cfg, task)),
        "- **Filters**: " + ("; ".join(_filter(f) for f in cfg["filters"]) or "none") + ".",
        f"- **Made with**: factory {info['versions'].get('factory')} on {info['finished_at']}.",
        "",
        "## Funnel",
        "",
        "| stage | seen | kept | dropped |",
        "| --- | --- | --- | --- |",
    ]
    for stage in info["funnel"]["stages"]:
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(stage["dropped"].items())) or "0"
        lines.append(f"| {stage['stage']} | {stage['seen']} | {stage['kept']} | {dropped} |")
    lines += [
        f"| **final** | | **{kept}** | |",
        "",
        "Every dropped sample is listed with its stage and reason in `rejected.jsonl`.",
        "",
        *_judge_scores(info),
        *_quota(info),
        *_personal_data(info),
        *_decontamination(info),
        *_diversity(info),
        *_reference(info),
        *_usage_and_cost(info),
        *(_pair_format(place) if task == "preference" else _messages_format(place)),
        *_other_files(out["formats"], task == "preference"),
    ]
    if examples:
        lines += ["## Examples", ""]
        for ex in examples[:3]:
            lines += ["```json", json.dumps(ex["messages"], ensure_ascii=False, indent=1)[:1500], "```", ""]
    lines += [
        "## Limitations",
        "",
        "- This data is synthetic: it carries the teacher model's errors, blind spots and biases, and it",
        "  has not been checked by people. A judge model's scores are one model's opinion, not ground truth.",
        "- Coverage follows the seed space above: topics, personas or documents not in it are not in the data.",
        "- The teacher's license and terms of use govern what its outputs may be used for (some providers",
        "  forbid training competing models on them); check them before you train or share.",
        "",
    ]
    return "\n".join(lines)


def _quota(info: dict) -> list[str]:
    """Requested versus kept per cell, when the run was sized with generate.keep."""
    quota = info.get("quota")
    if not quota:
        return []
    by = ", ".join(f"`{v}`" for v in quota["variables"]) or "none"
    lines = ["## Size and balance", "",
             f"The dataset was sized to exactly {quota['keep']:,} kept samples (`generate.keep`), balanced by {by},"
             f" in {quota['rounds']} generation round(s); samples over a quota were dropped as `surplus`.", "",
             "| cell | quota | requested | kept |", "| --- | --- | --- | --- |"]
    lines += [f"| {c['cell']} | {c['quota']} | {c['requested']} | {c['kept']} |" for c in quota["cells"]]
    return lines + [""]


def _description(info: dict, cfg: dict, task: str) -> str:
    if "input" in info:
        # A filter run made nothing new: the pipeline's description is of other data.
        source = info["input"]
        return (f"Records of `{source['path']}`, filtered with the filters of the factory pipeline "
                f"`{cfg['name']}`: {info['funnel']['kept']:,} of {source['rows']:,} kept.")
    return cfg.get("description") or f"Synthetic {task} data generated with factory from the pipeline `{cfg['name']}`."


def _judge_scores(info: dict) -> list[str]:
    """The judge's score distribution, when a judge stage ran."""
    for stage in info["funnel"]["stages"]:
        scores = stage.get("scores")
        if stage.get("stage") == "judge" and scores and scores.get("histogram"):
            rows = [f"| {bucket} | {count} |" for bucket, count in scores["histogram"].items()]
            return ["## Judge scores", "",
                    f"Mean {scores['mean']:.2f}, median {scores['median']:g} over {scores['count']} graded records"
                    f" (scale {scores['scale'][0]}-{scores['scale'][1]}).", "",
                    "| score | records |", "| --- | --- |", *rows, ""]
    return []


def _personal_data(info: dict) -> list[str]:
    """What the pii stage found, per kind, and what it did about it."""
    stage = next((s for s in info["funnel"]["stages"] if s.get("stage") == "pii" and "found" in s), None)
    if stage is None:
        return []
    did = ("each value found was replaced by a typed placeholder such as `[EMAIL]`" if stage["action"] == "redact"
           else "records holding any were dropped (listed, redacted, in `rejected.jsonl`)")
    lines = ["## Personal data", "",
             f"Checked for: {', '.join(stage['kinds'])}; {did}."]
    if stage["found"]:
        lines += ["", "| kind | found | records |", "| --- | --- | --- |",
                  *(f"| {kind} | {n} | {stage['records_with'].get(kind, 0)} |" for kind, n in stage["found"].items())]
    else:
        lines += ["", "None was found."]
    lines += ["", "Detection is automatic (patterns with checksums and validators"
              + (", and a named-entity model" if any(k in stage["kinds"] for k in ("name", "address")) else "")
              + "): it lowers the risk, it does not prove the data free of personal information.", ""]
    return lines


def _decontamination(info: dict) -> list[str]:
    """The benchmarks the records were checked against, and how many each removed."""
    stage = next((s for s in info["funnel"]["stages"] if s.get("stage") == "decontaminate" and "benchmarks" in s), None)
    if stage is None:
        return []
    rows = [f"| {b['name']} | {b['items']:,} | {b.get('ngram', '')} | {b.get('items_too_short', '')} | {b['dropped']} |"
            for b in stage["benchmarks"]]
    return ["## Decontamination", "",
            "Records sharing a run of n words (case, punctuation and spacing ignored) with an item of these",
            "benchmarks were dropped; items shorter than n were matched whole, and items too short to tell",
            "from ordinary prose were not checked.", "",
            "| benchmark | items | n | items not checked | records dropped |", "| --- | --- | --- | --- | --- |",
            *rows, ""]


def _diversity(info: dict) -> list[str]:
    """Which diversity selection ran; a clustered one with its agreement with the exact one."""
    stage = next((s for s in info["funnel"]["stages"] if s.get("stage") == "diversity" and s.get("selection")), None)
    if stage is None or stage["selection"] != "clustered":
        return []
    a = stage["agreement"]
    how = (f"The `{stage['method']}` selection ran within {stage['clusters']} k-means clusters of the embeddings, each"
           f" record also checked against its {stage['probes']} nearest other clusters.")
    if a["rate"] is None:
        return ["## Diversity selection", "", how + " Its agreement with the exact selection was not measured.", ""]
    return ["## Diversity selection", "",
            how + f" On a sample of {a['sample']:,} records, the exact single-process rule was met by {a['rate']:.2%}"
            f" (agreement): {a['wrongly_kept']} kept that it would drop, {a['wrongly_dropped']} dropped that it would"
            " keep.", ""]


def _reference(info: dict) -> list[str]:
    """How far the data is from the real data named by output.reference (factory/compare/)."""
    ref = info.get("reference")
    if not ref or "skipped" in ref:
        return []
    names = ("mauve", "precision", "recall", "density", "coverage")
    return ["## Compared with real data", "",
            (f"Measured against `{Path(ref['path']).name}` in sentence-embedding space (details in "
             f"`{ref['file']}` and the report):"), "",
            "| " + " | ".join(names) + " |", "|" + " --- |" * len(names),
            "| " + " | ".join(f"{ref[n]:.3f}" for n in names) + " |", "",
            "Topics over-represented here: " + ("; ".join(ref.get("over", [])) or "none")
            + ". Under-represented: " + ("; ".join(ref.get("under", [])) or "none") + ".", ""]


def _usage_and_cost(info: dict) -> list[str]:
    usage = info.get("usage")
    if not usage:
        return []
    lines = ["## Tokens and cost", "",
             f"The whole run, every teacher: {usage['requests']:,} requests paid"
             f"{_over_invocations(info)}, {usage['prompt_tokens']:,} prompt and "
             f"{usage['completion_tokens']:,} completion tokens."]
    for stage in info["funnel"]["stages"]:
        if stage.get("usage"):
            u = stage["usage"]
            lines.append(f"{stage['stage'].capitalize()}: {u['requests']:,} requests, {u['prompt_tokens']:,} prompt "
                         f"and {u['completion_tokens']:,} completion tokens.")
    cost = info.get("cost")
    if cost:
        price = cost.get("price_per_million") or {}
        lines += ["", f"**Cost**: {cost['total']:,.4f} {cost['currency']} in all"
                  + (f" at {price['input']:g} / {price['output']:g} {cost['currency']} per million input / output"
                     " tokens" if price else "")
                  + (f", less the batch discount of {cost['batch_discount']:.0%}" if cost.get("batch_discount") else "")
                  + (f" (cap: {cost['max_cost']:g})" if cost.get("max_cost") else "") + "."]
    return [*lines, ""]


def _over_invocations(info: dict) -> str:
    runs = len(info.get("invocations") or [])
    return f" over {runs} invocations (a resumed run)" if runs > 1 else ""


def _generated_by(info: dict, cfg: dict, task: str) -> list[str]:
    teacher = info["teacher"]
    usage = info["usage"]
    lines = [
        f"- **Task**: `{task}`; {info['funnel']['requested']:,} {_task_kind(task).what} requested.",
        f"- **Teacher**: {_teacher(teacher)}.",
        *(f"- **Teacher of the {role}**: {_teacher(t)}." for role, t in info.get("role_teachers", {}).items()),
        f"- **Sampling**: {_inline(info['sampling'])}.",
        f"- **Seed space**: {_seed_space(info['seed_space'])}; pipeline seed {cfg['seed']}.",
        "- **Templates**: " + ", ".join(f"`{t['name']}` (sha256 `{t['sha256']}`)" for t in info["templates"]) + ".",
        f"- **Tokens**: {token_summary(usage)} over {usage['requests']:,} requests.",
    ]
    return lines


def _teacher(teacher: dict) -> str:
    url = teacher.get("base_url")
    backend = BACKENDS.get(teacher.get("backend"))
    if backend is None:
        kind = teacher.get("backend")
    elif teacher.get("mode") == "batch":
        kind = backend.batch.card if backend.batch else teacher.get("backend")
    elif isinstance(url, list) and len(url) > 1 and backend.replicas_card:
        kind = backend.replicas_card.format(n=len(url))
    else:
        kind = backend.card
    return f"`{teacher.get('model')}` through {kind}"


METADATA_NOTE = ("one schema for the whole dataset: a field is null where a record lacks it, and JSON text "
                 "where its values differ in kind from record to record")


def _messages_format(place: Place) -> list[str]:
    return [
        "## Format",
        "",
        "Each row has `id` (stable across reruns), `messages` (a list of `{role, content}` in the",
        "OpenAI / TRL chat format) and `metadata` (a struct: seed values, templates, teacher, token usage,",
        f"filter verdicts; {METADATA_NOTE}).",
        "",
        "```python",
        *place.load.splitlines(),
        "print(ds[0][\"messages\"])",
        "```",
        "",
        "Fine-tune on it with TRL's SFT trainer, which reads the `messages` column and applies the",
        "student model's chat template:",
        "",
        "```python",
        "from trl import SFTConfig, SFTTrainer",
        "trainer = SFTTrainer(model=\"Qwen/Qwen2.5-0.5B\", train_dataset=ds.remove_columns([\"metadata\"]),",
        "                     args=SFTConfig(output_dir=\"student\"))",
        "trainer.train()",
        "```",
        "",
    ]


def _pair_format(place: Place) -> list[str]:
    return [
        "## Format",
        "",
        "Each row is a preference pair in TRL's explicit conversational form: `prompt` (the messages",
        "before the answer, `{role, content}`), `chosen` and `rejected` (one assistant message each),",
        "plus `id` and `metadata` (a struct: both answers' judge scores, the margin, models and",
        f"temperatures, the judge's rationale; {METADATA_NOTE}).",
        "",
        "```python",
        *place.load.splitlines(),
        "from trl import DPOConfig, DPOTrainer",
        "ds = ds.remove_columns([\"id\", \"metadata\"])",
        "trainer = DPOTrainer(model=\"Qwen/Qwen2.5-0.5B-Instruct\", train_dataset=ds,",
        "                     args=DPOConfig(output_dir=\"student\"))",
        "trainer.train()",
        "```",
        "",
    ]


def _other_files(formats: list[str], pairs: bool = False) -> list[str]:
    chosen = [FORMATS[f] for f in formats if FORMATS[f].module]  # jsonl and parquet have their own place
    lines = [f"- `{f.file}`: {f.pair_card_line if pairs and f.pair_card_line else f.card_line}" for f in chosen]
    return ["The same rows also come as:", "", *lines, ""] if lines else []


def _filtered_from(info: dict) -> list[str]:
    source = info["input"]
    return [f"- **Source**: `{source['path']}` ({source['rows']:,} rows), filtered with factory; "
            "no new samples were generated."]


def _filter(entry: dict) -> str:
    options = {k: v for k, v in entry.items() if k != "type"}
    return f"`{entry.get('type')}`" + (f" ({_inline(options)})" if options else "")


def _inline(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items() if v is not None)


def _seed_space(space: dict) -> str:
    parts = [f"`{name}` ({n} values)" for name, n in space["variables"].items()]
    return (", ".join(parts) or "no seed variables") + f", combined by {space['combine']}"
