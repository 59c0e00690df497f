"""Push a finished run to the Hugging Face Hub, in one commit.

What goes up: the kept records as Parquet under `data/` (one file per split; a
held-out test split by seeded ratio when asked), the dataset card with its `configs`
pointing at them (so `load_dataset(repo_id)` finds the splits), `run.json`, the
report, the pipeline file and the templates it used (checked against the hashes the
run recorded), so anyone can reproduce it; `rejected.jsonl` when asked.

Everything goes in a single commit through `huggingface_hub`: a push that fails
half-way leaves the repo as it was, and `factory push` can simply run again. (The
`datasets` library's own `push_to_hub` commits data and card separately.) The token
comes from HF_TOKEN or the Hub's login cache and is never written anywhere.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from factory.outputs.card import hub_place, render_card
from factory.config.pipeline import HubConfig, describe_validation_error
from factory.core.errors import FactoryError, InputDataError, UserError
from factory.inputs.pipeline_files import SNAPSHOT_DIR

RETRIES = 3  # attempts for a push that fails on the network or a server error


class PushFailed(FactoryError):
    """The Hub refused or could not be reached; the local run is intact."""


def hub_api(token: str):
    """The Hub client (a function, so tests can hand in a recording stand-in)."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def find_token() -> str:
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN, or run `hf auth login`, before pushing")
    return token


def hub_settings(out_dir: Path, changes: dict[str, Any]) -> HubConfig:
    """The run's own `output.hub`, with `changes` (from the command line) on top."""
    saved = _run_info(out_dir).get("config", {})
    settings = {**(saved.get("output", {}).get("hub") or {}), **changes}
    if not settings.get("repo_id"):
        raise UserError("factory push: give --repo-id (the pipeline's output.hub has none)")
    try:
        return HubConfig.model_validate(settings)
    except ValidationError as err:
        raise UserError(f"factory push: {describe_validation_error(err)}") from None


def push_run(out_dir: Path, target: HubConfig) -> str:
    """Push the run in `out_dir`; returns the dataset's URL. Raises PushFailed or UserError."""
    info = _run_info(out_dir)
    token = find_token()
    files = _files(out_dir, info, target, info.get("config", {}).get("seed", 0))
    # Last line of defence: whatever we send, no key value named in the pipeline goes with it.
    from factory.core.redaction import Redactor

    redact = Redactor.for_config(info.get("config", {}))
    secrets = [s.encode() for s in redact.secrets] + [token.encode()]
    for path, data in files.items():
        if any(s in data for s in secrets):
            raise PushFailed(f"{path} holds a secret value; refusing to push it")
    api = hub_api(token)
    message = target.commit_message or f"factory: {info.get('name', 'run')} ({info['funnel']['kept']} records)"
    _with_retries(lambda: api.create_repo(target.repo_id, repo_type="dataset", private=target.private,
                                          exist_ok=True), target.repo_id)
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    _with_retries(lambda: api.create_commit(target.repo_id, operations, commit_message=message,
                                            repo_type="dataset"), target.repo_id)
    return f"https://huggingface.co/datasets/{target.repo_id}"


def _run_info(out_dir: Path) -> dict[str, Any]:
    path = out_dir / "run.json"
    if not path.is_file():
        raise InputDataError(f"{out_dir}: not a finished run (needs run.json and dataset/ from `factory run`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputDataError(f"{path}: not valid JSON ({err})") from err
    # A run folder from before the run store has no status; one with dataset/ finished.
    status = info.get("status", "complete")
    if status != "complete":
        raise InputDataError(f"{out_dir}: the run is {status}, not complete ({info.get('reason', 'see run.json')}); "
                             f"rerun the same `factory run` command to finish it, then push")
    if info.get("dry_run"):
        raise InputDataError(f"{out_dir}: a --dry-run folder (loopback answers, not a teacher's); "
                             f"run without --dry-run to make a dataset worth pushing")
    if not (out_dir / "dataset").is_dir():
        raise InputDataError(f"{out_dir}: not a finished run (needs run.json and dataset/ from `factory run`)")
    if not info.get("funnel", {}).get("kept"):
        raise InputDataError(f"{out_dir}: the run kept no samples; nothing to push")
    return info


def _files(out_dir: Path, info: dict, target: HubConfig, seed: int) -> dict[str, bytes]:
    from datasets import DatasetDict, disable_progress_bars, load_from_disk

    disable_progress_bars()  # factory prints its own one line per step
    dataset = load_from_disk(str(out_dir / "dataset"))
    splits = {target.split: dataset}
    if target.test_size and len(dataset) >= 2:
        parts = dataset.train_test_split(test_size=target.test_size, seed=seed)
        splits = {target.split: parts["train"], "test": parts["test"]}
    files: dict[str, bytes] = {}
    for name, part in DatasetDict(splits).items():
        buffer = io.BytesIO()
        part.to_parquet(buffer)
        files[f"data/{name}-00000-of-00001.parquet"] = buffer.getvalue()
    examples = [{"messages": row["messages"]} for row in dataset.select(range(min(3, len(dataset))))]
    place = hub_place(target.repo_id, target.config_name, list(splits))
    files["README.md"] = render_card(info, examples, place).encode()
    for name in ("run.json", "report.html") + (("rejected.jsonl",) if target.include_rejected else ()):
        if (out_dir / name).is_file():
            files[name] = (out_dir / name).read_bytes()
    files.update(_reproduction_files(out_dir, info))
    return files


def _reproduction_files(out_dir: Path, info: dict) -> dict[str, bytes]:
    """The run's own copy of its pipeline file and templates (the run folder's
    pipeline/), wherever `factory push` runs from. Seed files and documents stay local:
    they may be private, and the records already carry the seed values they used."""
    snapshot = out_dir / SNAPSHOT_DIR
    files: dict[str, bytes] = {}
    pipeline_file = snapshot / Path(info.get("pipeline_file", "")).name
    if pipeline_file.is_file():
        files[f"factory/{pipeline_file.name}"] = pipeline_file.read_bytes()
    prompts = snapshot / "prompts"
    if prompts.is_dir():
        for path in sorted(p for p in prompts.rglob("*") if p.is_file()):
            files[f"factory/prompts/{path.relative_to(prompts).as_posix()}"] = path.read_bytes()
    return files


def _with_retries(call, repo_id: str):
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(1, RETRIES + 1):
        try:
            return call()
        except HfHubHTTPError as err:
            status = getattr(getattr(err, "response", None), "status_code", None)
            if status in (401, 403):
                raise PushFailed(f"the Hub refused to write {repo_id} (HTTP {status}): check that the token can "
                                 "write there (HF_TOKEN or `hf auth login`); the local run is intact") from err
            if status is not None and status < 500 and status != 429 or attempt == RETRIES:
                raise PushFailed(f"pushing {repo_id} failed: {_short(err)}; the local run is intact, "
                                 "run `factory push` again") from err
        except (OSError, ConnectionError) as err:
            if attempt == RETRIES:
                raise PushFailed(f"cannot reach the Hugging Face Hub ({_short(err)}) after {RETRIES} attempts; "
                                 "the local run is intact, run `factory push` again") from err
        except Exception as err:  # httpx transport errors and the like: worth another try
            if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore") or attempt == RETRIES:
                raise PushFailed(f"pushing {repo_id} failed: {_short(err)}; the local run is intact, "
                                 "run `factory push` again") from err
        time.sleep(2 ** (attempt - 1))


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200]
