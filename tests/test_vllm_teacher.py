"""backend: vllm. The translation is pure and tested here; the engine path runs against a
stand-in `vllm` package the test writes (same entry points: LLM.chat, SamplingParams,
StructuredOutputsParams), and against real vLLM only where it and a GPU exist."""

from __future__ import annotations

import json
import textwrap

import pytest

from factory.config.pipeline import TeacherConfig
from factory.teachers.base import Request
from factory.teachers.in_process.vllm_teacher import engine_kwargs, sampling_kwargs
from tests.helpers.datafiles import read_jsonl
from tests.helpers.pipelines import dialogue_pipeline, exchanges, write_pipeline
from tests.helpers.processes import factory_cli

STAND_IN = '''
"""A stand-in for vLLM's offline API, written by the test: answers like the loopback teacher."""
import json, os
from factory.loopback.content import answer, complete_text


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _log({"engine": {k: v for k, v in kwargs.items()}})

    def chat(self, conversations, sampling_params, use_tqdm=True):
        _log({"batch": len(conversations),
              "structured": [type(p.kwargs.get("structured_outputs")).__name__ for p in sampling_params]})
        outs = []
        for messages, params in zip(conversations, sampling_params):
            so = params.kwargs.get("structured_outputs")
            text = answer(messages, params.kwargs.get("seed"), so.json if so else None)
            outs.append(_Out(list(range(len(str(messages)) // 4)), [_Gen(text, list(range(len(text) // 4)), "stop")]))
        return outs


    def generate(self, prompts, sampling_params, use_tqdm=True):
        _log({"raw_batch": len(prompts)})
        outs = []
        for prompt, params in zip(prompts, sampling_params):
            text = complete_text("".join(map(chr, prompt["prompt_token_ids"])), params.kwargs.get("seed"))
            outs.append(_Out(prompt["prompt_token_ids"], [_Gen(text, list(range(len(text) // 4)), "stop")]))
        return outs

    def get_tokenizer(self):
        return _Tokenizer()


class _Tokenizer:
    def encode(self, text, add_special_tokens=True):
        _log({"add_special_tokens": add_special_tokens})
        return [ord(c) for c in text]


class _Out:
    def __init__(self, prompt_token_ids, outputs):
        self.prompt_token_ids, self.outputs = prompt_token_ids, outputs


class _Gen:
    def __init__(self, text, token_ids, finish_reason):
        self.text, self.token_ids, self.finish_reason = text, token_ids, finish_reason


def _log(row):
    with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
        f.write(json.dumps(row) + "\\n")
'''


def test_sampling_translation():
    config = TeacherConfig(backend="vllm", model="m", sampling={"temperature": 0.3, "top_p": 0.8, "max_tokens": 99,
                                                                "stop": ["###"]})
    schema = {"type": "object"}
    assert sampling_kwargs(config, Request([{"role": "user", "content": "hi"}], schema, "x", seed=42)) == {
        "temperature": 0.3, "top_p": 0.8, "max_tokens": 99, "stop": ["###"], "seed": 42,
        "structured_outputs": {"json": schema}}
    config.send_seed = False
    assert "seed" not in sampling_kwargs(config, Request([], None, "x", seed=42))


def test_engine_translation():
    config = TeacherConfig(backend="vllm", model="Qwen/Qwen2.5-7B-Instruct", dtype="bfloat16",
                           vllm={"tensor_parallel_size": 4, "gpu_memory_utilization": 0.9, "max_model_len": 4096})
    assert engine_kwargs(config) == {"model": "Qwen/Qwen2.5-7B-Instruct", "tensor_parallel_size": 4,
                                     "dtype": "bfloat16", "gpu_memory_utilization": 0.9, "max_model_len": 4096}


def stand_in(tmp_path):
    pkg = tmp_path / "site" / "vllm"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(STAND_IN)
    (pkg / "sampling_params.py").write_text(textwrap.dedent('''
        class StructuredOutputsParams:
            def __init__(self, json=None):
                self.json = json
    '''))
    log = tmp_path / "vllm-log.jsonl"
    return {"PYTHONPATH": str(tmp_path / "site"), "FAKE_VLLM_LOG": str(log)}, log


