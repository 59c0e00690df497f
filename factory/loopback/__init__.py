"""The project's own OpenAI-compatible teacher on loopback."""

from factory.loopback.server import FAULT_KINDS, LoopbackOptions, LoopbackTeacher, body_key, serve_in_thread, start

__all__ = ["FAULT_KINDS", "LoopbackOptions", "LoopbackTeacher", "body_key", "serve_in_thread", "start"]
