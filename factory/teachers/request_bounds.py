"""Bounds on HTTP teachers: how long one request may take, how large its answer may
be, and how many may be open at once.

All three follow from what the pipeline says and the process allows, so no caller
sees a missing number: a request's time and size from `sampling.max_tokens` (the
longest honest answer), the open connections from the open-file limit.
"""

from __future__ import annotations

import sys

from factory.core import constants
from factory.config.backends import BACKENDS
from factory.config.pipeline import TeacherConfig

try:
    import resource
except ImportError:  # Windows: no rlimits to read or raise
    resource = None

_raised = False


def request_timeout(config: TeacherConfig) -> float:
    """Seconds one attempt may take, from sending to the last byte of the answer.

    `teacher.timeout` when set; otherwise STALL_BASE_S + max_tokens / MIN_DECODE_TOKENS_PER_S
    (constants.py says why), so a small max_tokens finds a stalled server sooner.
    """
    if config.timeout is not None:
        return float(config.timeout)
    return constants.STALL_BASE_S + config.sampling.max_tokens / constants.MIN_DECODE_TOKENS_PER_S


def answer_byte_cap(max_tokens: int) -> int:
    """Bytes of answer body read at most before the answer is `oversized`."""
    return max(constants.OVERSIZE_MIN_BYTES, max_tokens * constants.OVERSIZE_BYTES_PER_TOKEN)


def answer_token_cap(max_tokens: int) -> int:
    """Completion tokens (the server's own count) beyond which an answer is `oversized`."""
    return max(constants.OVERSIZE_MIN_TOKENS, max_tokens * constants.OVERSIZE_TOKEN_FACTOR)


def open_file_limit() -> int | None:
    """The process's open-file limit, raised to its hard limit first (once); None if unknown."""
    global _raised
    if resource is None:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if not _raised and soft != hard:
        _raised = True
        try:
            # macOS reports an infinite hard limit but refuses a soft one above its own
            # maximum: the attempt fails and the soft limit stays, which is fine.
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def fd_cap(share: int = 1) -> int:
    """Connections that `share` endpoints may each hold open, within the open-file limit.

    One connection (a file descriptor) per request in flight, kept alive between
    requests; FD_RESERVE of the limit (at most half of it) stays free for the run
    store, logs and models. Huge windows are not refused, they are capped here.
    """
    limit = open_file_limit()
    if limit is None:
        return sys.maxsize  # no limit known, none imposed
    usable = limit - min(constants.FD_RESERVE, limit // 2)
    return max(constants.MIN_CONCURRENCY, usable // max(1, share))


def capped_window(config: TeacherConfig, wanted: int) -> tuple[int, str | None]:
    """The in-flight window for `wanted`, and a note when the open-file limit capped it.

    Only HTTP teachers hold a socket per request; in-process ones are not capped.
    """
    if not BACKENDS[config.backend].http or config.mode == "batch":
        return wanted, None  # a batch request waits in memory, holding no socket
    cap = fd_cap()
    if wanted <= cap:
        return wanted, None
    return cap, f"{wanted} capped to {cap} by the open-file limit ({open_file_limit()})"
