"""In-process generation with a small instruct model: the embedded default teacher.

Requests that arrive together are generated together (see batching.py): up to
`batch_size` pending requests are left-padded into one batch for `generate`.
There is no constrained decoding here, so schemas go into the prompt and answers are
read by the tolerant JSON parser.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory.core import hub
from factory.config.pipeline import TeacherConfig
from factory.core.errors import OutOfMemory, TeacherError
from factory.core.structured import with_schema_instructions
from factory.teachers.base import Completion, Request
from factory.teachers.in_process.batching import BatchingTeacher
from factory.teachers.in_process.shared_models import Loaded, shared


@dataclass
class _Model:
    tokenizer: Any
    model: Any
    device: str


class TransformersTeacher(BatchingTeacher):
    backend = "transformers"

    def __init__(self, config: TeacherConfig):
        super().__init__(config, config.batch_size)
        self._loaded: Loaded | None = None
        self.device = "cpu"

    def _load(self) -> None:
        name = self.config.model
        local = Path(os.path.expanduser(name))
        source = str(local) if local.exists() else name
        self._loaded = shared((self.backend, source, self.config.dtype, self.config.device),
                              lambda: self._load_model(name, source))
        self.device = self._loaded.value.device

    def _load_model(self, name: str, source: str) -> _Model:
        if not hub.obtainable(name):
            raise TeacherError(
                f"cannot load model {name!r}: the Hugging Face Hub is out of reach and the model is not in the local "
                "cache; set teacher.model to a local folder, or use a server with "
                "--set teacher.backend=openai --set teacher.base_url=URL (or see the whole flow for free with "
                "`factory run PIPELINE --dry-run`)"
            )
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as err:
            raise TeacherError(f"the transformers backend needs torch and transformers ({err.name} is missing)") from err
        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
            dtype = "auto" if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        except (OSError, ValueError) as err:
            raise TeacherError(f"cannot load model {name!r}: {' '.join(str(err).split())[:300]}") from err
        device = self.config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model.to(device).eval()
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not getattr(tokenizer, "chat_template", None):
            raise TeacherError(f"model {name!r} has no chat template; pick an instruct/chat model")
        return _Model(tokenizer, model, device)

    async def close(self) -> None:
        await super().close()
        self._loaded = None  # the last teacher on the model lets it go

    def _prompt(self, request: Request, tok) -> str:
        if request.prompt is not None:
            return request.prompt  # raw text: the caller wrote the template's tokens itself
        messages = request.messages
        if request.schema is not None:
            messages = with_schema_instructions(messages, request.schema)
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _generate(self, requests: list[Request]) -> list[Completion]:
        # A shared model (and its tokenizer, which is not safe across threads) serves one
        # teacher's batch at a time.
        loaded = self._loaded  # held through the batch, even if the teacher closes meanwhile
        with loaded.turn:
            return self._generate_batch(requests, loaded.value.tokenizer, loaded.value.model)

    def _generate_batch(self, requests: list[Request], tok, lm) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList

        s = self.config.sampling
        texts = [self._prompt(r, tok) for r in requests]
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        # Greedy decoding of what SeededSampling chose: each row samples from its own
        # generator, seeded by its request, so a request's answer does not depend on the
        # batch it landed in (its size, its neighbours, a split after running out of memory).
        kwargs: dict[str, Any] = {"max_new_tokens": s.max_tokens, "pad_token_id": tok.pad_token_id,
                                  "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if s.temperature > 0:
            seeds = [r.seed if r.seed is not None else _request_hash(r) for r in requests]
            kwargs["logits_processor"] = LogitsProcessorList([SeededSampling(seeds, s.temperature, s.top_p)])
        try:
            with torch.inference_mode():
                out = lm.generate(**enc, **kwargs)
        except torch.OutOfMemoryError as err:
            enc = None  # drop the batch's tensors before freeing the cache
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            raise OutOfMemory(f"out of memory generating a batch of {len(requests)} on {self.device}") from err
        new = out[:, enc["input_ids"].shape[1]:]
        eos = {tok.eos_token_id, *(_as_list(getattr(lm.generation_config, "eos_token_id", None)))}
        results = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = row.tolist()
            length = next((i for i, t in enumerate(ids) if t in eos), None)
            finish = "stop" if length is not None else "length"
            ids = ids[:length] if length is not None else ids
            text = tok.decode(ids, skip_special_tokens=True)
            results.append(Completion(text, finish, int(mask.sum()), len(ids), self.model))
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "device": self.device,
                "batch_size": self.config.batch_size, "batching": self.batching()}



class SeededSampling:
    """A logits processor that samples each row (temperature, then top-p) with the row's
    own torch.Generator and leaves only the chosen token, for greedy decoding to take."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        import torch

        self.torch = torch
        self.generators = [torch.Generator().manual_seed(seed % 2**63) for seed in seeds]
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids, scores):
        torch = self.torch
        probs = torch.softmax(scores.float().cpu() / self.temperature, dim=-1)
        ordered, order = probs.sort(dim=-1, descending=True)
        # Top-p: the smallest head of the ordering whose mass reaches top_p (at least one token).
        outside = ordered.cumsum(dim=-1) - ordered >= self.top_p
        ordered = ordered.masked_fill(outside, 0.0)
        chosen = torch.empty(len(self.generators), dtype=torch.long)
        for row, generator in enumerate(self.generators):
            pick = torch.multinomial(ordered[row], 1, generator=generator)
            chosen[row] = order[row, pick]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(chosen)), chosen.to(scores.device)] = 0.0
        return out


def _request_hash(request: Request) -> int:
    import hashlib
    import json

    text = json.dumps(request.messages, sort_keys=True, ensure_ascii=False)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
