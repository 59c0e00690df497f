"""Pipeline files: YAML loaded into pydantic models that refuse unknown keys.

Every error names the file and the dotted key, in one line. Relative paths in the
file (seed files, prompts_dir) are resolved against the file's own folder, so a
pipeline can be run from anywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from factory.core import constants
from factory.config.backends import BACKENDS, BATCH_BACKENDS
from factory.config.compare import ReferenceConfig
from factory.config.formats import FORMATS
from factory.core.errors import ConfigError
from factory.core.redaction import looks_like_a_key, secret_fields
from factory.core.registry import one_of
from factory.config.tasks import TASKS
from factory.core.strict import Strict
from factory.core.structured_modes import MODES


class Sampling(Strict):
    # null: not sent, the server's own default (reasoning models take no other).
    temperature: float | None = Field(0.8, ge=0, le=2)
    top_p: float | None = Field(0.95, gt=0, le=1)
    # Sent as max_tokens or max_completion_tokens (teacher.token_limit_param); it also
    # bounds each request's time, size and worst-case cost, so it is always set.
    max_tokens: int = Field(1024, gt=0)
    stop: list[str] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)


class LaunchConfig(Strict):
    """A server factory starts for the run and stops after it."""

    # vllm: `vllm serve MODEL --port PORT` with the teacher's vllm settings; or give a command.
    preset: Literal["vllm"] | None = "vllm"
    # Any command, as a list; "{port}" and "{model}" are filled in.
    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)  # more arguments for the preset
    port: int | None = Field(None, ge=1, le=65535)  # null: a free port
    health: str = "/health"
    startup_timeout: float = Field(900, gt=0)  # loading a large model takes minutes

    @model_validator(mode="after")
    def _one_way(self):
        if self.command is not None and not self.command:
            raise ValueError("command: give the program and its arguments as a list")
        return self


class VLLMSettings(Strict):
    """Passed to vLLM's engine (backend vllm) or to `vllm serve` (launch preset vllm)."""

    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    max_model_len: int | None = Field(None, gt=0)
    # Requests handed to the engine at once: large, so its continuous batching stays fed.
    max_batch: int = Field(1024, ge=1)


class Price(Strict):
    """Per million tokens, in `currency`: what the provider charges for this model."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    # Prompt tokens the provider served from its prompt cache (usage.prompt_tokens_details
    # .cached_tokens); null: billed as input.
    cached_input: float | None = Field(None, ge=0)
    currency: str = "USD"


# OpenAI's reasoning families (o1, o3, o4-mini, gpt-5, gpt-5.1 ...; the chat variants
# excepted): they take max_completion_tokens, and only their default temperature and top_p.
_REASONING_FAMILY = re.compile(r"(?:^|/)(?:o\d+|gpt-5(?!-chat)(?:\.\d+)?)(?:-[\w.-]+)?$", re.I)

# Request keys factory itself sets: extra_body may not set them behind its back.
OWNED_BODY_KEYS = frozenset({
    "model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "presence_penalty",
    "frequency_penalty", "seed", "response_format", "structured_outputs", "guided_json", "stream", "n",
    "system", "stop_sequences", "output_config"})


def thinking_enabled(extra_body: dict[str, Any]) -> bool:
    """Whether a request body asks Claude for extended thinking (`thinking: {type: enabled}`)."""
    thinking = extra_body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def reasoning_family(model: str) -> bool:
    """Whether `model` is one of OpenAI's reasoning models, by its name."""
    return bool(_REASONING_FAMILY.search(model or ""))


class BatchSettings(Strict):
    """`teacher.mode: batch`: requests go through the provider's batch API (OpenAI Batch,
    Anthropic Message Batches) at its batch price, answered within 24 hours."""

    # Requests and bytes in one batch (one input file for OpenAI); null: the provider's
    # limit (OpenAI 50,000 requests and 200 MB a file, Anthropic 100,000 and 256 MB).
    max_requests: int | None = Field(None, gt=0)
    max_bytes: int | None = Field(None, gt=0)
    # Seconds between two looks at the batches in progress.
    poll_interval: float = Field(constants.BATCH_POLL_INTERVAL_S, gt=0)
    # Seconds without a new request before the requests waiting go out as a batch
    # smaller than max_requests.
    gather: float = Field(constants.BATCH_GATHER_S, gt=0)
    # Share taken off teacher.price for batch requests (OpenAI and Anthropic: half).
    discount: float = Field(constants.BATCH_DISCOUNT, ge=0, lt=1)
    # How many times a request left unanswered (its batch expired, was cancelled or
    # lost) is submitted again, per invocation, before the run stops as incomplete.
    resubmits: int = Field(constants.BATCH_RESUBMITS, ge=0)


