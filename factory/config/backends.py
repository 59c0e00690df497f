"""The teacher backends: one table, the one place a backend is added.

`teacher.backend`'s allowed values, `make_teacher` (factory/teachers/), batch mode's
provider and limits, and the dataset card's words for the teacher all come from here.
A backend is a module with a Teacher class (factory/teachers/) and one line below.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchAPI:
    """A provider's batch API, for `teacher.mode: batch`."""

    provider: str  # "module:Class" of its BatchProvider (factory/teachers/batch/)
    max_requests: int  # the provider's limits on one batch (OpenAI: of its input file)
    max_bytes: int
    card: str  # the dataset card: "`model` through {card}"


@dataclass(frozen=True)
class Backend:
    teacher: str  # "module:Class" of its Teacher, built with the TeacherConfig
    card: str  # the dataset card: "`model` through {card}"
    # Talks HTTP: its Teacher takes on_response (rate-limit headers, 429s), and holds a
    # socket per request in flight.
    http: bool = False
    # "module:Class" of the Teacher for a list of base_url (replicas), and the card's
    # words for them ("{n}": how many).
    replicas: str | None = None
    replicas_card: str = ""
    batch: BatchAPI | None = None


BACKENDS: dict[str, Backend] = {
    "openai": Backend("factory.teachers.openai_teacher:OpenAITeacher", "an OpenAI-compatible API", http=True,
                      replicas="factory.teachers.pool:EndpointPool", replicas_card="{n} OpenAI-compatible endpoints",
                      batch=BatchAPI("factory.teachers.batch.openai_batches:OpenAIBatches", 50_000, 200 * 1024 * 1024,
                                     "the OpenAI Batch API")),
    "anthropic": Backend("factory.teachers.anthropic_teacher:AnthropicTeacher", "Anthropic's Messages API", http=True,
                         batch=BatchAPI("factory.teachers.batch.anthropic_batches:AnthropicBatches", 100_000,
                                        256 * 1024 * 1024, "Anthropic's Message Batches")),
    "transformers": Backend("factory.teachers.in_process.transformers_teacher:TransformersTeacher",
                            "transformers, in process"),
    "vllm": Backend("factory.teachers.in_process.vllm_teacher:VLLMTeacher", "vLLM, in process"),
}
BATCH_BACKENDS = {name: b.batch for name, b in BACKENDS.items() if b.batch is not None}

