"""The loopback teacher's batch APIs, in both providers' shapes, and Anthropic's Messages API.

OpenAI: POST /v1/files (multipart, purpose batch), GET /v1/files/{id}/content,
POST /v1/batches, GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel; a batch is
validating, in_progress, finalizing, then completed, expired or cancelled, with an
output_file_id for the answered rows and an error_file_id for the rest.
Anthropic: POST /v1/messages (online), POST /v1/messages/batches, GET
/v1/messages/batches[/{id}], GET .../{id}/results (JSONL: result.type succeeded,
errored, canceled or expired), POST .../{id}/cancel.

Rows are answered as the online endpoint answers the same body. A batch ends
`delay` seconds after it was created; faults on demand: the n-th batch created expires
with a share of its rows done (`expire: {n: share}`, n "*" for every batch), answers 404 from its first look on
(`lose: [n]`), a row whose last user message matches `error` is refused (400
invalid_request_error), an OpenAI batch that would take the requests in batches not yet
ended over `queue_limit` fails at once (token_limit_exceeded), as over OpenAI's
enqueued token limit. `submitted` counts every custom id each time a batch carries
it, `created` the batches; GET /stats reports both under "batches".
"""

from __future__ import annotations

import collections
import datetime
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

from factory.loopback.content import thinking

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


@dataclass
class BatchOptions:
    delay: float = 0.0
    expire: dict[int, float] = field(default_factory=dict)
    lose: list[int] = field(default_factory=list)
    error: str | None = None
    # The most requests in OpenAI batches not yet ended, standing in for its enqueued
    # token limit: a batch over it fails at once (token_limit_exceeded) and never runs.
    queue_limit: int | None = None

    def __post_init__(self) -> None:
        # "*": every batch.
        self.expire = {n if n == "*" else int(n): float(share) for n, share in self.expire.items()}
        if any(not 0 <= share <= 1 for share in self.expire.values()):
            raise ValueError("batch expire: the share of rows done is between 0 and 1")
        self.error_pattern = re.compile(self.error) if self.error else None


@dataclass
class Batch:
    id: str
    ordinal: int  # 1 for the first batch created
    provider: str
    rows: list[dict]  # OpenAI: input lines; Anthropic: {custom_id, params}
    created: float
    input_file_id: str | None = None
    cancelled: bool = False
    results: list[dict] | None = None  # once ended: one outcome per row
    ended_status: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    refused: str | None = None  # why it failed without running (a full queue)