def refuse_url_credentials(value: Any) -> None:
    """Raise ValueError when a base_url holds user:password@. Refused, not stripped: the
    pipeline file (copied into the run, pushed) would still hold the password. Never
    echoed: the message reaches the console."""
    for url in value if isinstance(value, list) else [value] if value else []:
        if isinstance(url, str) and urlsplit(url.strip()).netloc.rpartition("@")[0]:
            raise ValueError("holds a user name and password (user:password@host), which would be written "
                             "with the run and pushed: remove them; a key is read from the environment "
                             "variable named by teacher.api_key_env and sent as a Bearer token")


class TeacherConfig(Strict):
    backend: Literal[tuple(BACKENDS)] = "transformers"  # factory/config/backends.py
    model: str = constants.DEFAULT_LOCAL_MODEL
    # One server, or a list of replicas / providers serving the same model.
    base_url: str | list[str] | None = None
    # The *name* of the environment variable holding the key, never the key itself.
    api_key_env: str | None = None
    max_concurrency: int | None = Field(None, gt=0)
    # Seconds one attempt may take, sending to last byte; null: derived from
    # sampling.max_tokens (teachers/bounds.py request_timeout).
    timeout: float | None = Field(None, gt=0)
    max_retries: int = Field(constants.DEFAULT_TRANSPORT_RETRIES, ge=0)
    # Seconds of every attempt failing (unreachable, 5xx, 429, stalls) before the run
    # stops as incomplete (exit 3); a rerun finishes it.
    outage_timeout: float = Field(constants.OUTAGE_TIMEOUT_S, gt=0)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    # Size the in-flight window from the server's Prometheus /metrics (vLLM, SGLang)
    # when it publishes them; otherwise, or when false, the adaptive window.
    server_metrics: bool = True
    # What the provider charges: live cost in the progress line, run.json, card, report.
    price: Price | None = None
    # auto: the strongest mode the server accepts, found by one probe and remembered in
    # the run store (teachers/structured_modes.py); or one mode, never changed.
    structured_output: Literal[MODES] = "auto"
    # The key that carries sampling.max_tokens. auto: max_completion_tokens for OpenAI's
    # reasoning families and for api.openai.com itself, max_tokens for other servers.
    token_limit_param: Literal["auto", "max_tokens", "max_completion_tokens"] = "auto"
    # Sent in every request body as is: vLLM's top_k, min_p, repetition_penalty,
    # chat_template_kwargs: {enable_thinking: false}, OpenAI's reasoning_effort ...
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # Send a per-request seed derived from the pipeline seed (OpenAI, vLLM, Ollama and
    # llama.cpp honour it), so reruns against a deterministic server match.
    send_seed: bool = True
    sampling: Sampling = Field(default_factory=Sampling)
    # transformers backend only
    device: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(constants.LOCAL_MAX_BATCH, gt=0)
    # vllm backend, and the vllm launch preset
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    launch: LaunchConfig | None = None
    # online: one request at a time over HTTP; batch: the provider's batch API (openai,
    # anthropic), half the price, answers within 24 hours (see `batch`).
    mode: Literal["online", "batch"] = "online"
    batch: BatchSettings = Field(default_factory=BatchSettings)

    @model_validator(mode="after")
    def _family_defaults(self):
        # A reasoning model refuses any temperature or top_p but its own: factory's
        # defaults are not sent to it; a value the user wrote is (and the server decides).
        if reasoning_family(self.model):
            for name in ("temperature", "top_p"):
                if name not in self.sampling.model_fields_set:
                    setattr(self.sampling, name, None)
                    # Still unset: a judge or role on another model gets the defaults back.
                    self.sampling.model_fields_set.discard(name)
        return self

    @field_validator("extra_body")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in OWNED_BODY_KEYS:
                where = f"teacher.sampling.{key}" if key in Sampling.model_fields else "factory itself"
                raise ValueError(f"{key!r} is set by {where}, not by extra_body")
        return value

    @model_validator(mode="after")
    def _claude_thinking(self):
        # Claude's rules for extended thinking, checked before anything is sent: a 400 for
        # every request would end each sample as refused.
        if self.backend != "anthropic" or not thinking_enabled(self.extra_body):
            return self
        budget = self.extra_body["thinking"].get("budget_tokens")
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1024:
            raise ValueError("extra_body.thinking.budget_tokens: a whole number of at least 1024 (Claude's minimum)")
        if budget >= self.sampling.max_tokens:
            raise ValueError(f"extra_body.thinking.budget_tokens ({budget}) must be below sampling.max_tokens "
                             f"({self.sampling.max_tokens}), which counts the thinking and the answer")
        if "temperature" in self.sampling.model_fields_set and self.sampling.temperature not in (None, 1):
            raise ValueError("sampling.temperature: Claude takes only 1 with extended thinking (or leave it unset)")
        return self

    @model_validator(mode="after")
    def _openai_needs_an_address(self):
        if self.launch is not None and self.backend != "openai":
            raise ValueError("launch starts a server, which the openai backend talks to: set backend: openai")
        if self.backend == "openai" and not self.base_url and not self.api_key_env and self.launch is None:
            raise ValueError("the openai backend needs base_url (the server address) or api_key_env (for api.openai.com)")
        if self.backend == "anthropic" and not self.base_url and not self.api_key_env:
            raise ValueError("the anthropic backend needs api_key_env (like ANTHROPIC_API_KEY)")
        if self.backend == "anthropic" and isinstance(self.base_url, list):
            raise ValueError("base_url: the anthropic backend talks to one address (a list is for openai replicas)")
        if self.backend == "anthropic":
            s = self.sampling
            if s.temperature > 1:
                raise ValueError("sampling.temperature: the anthropic backend takes 0 to 1")
            if s.presence_penalty is not None or s.frequency_penalty is not None:
                raise ValueError("sampling: the anthropic backend has no presence or frequency penalty; unset them")
        return self

    @model_validator(mode="after")
    def _batch_mode_fits(self):
        if self.mode != "batch":
            return self
        if self.backend not in BATCH_BACKENDS:
            raise ValueError("mode: batch sends requests through a provider's batch API: set backend: "
                             + one_of(BATCH_BACKENDS))
        if isinstance(self.base_url, list) or self.launch is not None:
            raise ValueError("mode: batch talks to one provider's batch API: give one base_url and no launch")
        api = BATCH_BACKENDS[self.backend]
        if (self.batch.max_requests or 0) > api.max_requests:
            raise ValueError(f"batch.max_requests: {self.backend} takes at most {api.max_requests:,} requests a batch")
        if (self.batch.max_bytes or 0) > api.max_bytes:
            raise ValueError(f"batch.max_bytes: {self.backend} takes at most {api.max_bytes:,} bytes a batch")
        return self

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value or not all(isinstance(u, str) and u.strip() for u in value):
                raise ValueError("expected a URL or a non-empty list of URLs")
            if len(set(value)) != len(value):
                raise ValueError("the same URL is listed twice")
        refuse_url_credentials(value)
        if isinstance(value, list):
            return value[0] if len(value) == 1 else value
        return value

    @field_validator("api_key_env")
    @classmethod
    def _looks_like_a_name(cls, value: str | None) -> str | None:
        # A common slip is pasting the key itself; refuse it without echoing it back (the
        # message that the variable is not set would print it twice).
        if value is not None and (not value.replace("_", "").isalnum() or looks_like_a_key(value)):
            raise ValueError("must be the name of an environment variable (like OPENAI_API_KEY), not a key")
        return value


