"""The project's own OpenAI-compatible teacher on loopback."""

from factory.loopback.server import (
    EXTRA_FAULT_KINDS,
    FAULT_KINDS,
    LoopbackOptions,
    LoopbackTeacher,
    body_key,
    serve_in_thread,
    start,
)

__all__ = ["EXTRA_FAULT_KINDS", "FAULT_KINDS", "LoopbackOptions", "LoopbackTeacher", "body_key", "serve_in_thread",
           "start"]
