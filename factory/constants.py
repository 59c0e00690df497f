"""Tunable numbers, in one place."""

from pathlib import Path

# The openai backend's default in-flight window. vLLM schedules up to 256 (older) or
# 1024 (newer) sequences at once and queues the rest itself, so 512 keeps any single
# server saturated; the adaptive window shrinks it on 429 for rate-limited APIs.
DEFAULT_MAX_CONCURRENCY = 512
# Smallest window the adaptive limiter will shrink to.
MIN_CONCURRENCY = 1
# Seconds between two halvings of the window, so one burst of 429s halves it once.
THROTTLE_COOLDOWN_S = 1.0

DEFAULT_TIMEOUT_S = 300.0
# Retries of transport failures (429, 5xx, timeouts, resets), done by the openai client.
DEFAULT_TRANSPORT_RETRIES = 6
# Attempts per request for a usable answer (unparseable, schema-violating, malformed).
DEFAULT_CONTENT_ATTEMPTS = 3
# A run with this many teacher failures in a row and no success at all is aborted:
# the teacher is down or misconfigured, and waiting longer only hides it.
ABORT_AFTER_CONSECUTIVE_FAILURES = 25

# The embedded default teacher: small, Apache-2.0, instruction-tuned, runs on a CPU.
DEFAULT_LOCAL_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"
LOCAL_MAX_BATCH = 16

# Progress: seconds between plain log lines when stderr is not a terminal.
PROGRESS_LOG_INTERVAL_S = 5.0

OUTPUTS_DIR = "outputs"
JOURNAL_FILE = "journal.sqlite"
# Embeddings of record texts, kept beside the journal so reruns do not re-embed.
EMBEDDING_CACHE_FILE = "embeddings.sqlite"
# The templates shipped with factory (judge rubrics, task defaults): searched after the
# pipeline's own prompts folder, so a pipeline only carries the templates it changes.
BUILTIN_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

# The most exchanges a dialogue may plan: each is a request, and context grows with it.
MAX_DIALOGUE_TURNS = 50

# Several endpoints: failures in a row that set an endpoint aside, and the pause before
# a probe request (doubling while probes fail, up to the maximum).
ENDPOINT_FAILURES_TO_SET_ASIDE = 3
ENDPOINT_FIRST_PAUSE_S = 1.0
ENDPOINT_MAX_PAUSE_S = 30.0

# Server-aware concurrency (teachers/server_load.py): how often the server's /metrics
# page is read, how long one read may take, failed reads in a row before the window
# goes back to the adaptive rule, the queue kept waiting at the server (at least MIN,
# or FRACTION of what it runs), and the KV-cache use above which the window stops
# growing (past it vLLM preempts running requests).
SERVER_METRICS_POLL_S = 0.25
SERVER_METRICS_TIMEOUT_S = 2.0
SERVER_METRICS_GIVE_UP = 8
SERVER_QUEUE_MIN = 16
SERVER_QUEUE_FRACTION = 0.5
SERVER_CACHE_FULL = 0.95
# Share of a provider's advertised rate and remaining budget (x-ratelimit-* headers) used.
PROVIDER_RATE_MARGIN = 0.97
# With metrics to steer by, the window starts here and doubles while the server runs
# all it is sent (at least this share of it, since some are still on the wire); with
# no max_concurrency set it may grow this far.
SERVER_METRICS_FIRST_WINDOW = 64
SERVER_RUNNING_ALL = 0.9
SERVER_METRICS_MAX_CONCURRENCY = 4096