class SeedFile(Strict):
    file: str
    # For .jsonl and .csv rows, which are objects: the field whose value to use, or "*"
    # for the whole row (templates then read its keys: {{ persona.name }}).
    field: str | None = None


def _seed_kind(value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, (dict, SeedFile)):
        return "file"
    return None  # neither: pydantic reports the union's tag error


SeedSource = Annotated[
    Union[Annotated[list[Any], Tag("list")], Annotated[SeedFile, Tag("file")]],
    Discriminator(
        _seed_kind,
        custom_error_type="seed_source",
        custom_error_message="expected a list of values or a mapping {file: PATH}",
    ),
]


def _task_kind(value: Any) -> str | None:
    task = value.get("task", "qa") if isinstance(value, dict) else getattr(value, "task", None)
    return task if task in TASKS else None


GenerateConfig = Annotated[
    Union[tuple(Annotated[kind.config, Tag(name)] for name, kind in TASKS.items())],
    Discriminator(
        _task_kind,
        custom_error_type="unknown_task",
        custom_error_message=f"task must be one of: {', '.join(TASKS)}",
    ),
]


class HubConfig(Strict):
    """Push the finished run to the Hugging Face Hub (see factory/outputs/push.py)."""

    repo_id: str
    private: bool = True
    config_name: str = "default"
    split: str = Field("train", pattern=r"^\w+$")
    commit_message: str | None = None
    # A held-out split named "test", this share of the records, drawn with the pipeline's seed.
    test_size: float | None = Field(None, gt=0, lt=1)
    include_rejected: bool = False

    @field_validator("repo_id")
    @classmethod
    def _owner_and_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value):
            raise ValueError(f"expected OWNER/NAME, like you/beekeeping-qa, not {value!r}")
        return value


