"""What about a teacher decides its answers: the one place both identities are made.

Two forms exist because they key two different things, and each must stay byte-stable
(changing either would make every stored run look stale):
- `request_identity`, part of every journal key (factory/engine/engine.py): the model
  the teacher actually serves and the sampling it sends, versioned by KEY_VERSION;
- `teacher_identity`, part of the generation fingerprint and shown in run.json: the
  configured settings that change answers, backend and dtype included (an in-process
  model in another dtype answers differently), but not where it is served or how fast.
"""

from __future__ import annotations

from typing import Any

KEY_VERSION = 2  # bump when what a request key covers changes: every stored answer goes stale


def teacher_identity(config: Any) -> dict[str, Any]:
    """The teacher settings that change answers (not where it is served or how fast)."""
    identity = {"backend": config.backend, "model": config.model, "sampling": config.sampling.model_dump(),
                "structured_output": config.structured_output, "send_seed": config.send_seed, "dtype": config.dtype}
    return _with_extra_body(identity, config)


def request_identity(teacher: Any) -> dict[str, Any]:
    """What, besides the request itself, decides an answer: part of every request key."""
    config = getattr(teacher, "config", None)
    sampling = config.sampling.model_dump(exclude_none=True) if config is not None else {}
    identity = {"v": KEY_VERSION, "model": teacher.model, "sampling": sampling,
                "structured": getattr(config, "structured_output", None)}
    return _with_extra_body(identity, config)


def _with_extra_body(identity: dict[str, Any], config: Any) -> dict[str, Any]:
    # top_k, min_p, a template switch ... change answers; absent when empty, so keys and
    # fingerprints made before extra_body existed stay current.
    extra = getattr(config, "extra_body", None)
    if extra:
        identity["extra_body"] = extra
    return identity