def test_requests_reach_the_engine_in_large_batches_with_constrained_decoding(tmp_path):
    env, log = stand_in(tmp_path)
    path = write_pipeline(tmp_path, generate__count=200, generate__pairs_per_request=1)
    args = ["run", str(path), "--quiet", "--set", "teacher.backend=vllm", "--set", "teacher.base_url=null"]
    result = factory_cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out" / "data.jsonl")) == 200
    rows = read_jsonl(log)
    batches = [r["batch"] for r in rows if "batch" in r]
    assert sum(batches) == 200 and max(batches) >= 50, batches  # not one request at a time
    assert {s for r in rows if "batch" in r for s in r["structured"]} == {"StructuredOutputsParams"}
    # A rerun replays everything from the journal: the engine is loaded, nothing is generated.
    assert factory_cli(*args, env=env).returncode == 0
    assert sum(r["batch"] for r in read_jsonl(log) if "batch" in r) == 200


def test_dialogues_on_the_offline_engine(tmp_path):
    env, log = stand_in(tmp_path)
    path = dialogue_pipeline(tmp_path, "http://127.0.0.1:9/v1", {"count": 10, "turns": 3, "end_marker": None},
                             filters=[])
    result = factory_cli("run", str(path), "--quiet", "--set", "teacher.backend=vllm", env=env)
    assert result.returncode == 0, result.stderr
    rows = read_jsonl(tmp_path / "out" / "data.jsonl")
    assert len(rows) == 10 and all(len(exchanges(r["messages"])) == 3 for r in rows)
    batches = [r["batch"] for r in read_jsonl(log) if "batch" in r]
    assert sum(batches) == 60 and max(batches) == 10  # each turn of all ten conversations together


def test_magpie_queries_are_raw_completions_of_the_offline_engine(tmp_path):
    from tests.helpers.instruction_pipelines import magpie_pipeline

    env, log = stand_in(tmp_path)
    path = magpie_pipeline(tmp_path, "unused", {"backend": "vllm", "base_url": None}, count=20)
    result = factory_cli("run", str(path), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    kept = read_jsonl(tmp_path / "out" / "data.jsonl")
    rows = read_jsonl(log)
    assert sum(r["raw_batch"] for r in rows if "raw_batch" in r) == 20  # the queries, as raw text
    assert sum(r["batch"] for r in rows if "batch" in r) == len(kept)  # the answers, through chat
    # The prompt carries its template's own special tokens: none are added to it.
    assert {r["add_special_tokens"] for r in rows if "add_special_tokens" in r} == {False}


def test_without_vllm_one_line_says_how_to_install(tmp_path):
    path = write_pipeline(tmp_path, generate__count=2)
    result = factory_cli("run", str(path), "--quiet", "--set", "teacher.backend=vllm")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["factory: error: the vllm backend needs vLLM and a GPU: "
                                                  "pip install 'factory[vllm]'"]
    assert not (tmp_path / "out").exists()


def _real_vllm_and_gpu() -> str | None:
    try:
        import torch
        import vllm  # noqa: F401
    except ImportError:
        return "vLLM is not installed (pip install 'factory[vllm]')"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


@pytest.mark.skipif(_real_vllm_and_gpu() is not None, reason=str(_real_vllm_and_gpu()))
def test_real_vllm_end_to_end(tmp_path):
    import os

    model = os.environ.get("FACTORY_VLLM_TEST_MODEL", "Qwen/Qwen2.5-0.5B-Instruct")
    path = write_pipeline(tmp_path, generate__count=8)
    result = factory_cli("run", str(path), "--quiet", "--set", "teacher.backend=vllm", "--set", f"teacher.model={model}",
                         "--set", "teacher.vllm.gpu_memory_utilization=0.5", timeout=1200)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "out" / "run.json").read_text())["funnel"]["kept"] > 0