class OutputConfig(Strict):
    dir: str | None = None
    # dataset/ is always written; these are written beside it (factory/config/formats.py).
    formats: list[Literal[tuple(FORMATS)]] = Field(
        default_factory=lambda: ["jsonl", "parquet"])
    license: str = "other"
    language: list[str] = Field(default_factory=lambda: ["en"])
    pretty_name: str | None = None
    tags: list[str] = Field(default_factory=list)
    hub: HubConfig | None = None
    # Real data of the same kind: the report gets a section measuring the dataset against
    # it (factory/compare/), and compare.json is written beside it.
    reference: ReferenceConfig | None = None
    # Where a reasoning model's thinking goes: nowhere, metadata.reasoning, or beside each
    # answer in its assistant message as `reasoning_content` (docs/teachers.md, "Reasoning datasets").
    reasoning: Literal["drop", "metadata", "messages"] = "metadata"


class ExecutorConfig(Strict):
    """Where generation and the judge's requests run: this process, or shards on a Ray
    cluster (factory/executors/shards.py, filters/judge/judge_ray.py)."""

    type: Literal["local", "ray"] = "local"
    # auto: the cluster `ray start` started on this machine; HOST:6379 a head node's
    # address; ray://HOST:10001 a remote head through Ray Client; null: the cluster this
    # process is connected to (or RAY_ADDRESS), else a new local one.
    address: str | None = None
    # Generation units (and the records a judge has to grade) split into this many shards
    # by index, each a Ray task with its own run store under <output>/shards/.
    shards: int = Field(4, ge=1, le=100000)

    @field_validator("address")
    @classmethod
    def _ray_address(cls, a: str | None) -> str | None:
        if a is not None and a != "auto" and not a.startswith("ray://") and not _host_port(a):
            raise ValueError(f"expected auto, HOST:PORT or ray://HOST:PORT, got {a!r}")
        return a


def _host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit())


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
    description: str = ""
    seed: int = 0
    prompts_dir: str | None = None
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    seeds: dict[str, SeedSource] = Field(default_factory=dict)
    generate: GenerateConfig
    filters: list[dict[str, Any]] = Field(default_factory=list)
    output: OutputConfig = Field(default_factory=OutputConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    # The most the run may cost (with teacher prices set): no request starts that could
    # take it over; a rerun with a higher cap continues from the journal.
    max_cost: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _thinking_beside_one_answer(self):
        # Several answers from one request share one thinking: beside each of them it
        # would teach a model to think about answers it is not giving.
        g = self.generate
        if self.output.reasoning == "messages":
            if getattr(g, "pairs_per_request", 1) > 1:
                raise ValueError(f"output.reasoning: messages puts each answer's thinking beside it, but "
                                 f"generate.pairs_per_request: {g.pairs_per_request} makes several answers from "
                                 "one thinking; set pairs_per_request: 1, or reasoning: metadata")
            if getattr(g, "mode", None) == "single_call":
                raise ValueError("output.reasoning: messages puts each answer's thinking beside it, but "
                                 "generate.mode: single_call writes a whole conversation from one thinking; "
                                 "use mode: turns, or reasoning: metadata")
        return self

    @model_validator(mode="after")
    def _a_cap_needs_a_price(self):
        if self.max_cost is not None and self.teacher.price is None:
            raise ValueError("max_cost needs teacher.price (per million input and output tokens) to count the cost")
        return self

    @field_validator("seeds")
    @classmethod
    def _seed_names(cls, value: dict) -> dict:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"seed variable name {name!r} is not a valid identifier")
        return value


