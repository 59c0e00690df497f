"""Teacher backends behind one small interface; heavy libraries load only when chosen."""

from __future__ import annotations

from typing import Callable

from factory.config.pipeline import TeacherConfig
from factory.teachers.base import Completion, Request, Teacher


def make_teacher(config: TeacherConfig, on_response: Callable[..., None] | None = None,
                 store=None, stop=None) -> Teacher:
    """`on_response(status, headers)` sees every HTTP response (HTTP backends). Batch mode
    keeps its batches in the run `store` and submits nothing once `stop` is requested."""
    if config.mode == "batch":
        from factory.teachers.batch.batch_teacher import BatchTeacher

        if store is None:
            raise ValueError("batch mode keeps its batches in the run store: pass store")
        return BatchTeacher(config, store, stop)
    if config.backend == "anthropic":
        from factory.teachers.anthropic_teacher import AnthropicTeacher

        return AnthropicTeacher(config, on_response=on_response)
    if config.backend == "openai" and isinstance(config.base_url, list):
        from factory.teachers.pool import EndpointPool

        return EndpointPool(config, on_response=on_response)
    if config.backend == "openai":
        from factory.teachers.openai_teacher import OpenAITeacher

        return OpenAITeacher(config, on_response=on_response)
    if config.backend == "vllm":
        from factory.teachers.in_process.vllm_teacher import VLLMTeacher

        return VLLMTeacher(config)
    from factory.teachers.in_process.transformers_teacher import TransformersTeacher

    return TransformersTeacher(config)


__all__ = ["Completion", "Request", "Teacher", "make_teacher"]
