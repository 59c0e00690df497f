"""vLLM's offline engine in this process (`backend: vllm`, the optional `vllm` extra).

Pending requests are handed to `LLM.chat` in large batches (up to
`teacher.vllm.max_batch`), so vLLM's own continuous batching and prefix caching
have plenty to schedule. Schemas go through vLLM's constrained decoding. The
translation from our request to vLLM's parameters is the pure `sampling_kwargs` and
`engine_kwargs`, tested without vLLM; the rest needs vLLM and a GPU.
"""

from __future__ import annotations

import json
from typing import Any

from factory.config.pipeline import TeacherConfig
from factory.core.errors import TeacherError
from factory.teachers.base import Completion, Request
from factory.teachers.in_process.batching import BatchingTeacher
from factory.teachers.in_process.shared_models import Loaded, shared

INSTALL_HINT = "the vllm backend needs vLLM and a GPU: pip install 'factory[vllm]'"


def engine_kwargs(config: TeacherConfig) -> dict[str, Any]:
    """Arguments for `vllm.LLM(...)`."""
    v = config.vllm
    out: dict[str, Any] = {"model": config.model, "tensor_parallel_size": v.tensor_parallel_size,
                           "dtype": config.dtype}
    if v.gpu_memory_utilization is not None:
        out["gpu_memory_utilization"] = v.gpu_memory_utilization
    if v.max_model_len is not None:
        out["max_model_len"] = v.max_model_len
    return out


def sampling_kwargs(config: TeacherConfig, request: Request) -> dict[str, Any]:
    """Arguments for `vllm.SamplingParams(...)` for one request; a schema becomes
    `structured_outputs: {"json": schema}` (made into vLLM's own object by the caller)."""
    s = config.sampling
    out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    for name in ("stop", "presence_penalty", "frequency_penalty"):
        if getattr(s, name) is not None:
            out[name] = getattr(s, name)
    if request.seed is not None and config.send_seed:
        out["seed"] = request.seed
    if request.schema is not None:
        out["structured_outputs"] = {"json": request.schema}
    return out


def make_sampling_params(vllm, kwargs: dict[str, Any]):
    """SamplingParams from `sampling_kwargs`, for vLLM >= 0.12 (structured_outputs) and
    older releases (guided_decoding)."""
    kwargs = dict(kwargs)
    structured = kwargs.pop("structured_outputs", None)
    if structured is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
        except ImportError:
            from vllm.sampling_params import GuidedDecodingParams

            kwargs["guided_decoding"] = GuidedDecodingParams(**structured)
    return vllm.SamplingParams(**kwargs)


class VLLMTeacher(BatchingTeacher):
    backend = "vllm"

    def __init__(self, config: TeacherConfig):
        super().__init__(config, config.vllm.max_batch)
        self._loaded: Loaded | None = None
        self._vllm = None

    def _load(self) -> None:
        try:
            import vllm
        except ImportError:
            raise TeacherError(INSTALL_HINT) from None
        self._vllm = vllm
        kwargs = engine_kwargs(self.config)
        # One engine per model and settings in this process: a second would not fit beside it.
        self._loaded = shared((self.backend, json.dumps(kwargs, sort_keys=True)), lambda: self._start(vllm, kwargs))

    def _start(self, vllm, kwargs: dict[str, Any]):
        try:
            return vllm.LLM(**kwargs)
        except Exception as err:  # CUDA, memory, unknown model: vLLM raises many kinds
            raise TeacherError(f"vLLM could not start {self.model!r}: {' '.join(str(err).split())[:300]}") from err

    async def close(self) -> None:
        await super().close()
        self._loaded = None  # the last teacher on the engine lets it go

    def _generate(self, requests: list[Request]) -> list[Completion]:
        loaded = self._loaded
        with loaded.turn:  # the engine is shared (shared_models.py): one teacher's batch at a time
            return self._generate_batch(requests, loaded.value)

    def _generate_batch(self, requests: list[Request], llm) -> list[Completion]:
        params = [make_sampling_params(self._vllm, sampling_kwargs(self.config, r)) for r in requests]
        # Chat requests go through the model's chat template, raw-text ones (`prompt`) as they are.
        chat = [i for i, r in enumerate(requests) if r.prompt is None]
        raw = [i for i, r in enumerate(requests) if r.prompt is not None]
        outputs: list = [None] * len(requests)
        if chat:
            done = llm.chat([requests[i].messages for i in chat], sampling_params=[params[i] for i in chat],
                                  use_tqdm=False)
            for i, out in zip(chat, done):
                outputs[i] = out
        if raw:
            # Tokenized here without special tokens: the prompt already holds the template's
            # own (a BOS among them), which vLLM's tokenizing would add a second time.
            tokenizer = llm.get_tokenizer()
            prompts = [{"prompt_token_ids": tokenizer.encode(requests[i].prompt, add_special_tokens=False)}
                       for i in raw]
            done = llm.generate(prompts, sampling_params=[params[i] for i in raw], use_tqdm=False)
            for i, out in zip(raw, done):
                outputs[i] = out
        results = []
        for out in outputs:
            best = out.outputs[0]
            finish = best.finish_reason or "unknown"
            results.append(Completion(best.text, finish, len(out.prompt_token_ids or ()), len(best.token_ids),
                                      self.model))
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, **engine_kwargs(self.config),
                "batching": self.batching()}