class PipelineFile:
    """A validated pipeline file plus where it came from."""

    def __init__(self, config: PipelineConfig, path: Path, raw: dict, base_dir: Path | None = None):
        self.config = config
        self.path = path
        # Relative paths resolve against the file's folder; a pipeline given as a dict (the
        # Python API) names its folder, or takes the current one.
        self.base_dir = base_dir if base_dir is not None else path.parent
        self.raw = raw
        # Set by `--dry-run`: every teacher of the run, the judge's too, is the loopback.
        self.dry_run = False
        self.text = ""  # the file as read, and the `--set` changes on top (for the run's copy)
        self.overrides: list[str] = []

    def resolve(self, relative: str) -> Path:
        p = Path(os.path.expanduser(relative))
        return p if p.is_absolute() else (self.base_dir / p)

    def prompts_dirs(self) -> list[Path]:
        """Folders searched for templates, first match wins."""
        if self.config.prompts_dir:
            candidates = [self.resolve(self.config.prompts_dir)]
        else:
            candidates = [self.base_dir / "prompts", self.base_dir.parent / "prompts", Path.cwd() / "prompts"]
        candidates.append(constants.BUILTIN_PROMPTS_DIR)
        return [p for p in dict.fromkeys(c.resolve() for c in candidates) if p.is_dir()]

    def output_dir(self, override: str | None = None) -> Path:
        chosen = override or self.config.output.dir
        return Path(chosen) if chosen else Path(constants.OUTPUTS_DIR) / self.config.name


def parse_overrides(pairs: list[str]) -> list[tuple[list[str], Any]]:
    """`--set a.b=VALUE` pairs into (path, value); values are parsed as YAML."""
    parsed = []
    for pair in pairs:
        key, sep, text = pair.partition("=")
        path = key.strip().split(".")
        if not sep or not all(part.strip() for part in path):
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE with a dotted key, like teacher.model=gpt-4o-mini")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {pair!r}: value is not valid YAML ({_first_line(err)})") from err
        parsed.append(([p.strip() for p in path], value))
    return parsed


def mapping_overrides(overrides: dict[str, Any]) -> list[tuple[list[str], Any]]:
    """The Python API's overrides, {"generate.count": 10}: the keys `--set` takes, values as given."""
    parsed = []
    for key, value in overrides.items():
        path = str(key).split(".")
        if not all(part.strip() for part in path):
            raise ConfigError(f"overrides[{key!r}]: expected a dotted key, like 'teacher.model'")
        parsed.append(([p.strip() for p in path], value))
    return parsed


_ITEM = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]+\])*)$")


def apply_overrides(raw: dict, overrides: list[tuple[list[str], Any]]) -> dict:
    """Set each dotted key. A part may pick list items: `filters[3]` by position,
    `filters[judge]` by the item's `type` (refused when several items have it)."""
    for path, value in overrides:
        dotted = ".".join(path)
        steps: list[tuple[bool, str]] = []  # (is a list item, key or selector)
        for part in path:
            match = _ITEM.match(part)
            if not match:
                raise ConfigError(f"--set {dotted}: {part!r} is not a key (like filters[2] or filters[judge])")
            steps.append((False, match.group(1)))
            steps += [(True, sel) for sel in re.findall(r"\[([^\[\]]+)\]", match.group(2))]
        node: Any = raw
        for i, (is_item, step) in enumerate(steps):
            last = i == len(steps) - 1
            where = "".join(f"[{s}]" if item else ("." if j else "") + s for j, (item, s) in enumerate(steps[: i + 1]))
            if not isinstance(node, list if is_item else dict):
                above = where.rsplit("[", 1)[0] if is_item else where.rsplit(".", 1)[0]
                wanted = "a list" if is_item else "a mapping"
                hint = f"; pick an item, like {above}[0] or {above}[TYPE]" if isinstance(node, list) else ""
                raise ConfigError(f"--set {dotted}: {above} is {type(node).__name__}, not {wanted}{hint}")
            key: Any = _item(node, step, dotted, where) if is_item else step
            if last:
                node[key] = value
                break
            child = node[key] if is_item else node.get(key)
            if child is None:
                child = node[key] = [] if steps[i + 1][0] else {}
            node = child
    return raw