class BatchDesk:
    """Both batch APIs over one set of batches. `answer(body) -> (text, prompt_tokens,
    completion_tokens)` is the online endpoint's answer to an OpenAI-shaped body."""

    def __init__(self, options: BatchOptions, answer: Callable[[dict], tuple[str, int, int]], model: str,
                 spend: Callable[[list, Any], tuple[str | None, dict[str, str]]] | None = None,
                 keep: Callable[[dict], None] | None = None):
        self.options = options
        self.answer = answer
        self.model = model
        self.keep = keep  # each online Messages body, for tests that read what was sent
        # The server's rate-limit buckets (LoopbackTeacher._spend): online Messages report
        # them in Anthropic's headers, and answer 429 when a request does not fit.
        self.spend = spend
        self.batches: dict[str, Batch] = {}
        self.files: dict[str, bytes] = {}
        self.submitted: collections.Counter[str] = collections.Counter()
        self.created = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files/{id}/content", self.file_content)
        app.router.add_post("/v1/batches", self.create_openai)
        app.router.add_get("/v1/batches", self.list_openai)
        app.router.add_get("/v1/batches/{id}", self.get_openai)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel_openai)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/batches", self.create_anthropic)
        app.router.add_get("/v1/messages/batches", self.list_anthropic)
        app.router.add_get("/v1/messages/batches/{id}", self.get_anthropic)
        app.router.add_get("/v1/messages/batches/{id}/results", self.results_anthropic)
        app.router.add_post("/v1/messages/batches/{id}/cancel", self.cancel_anthropic)

    def stats(self) -> dict[str, Any]:
        return {"created": self.created, "submitted": dict(self.submitted)}

    # -- shared ---------------------------------------------------------------------------

    def _new(self, provider: str, rows: list[dict], input_file_id: str | None = None) -> Batch:
        ordinal = self.created + 1
        prefix = "batch_" if provider == "openai" else "msgbatch_"
        batch = Batch(prefix + uuid.uuid4().hex[:24], ordinal, provider, rows, time.time(), input_file_id)
        self.batches[batch.id] = batch
        for row in rows:
            self.submitted[row["custom_id"]] += 1
        # Counted last: a test thread that sees the count (the server runs on another
        # thread) then finds the batch and its rows too.
        self.created = ordinal
        return batch

    def _find(self, request: web.Request) -> Batch:
        batch = self.batches.get(request.match_info["id"])
        if batch is None or batch.ordinal in self.options.lose:
            raise _not_found(f"no batch {request.match_info['id']}", batch.provider if batch else "openai")
        return batch

    def _over(self, batch: Batch) -> bool:
        return batch.results is not None or batch.cancelled or time.time() >= batch.created + self.options.delay

    def _ended(self, batch: Batch) -> bool:
        """Whether the batch has ended; on its first look past the end, its rows are answered."""
        if batch.results is not None:
            return True
        if not batch.cancelled and time.time() < batch.created + self.options.delay:
            return False
        share = self.options.expire.get(batch.ordinal, self.options.expire.get("*"))
        done = len(batch.rows) if share is None else int(len(batch.rows) * share)
        if batch.cancelled:
            done, batch.ended_status = 0, "cancelled"
        else:
            batch.ended_status = "completed" if share is None else "expired"
        batch.results = [self._outcome(row) if i < done else {"not_run": batch.ended_status}
                         for i, row in enumerate(batch.rows)]
        return True

    def _outcome(self, row: dict) -> dict:
        """{"ok": chat completion body} or {"refused": message} for one row."""
        body = row.get("body") or _openai_body(row.get("params") or {})
        refused = _refused_schema(row["params"]) if "params" in row else None
        if refused:
            return {"refused": refused}
        pattern = self.options.error_pattern
        last_user = next((str(m.get("content")) for m in reversed(body.get("messages", []))
                          if m.get("role") == "user"), "")
        if pattern is not None and pattern.search(last_user):
            return {"refused": f"request {row['custom_id'][:12]} has content this server refuses (injected)"}
        text, prompt_tokens, completion_tokens = self.answer(body)
        return {"ok": {"id": "chatcmpl-" + row["custom_id"][:24], "object": "chat.completion",
                       "created": int(time.time()), "model": body.get("model", self.model),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                 "total_tokens": prompt_tokens + completion_tokens}}}

    # -- OpenAI ---------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("file")
        if form.get("purpose") != "batch" or not hasattr(upload, "file"):
            return _openai_error(400, "expected multipart purpose=batch and a file")
        data = upload.file.read()
        file_id = "file-" + uuid.uuid4().hex[:24]
        self.files[file_id] = data
        return web.json_response({"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                  "filename": upload.filename, "purpose": "batch", "status": "processed"})

    async def file_content(self, request: web.Request) -> web.Response:
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _openai_error(404, f"No such File object: {request.match_info['id']}")
        return web.Response(body=data, content_type="application/octet-stream")

    async def create_openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        data = self.files.get(body.get("input_file_id", ""))
        if data is None:
            return _openai_error(400, f"input_file_id {body.get('input_file_id')!r} not found")
        if body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _openai_error(400, "endpoint must be /v1/chat/completions and completion_window 24h")
        rows = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
        ids = [r.get("custom_id") for r in rows]
        if len(set(ids)) != len(ids):
            return _openai_error(400, "custom_id values must be unique within a batch")
        waiting = sum(len(b.rows) for b in self.batches.values()
                      if b.provider == "openai" and b.refused is None and not self._over(b))
        batch = self._new("openai", rows, body["input_file_id"])
        limit = self.options.queue_limit
        if limit is not None and waiting + len(rows) > limit:
            batch.refused = (f"Enqueued token limit reached for {self.model} in organization org-loopback. Limit: "
                             f"{limit:,} enqueued requests. Please try again once some in_progress batches have "
                             "been completed.")
        return web.json_response(self._openai_object(batch))

    async def get_openai(self, request: web.Request) -> web.Response:
        return web.json_response(self._openai_object(self._find(request)))

    async def list_openai(self, request: web.Request) -> web.Response:
        shown = [b for b in reversed(list(self.batches.values()))
                 if b.provider == "openai" and b.ordinal not in self.options.lose]
        data = [self._openai_object(b) for b in shown]
        return web.json_response({"object": "list", "data": data, "has_more": False,
                                  "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def cancel_openai(self, request: web.Request) -> web.Response:
        batch = self._find(request)
        batch.cancelled = True
        return web.json_response(self._openai_object(batch))

    def _openai_object(self, batch: Batch) -> dict:
        if batch.refused is not None:
            return {**self._openai_fields(batch), "status": "failed", "failed_at": int(batch.created),
                    "errors": {"object": "list", "data": [{"code": "token_limit_exceeded", "message": batch.refused,
                                                           "line": None, "param": None}]},
                    "request_counts": {"total": len(batch.rows), "completed": 0, "failed": 0}}
        ended = self._ended(batch)
        status = batch.ended_status if ended else self._running_status(batch)
        completed = failed = 0
        if ended and batch.output_file_id is None and batch.error_file_id is None:
            self._write_openai_files(batch)
        if ended:
            completed = sum("ok" in r for r in batch.results)
            failed = len(batch.results) - completed
        return {**self._openai_fields(batch), "status": status, "output_file_id": batch.output_file_id,
                "error_file_id": batch.error_file_id, "in_progress_at": int(batch.created),
                "request_counts": {"total": len(batch.rows), "completed": completed, "failed": failed}}

    @staticmethod
    def _openai_fields(batch: Batch) -> dict:
        return {"id": batch.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
                "input_file_id": batch.input_file_id, "completion_window": "24h", "created_at": int(batch.created),
                "expires_at": int(batch.created) + 86400, "metadata": None}

    def _running_status(self, batch: Batch) -> str:
        """What OpenAI says of a batch before it ends: its file is checked, it runs, its
        output is written."""
        share = (time.time() - batch.created) / self.options.delay if self.options.delay else 1.0
        return "validating" if share < 0.1 else "finalizing" if share > 0.9 else "in_progress"

    def _write_openai_files(self, batch: Batch) -> None:
        output, errors = [], []
        for row, result in zip(batch.rows, batch.results, strict=True):
            line = {"id": "batch_req_" + uuid.uuid4().hex[:20], "custom_id": row["custom_id"]}
            if "ok" in result:
                output.append({**line, "response": {"status_code": 200, "request_id": uuid.uuid4().hex,
                                                    "body": result["ok"]}, "error": None})
            elif "refused" in result:
                errors.append({**line, "response": {"status_code": 400, "request_id": uuid.uuid4().hex, "body": {
                    "error": {"message": result["refused"], "type": "invalid_request_error", "param": None,
                              "code": None}}}, "error": None})
            else:
                code = "batch_expired" if result["not_run"] == "expired" else "batch_cancelled"
                message = EXPIRED_MESSAGE if code == "batch_expired" else "This batch was cancelled."
                errors.append({**line, "response": None, "error": {"code": code, "message": message}})
        for rows, attr in ((output, "output_file_id"), (errors, "error_file_id")):
            if rows:
                file_id = "file-" + uuid.uuid4().hex[:24]
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                setattr(batch, attr, file_id)

    # -- Anthropic ------------------------------------------------------------------------

    async def messages(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.keep is not None:
            self.keep(body)
        if not isinstance(body.get("messages"), list) or not body.get("max_tokens"):
            return _anthropic_error(400, "invalid_request_error", "messages and max_tokens are required")
        refused = _refused_schema(body) or _refused_thinking(body)
        if refused:
            return _anthropic_error(400, "invalid_request_error", refused)
        headers: dict[str, str] = {}
        if self.spend is not None:
            broken, openai_headers = self.spend(body["messages"], body.get("max_tokens"))
            headers = _anthropic_limit_headers(openai_headers)
            if broken:
                headers["retry-after"] = "1"
                return web.json_response({"type": "error", "error": {"type": "rate_limit_error", "message":
                                          f"Number of {broken} has exceeded your per-minute rate limit"}},
                                         status=429, headers=headers)
        text, prompt_tokens, completion_tokens = self.answer(_openai_body(body))
        return web.json_response(_anthropic_message(body, text, prompt_tokens, completion_tokens), headers=headers)

    async def create_anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        rows = body.get("requests")
        if not isinstance(rows, list) or not rows:
            return _anthropic_error(400, "invalid_request_error", "requests: a non-empty list is required")
        ids = [r.get("custom_id") for r in rows]
        if len(set(ids)) != len(ids) or not all(isinstance(i, str) and re.fullmatch(r"[\w-]{1,64}", i) for i in ids):
            return _anthropic_error(400, "invalid_request_error", "custom_id: unique, 1 to 64 of [a-zA-Z0-9_-]")
        batch = self._new("anthropic", rows)
        return web.json_response(self._anthropic_object(batch, request))

    async def get_anthropic(self, request: web.Request) -> web.Response:
        return web.json_response(self._anthropic_object(self._find(request), request))

    async def list_anthropic(self, request: web.Request) -> web.Response:
        data = [self._anthropic_object(b, request) for b in reversed(list(self.batches.values()))
                if b.provider == "anthropic" and b.ordinal not in self.options.lose]
        return web.json_response({"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                  "last_id": data[-1]["id"] if data else None})

    async def cancel_anthropic(self, request: web.Request) -> web.Response:
        batch = self._find(request)
        batch.cancelled = True
        return web.json_response(self._anthropic_object(batch, request))

    async def results_anthropic(self, request: web.Request) -> web.Response:
        batch = self._find(request)
        if not self._ended(batch):
            return _anthropic_error(400, "invalid_request_error", f"batch {batch.id} is still in progress")
        lines = []
        for row, result in zip(batch.rows, batch.results, strict=True):
            if "ok" in result:
                choice = result["ok"]
                usage = choice["usage"]
                message = _anthropic_message(row["params"], choice["choices"][0]["message"]["content"],
                                             usage["prompt_tokens"], usage["completion_tokens"])
                outcome = {"type": "succeeded", "message": message}
            elif "refused" in result:
                outcome = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": result["refused"]}}}
            else:
                outcome = {"type": "expired" if result["not_run"] == "expired" else "canceled"}
            lines.append(json.dumps({"custom_id": row["custom_id"], "result": outcome}))
        return web.Response(text="\n".join(lines) + "\n", content_type="application/binary")

    def _anthropic_object(self, batch: Batch, request: web.Request) -> dict:
        ended = self._ended(batch)
        counts = {"processing": 0 if ended else len(batch.rows), "succeeded": 0, "errored": 0, "canceled": 0,
                  "expired": 0}
        for result in batch.results or []:
            kind = ("succeeded" if "ok" in result else "errored" if "refused" in result
                    else "expired" if result["not_run"] == "expired" else "canceled")
            counts[kind] += 1
        stamp = _rfc3339(batch.created)
        root = f"{request.scheme}://{request.host}"
        return {"id": batch.id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
                "request_counts": counts, "created_at": stamp, "expires_at": _rfc3339(batch.created + 86400),
                "ended_at": _rfc3339(time.time()) if ended else None, "archived_at": None,
                "cancel_initiated_at": stamp if batch.cancelled else None,
                "results_url": f"{root}/v1/messages/batches/{batch.id}/results" if ended else None}


# What Claude's structured outputs take (the anthropic package's transform_schema keeps
# these and moves the rest into descriptions); anything else is refused with a 400.
_CLAUDE_KEYS = {"type", "anyOf", "allOf", "enum", "const", "description", "title", "$ref", "$defs", "properties",
                "additionalProperties", "required", "format", "items", "minItems"}


def unsupported_by_claude(schema) -> str | None:
    """The first keyword of `schema` Claude's structured outputs refuse, or None."""
    if isinstance(schema, list):
        return next((found for s in schema if (found := unsupported_by_claude(s))), None)
    if not isinstance(schema, dict):
        return None
    for key, value in schema.items():
        if key not in _CLAUDE_KEYS or (key == "minItems" and value not in (0, 1)) or (
                key == "additionalProperties" and value is not False):
            return key
        if key in ("properties", "$defs"):
            found = unsupported_by_claude(list(value.values()))
        elif key in ("items", "anyOf", "allOf"):
            found = unsupported_by_claude(value)
        else:
            found = None
        if found:
            return found
    return None


_NOTED = re.compile(r"\{((?:\w+: -?\d+(?:, )?)+)\}")


def _as_noted(schema):
    """A schema whose constraints were moved into descriptions (anthropic.transform_schema
    writes "{minItems: 2, maxItems: 2}") with them back in place: the loopback follows
    them, as Claude follows what the description says."""
    if isinstance(schema, list):
        return [_as_noted(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _as_noted(v) for k, v in schema.items()}
    found = _NOTED.search(str(out.get("description", "")))
    if found:
        for pair in found.group(1).split(", "):
            name, value = pair.split(": ")
            out.setdefault(name, int(value))
    return out


def _openai_body(params: dict) -> dict:
    """An Anthropic Messages request as the OpenAI-shaped body the answer generator reads."""
    messages = ([{"role": "system", "content": params["system"]}] if params.get("system") else []) + [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
         else "".join(b.get("text", "") for b in m["content"])} for m in params.get("messages", [])]
    body = {"model": params.get("model"), "messages": messages, "max_tokens": params.get("max_tokens")}
    schema = ((params.get("output_config") or {}).get("format") or {}).get("schema")
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": _as_noted(schema)}}
    return body


def _refused_schema(params: dict) -> str | None:
    schema = ((params.get("output_config") or {}).get("format") or {}).get("schema")
    keyword = unsupported_by_claude(schema) if schema is not None else None
    return f"output_config.format.schema: keyword '{keyword}' is not supported" if keyword else None


def _thinking_enabled(params: dict) -> bool:
    return isinstance(params.get("thinking"), dict) and params["thinking"].get("type") == "enabled"


def _refused_thinking(params: dict) -> str | None:
    """Claude's rules for extended thinking, in its words: a budget of at least 1024
    tokens and below max_tokens, and no temperature but 1."""
    if not _thinking_enabled(params):
        return None
    budget = params["thinking"].get("budget_tokens")
    if not isinstance(budget, int) or budget < 1024:
        return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
    if budget >= params.get("max_tokens", 0):
        return "`max_tokens` must be greater than `thinking.budget_tokens`"
    if params.get("temperature", 1) != 1:
        return "`temperature` may only be set to 1 when thinking is enabled"
    return None


def _anthropic_message(params: dict, text: str, prompt_tokens: int, completion_tokens: int) -> dict:
    content = [{"type": "text", "text": text}]
    if _thinking_enabled(params):  # Claude's thinking comes first, in a block of its own, signed
        thought = thinking(_openai_body(params)["messages"], None)
        content.insert(0, {"type": "thinking", "thinking": thought, "signature": uuid.uuid4().hex})
        completion_tokens += len(thought) // 4 + 1
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant", "model": params.get("model"),
            "content": content, "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}


def _rfc3339(stamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp))


def _openai_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": "invalid_request_error", "code": None}},
                             status=status)


def _anthropic_limit_headers(openai_headers: dict[str, str]) -> dict[str, str]:
    """The same buckets in Anthropic's names: `anthropic-ratelimit-{requests,tokens}-
    {limit,remaining,reset}`, the reset an RFC 3339 time (OpenAI's is a duration)."""
    out: dict[str, str] = {}
    now = datetime.datetime.now(datetime.timezone.utc)
    for kind in ("requests", "tokens"):
        limit = openai_headers.get(f"x-ratelimit-limit-{kind}")
        if limit is None:
            continue
        ms = float(openai_headers[f"x-ratelimit-reset-{kind}"].removesuffix("ms"))
        reset = now + datetime.timedelta(milliseconds=ms)
        out[f"anthropic-ratelimit-{kind}-limit"] = limit
        out[f"anthropic-ratelimit-{kind}-remaining"] = openai_headers[f"x-ratelimit-remaining-{kind}"]
        out[f"anthropic-ratelimit-{kind}-reset"] = reset.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return out


def _anthropic_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def _not_found(message: str, provider: str) -> web.HTTPException:
    body = ({"error": {"message": message, "type": "invalid_request_error", "code": None}} if provider == "openai"
            else {"type": "error", "error": {"type": "not_found_error", "message": message}})
    return web.HTTPNotFound(text=json.dumps(body), content_type="application/json")
