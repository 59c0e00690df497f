"""Tunable numbers, in one place."""

from factory.core.resources import shipped_dir

# The openai backend's default in-flight window. vLLM schedules up to 256 (older) or
# 1024 (newer) sequences at once and queues the rest itself, so 512 keeps any single
# server saturated; the adaptive window shrinks it on 429 for rate-limited APIs.
DEFAULT_MAX_CONCURRENCY = 512
# Smallest window the adaptive limiter will shrink to.
MIN_CONCURRENCY = 1
# Seconds between two halvings of the window, so one burst of 429s halves it once.
THROTTLE_COOLDOWN_S = 1.0
# The longest a 429's Retry-After holds every request (a provider asking for an hour is
# better met by the outage timeout than by a silent hour).
RETRY_AFTER_MAX_S = 300.0

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
# Embeddings of record texts, kept beside the journal so reruns do not re-embed.
EMBEDDING_CACHE_FILE = "embeddings.sqlite"
# The decontaminate stage's n-gram indexes of benchmarks, one file per content and settings.
DECONTAMINATION_INDEX_DIR = "decontamination-index"
# The sentence-embedding model of the diversity stage and of `factory compare`.
DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# The templates shipped with factory (judge rubrics, task defaults): searched after the
# pipeline's own prompts folder, so a pipeline only carries the templates it changes.
BUILTIN_PROMPTS_DIR = shipped_dir("prompts")

# A prompt template's render stops (exit 2, naming the template) past this many
# characters or seconds: a loop over a huge range would otherwise fill the memory or
# never end. The largest honest prompt (a long document chunk and a few examples) is
# far below both.
RENDER_MAX_CHARS = 2_000_000
RENDER_MAX_SECONDS = 10.0

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

# How long one attempt at a request may take, from sending it to the last byte of the
# answer, when teacher.timeout is not set: STALL_BASE_S for what precedes decoding
# (connecting, a wait in the server's queue, prefill of a long prompt), plus max_tokens
# at MIN_DECODE_TOKENS_PER_S, a slow decode for a loaded server. max_tokens 1024 gives
# 60 + 1024/10 = 162 s, 256 gives 86 s. A server that accepts a request and then says
# nothing (a stall) is given up on after that, and the openai client retries it.
# Slower servers (a CPU, a long queue) set teacher.timeout.
STALL_BASE_S = 60.0
MIN_DECODE_TOKENS_PER_S = 10.0
CONNECT_TIMEOUT_S = 10.0
# The most an answer may be before it is rejected as `oversized` (a server that ignores
# max_tokens): reading stops at max(OVERSIZE_MIN_BYTES, max_tokens * OVERSIZE_BYTES_PER_TOKEN)
# bytes of body. A token is about 4 bytes of text and rarely over 8 once JSON-escaped,
# so 32 is far beyond any honest answer; the minimum leaves room for the envelope and
# for small max_tokens. Usage over OVERSIZE_TOKEN_FACTOR * max_tokens completion tokens
# (and at least OVERSIZE_MIN_TOKENS: a normal answer from a server that ignores a small
# max_tokens harms nothing) is oversized too.
OVERSIZE_MIN_BYTES = 1024 * 1024
OVERSIZE_BYTES_PER_TOKEN = 32
OVERSIZE_TOKEN_FACTOR = 8
OVERSIZE_MIN_TOKENS = 4096
# File descriptors kept out of the in-flight window's reach (one socket per request in
# flight): the run store, logs, the embedding model's files, a launched server's pipes.
FD_RESERVE = 256

# The run store: writes made within this many seconds share one durable commit.
STORE_GROUP_COMMIT_S = 0.02
# Rows an open transaction holds (to write again after a full disk) before the store
# commits them on its own.
STORE_PENDING_MAX = 2000
# Room the store holds back in its folder (run.reserve), given up when the disk fills so
# that its open transaction can still be written: at most this, at most a quarter of
# what is free when the store opens.
STORE_RESERVE_BYTES = 16 * 2 ** 20
# A teacher that has answered nothing for this long (every attempt failing) stops the
# run as incomplete (teacher.outage_timeout); the user is told once it has been down
# for OUTAGE_ANNOUNCE_S. Between attempts at one request the pause doubles from the
# first to the most.
OUTAGE_TIMEOUT_S = 120.0
OUTAGE_ANNOUNCE_S = 10.0
RETRY_FIRST_PAUSE_S = 0.5
RETRY_MAX_PAUSE_S = 10.0
# After the first SIGINT/SIGTERM, requests in flight get this long to land.
DRAIN_GRACE_S = 30.0

# The judge grades this many records at a time over one engine: memory holds one chunk
# of records rather than the whole dataset, and the window drains only between chunks.
JUDGE_CHUNK = 4096

# A top-up round looks at most this many unit indices for seed values in short cells.
TOP_UP_SCAN_LIMIT = 10_000_000

# Provider batch mode (teacher.mode: batch). Seconds between looks at batches in
# progress (a batch takes minutes to 24 hours); seconds without a new request before
# the waiting ones go out as a batch; the share taken off the online price (OpenAI and
# Anthropic both charge half); how often a request its batch left unanswered (expired,
# cancelled, lost) is submitted again in one invocation; the most units in flight at
# once when max_concurrency is not set (each waits in memory for its batch).
BATCH_POLL_INTERVAL_S = 60.0
BATCH_GATHER_S = 2.0
BATCH_DISCOUNT = 0.5
BATCH_RESUBMITS = 3
BATCH_MAX_IN_FLIGHT = 50_000
# One call to a batch API (uploading a file of up to 200 MB, reading a result file).
BATCH_HTTP_TIMEOUT_S = 600.0