def _item(items: list, selector: Any, dotted: str, where: str) -> int:
    """The position in `items` that `selector` (a number, or an item's `type`) names."""
    text = str(selector).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not -len(items) <= index < len(items):
            raise ConfigError(f"--set {dotted}: {where}: there are {len(items)} items (0 to {len(items) - 1})")
        return index % len(items)
    found = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("type") == text]
    if len(found) == 1:
        return found[0]
    listed = ", ".join(str(item.get("type")) if isinstance(item, dict) else repr(item) for item in items) or "none"
    if not found:
        raise ConfigError(f"--set {dotted}: no item of type {text!r} (types in order: {listed})")
    raise ConfigError(f"--set {dotted}: {len(found)} items have type {text!r} (at {', '.join(map(str, found))}); "
                      f"pick one by position, like [{found[0]}]")


def load_pipeline(path: str | Path, overrides: list[str] = ()) -> PipelineFile:
    path = Path(path)
    pipeline = build_pipeline(read_pipeline_file(path), path, parse_overrides(list(overrides)))
    # The file as read, and the changes on top, for the run's own copy (snapshot.py).
    pipeline.text, pipeline.overrides = path.read_text(encoding="utf-8"), list(overrides)
    return pipeline


def read_pipeline_file(path: Path) -> Any:
    """The pipeline file's YAML (a mapping, when it is right); raises ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: pipeline file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read pipeline file ({err.__class__.__name__}: {err})") from err
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or _first_line(err)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from err
    if raw is None:
        raise ConfigError(f"{path}: pipeline file is empty")
    return raw


def build_pipeline(raw: dict, path: Path, overrides: list[tuple[list[str], Any]] = (),
                   base_dir: Path | None = None) -> PipelineFile:
    """`raw` with the overrides applied, validated; `path` names it in messages."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{path}: {describe_validation_error(err)}") from err
    check_credentials(config.teacher, f"{path}: teacher")
    return PipelineFile(config, path, raw, base_dir)


def check_credentials(teacher: TeacherConfig, label: str) -> None:
    """No secret written in `extra_body` (it would reach run.json, the run's copy of the
    pipeline and the Hub), and the variable named by `api_key_env` set: checked before
    anything is sent. The secret itself is never shown."""
    for where in secret_fields(teacher.extra_body):
        raise ConfigError(f"{label}.extra_body.{where}: looks like a secret (by its name or its form), which "
                          "would be written with the run and pushed: put the key in an environment variable "
                          "and name it with teacher.api_key_env (sent as a Bearer token)")
    name = teacher.api_key_env
    if name and not os.environ.get(name):
        raise ConfigError(f"{label}.api_key_env: environment variable {name} is not set (export {name}=... first)")


def derived_teacher(pipeline: PipelineFile, overrides: dict[str, Any], where: str,
                    sampling_defaults: dict[str, Any] | None = None) -> TeacherConfig:
    """The pipeline's teacher with `overrides` on top: a judge's or a dialogue role's own.

    `sampling` merges key by key (over `sampling_defaults`, then the pipeline's); the
    rest replaces. In a dry run every teacher is the loopback, so only sampling applies.
    """
    if "launch" in overrides:
        raise ConfigError(f"{where}.launch: only the pipeline's own teacher can be launched; "
                          "point this one at a server with base_url")
    base = pipeline.config.teacher.model_dump()
    if "backend" in overrides or "base_url" in overrides:
        base["launch"] = None  # served elsewhere, not by the pipeline's launched server
    if pipeline.dry_run:
        overrides = {"sampling": overrides.get("sampling", {})}
    merged = {**base, **{k: v for k, v in overrides.items() if k != "sampling"}}
    # Only what the user wrote carries over: unset keys take the defaults of this
    # teacher's own model (a reasoning model takes none: TeacherConfig._family_defaults).
    base["sampling"] = pipeline.config.teacher.sampling.model_dump(exclude_unset=True)
    defaults = dict(sampling_defaults or {})
    if reasoning_family(merged["model"]):
        defaults = {k: v for k, v in defaults.items() if k not in ("temperature", "top_p")}
    merged["sampling"] = {**base["sampling"], **defaults, **(overrides.get("sampling") or {})}
    try:
        config = TeacherConfig.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(f"{where}.{describe_validation_error(err)}") from err
    check_credentials(config, where)
    return config


def describe_validation_error(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = _dotted(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(err.errors()) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS:
            continue  # pydantic's union branch labels mean nothing to a user
        else:
            out += ("." if out else "") + str(part)
    return out


_UNION_TAGS = {"list", "file", *TASKS}


def _first_line(err: Exception) -> str:
    return " ".join(str(err).split())
