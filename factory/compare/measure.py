"""A comparison from end to end: check the inputs and the model, read both sides as
streams, embed same-size samples (through the diversity stage's cache), measure.

The result is a plain dict (compare.json) and depends only on the inputs and the
settings: no times, no local paths (the inputs and a model folder as the outputs show
paths, path_hiding.shown_path), no cache counts, numbers rounded, so the same inputs
give the same file wherever they lie.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from factory.compare import metrics, text_stats, topics
from factory.config.compare import CompareConfig
from factory.compare.sides import Side, read_side
from factory.core.errors import FactoryError, InputDataError, UserError
from factory.core.path_hiding import shown_path
from factory.inputs.records import check_input, iter_records
from factory.core.record import Record

JSON_FILE = "compare.json"
HTML_FILE = "compare.html"
MAP_POINTS = 500  # points a side on the 2-D map
SIDES = ("synthetic", "reference")


def compare_files(synthetic: Path, reference: Path, settings: CompareConfig, out_dir: Path,
                  where: str = "--model") -> tuple[dict[str, Any], int]:
    """`factory compare`: compare.json and compare.html in `out_dir`, its embedding cache
    beside them; returns the result and how many texts had to be embedded."""
    from factory.outputs.compare_page import render_page
    from factory.core.files import atomic_write_text

    for path in (synthetic, reference):
        check_input(path)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: --out is a file, not a folder")
    check_model(settings.model, where)
    result, embedded = measure(iter_records(synthetic), synthetic, iter_records(reference), reference, settings,
                               out_dir, where)
    atomic_write_text(out_dir / JSON_FILE, to_json(result))
    atomic_write_text(out_dir / HTML_FILE, render_page(result))
    return result, embedded


MODEL_HINT = "give a local folder or a cached model"


def check_model(name: str, where: str) -> None:
    """A model that cannot be had here: say so before any work. The diversity stage's
    check, so the same default model is found the same way (a package's local copy)."""
    from filters.diversity.embeddings import check_model as check_embedding_model

    check_embedding_model(name, where, MODEL_HINT)


def load(settings: CompareConfig, where: str):
    """The embedding model; one that cannot load (a misspelt name) is the user's to fix."""
    from filters.diversity.embeddings import load_model

    try:
        return load_model(settings.model, settings.device, hint=f"set {where} to a local folder or a cached model")
    except FactoryError as err:
        raise UserError(f"{where}: {err}") from None


def measure(synthetic: Iterable[tuple[str, Record]], synthetic_path: Path, reference: Iterable[tuple[str, Record]],
            reference_path: Path, settings: CompareConfig, cache_dir: Path | None, where: str
            ) -> tuple[dict[str, Any], int]:
    from threadpoolctl import threadpool_limits

    from factory.core.constants import EMBEDDING_CACHE_FILE
    from filters.base import TextConfig
    from filters.diversity.embeddings import EmbeddingCache, embed

    text = TextConfig(roles=settings.roles).text
    # Each side is read (and checked) before the model loads: a bad row costs no model load.
    roles = ", ".join(settings.roles) if settings.roles else "every role but system"
    sides = [read_side(path, records, text, settings.max_samples, settings.seed, roles)
             for path, records in ((synthetic_path, synthetic), (reference_path, reference))]
    n = min(len(side.sample) for side in sides)
    k = settings.neighbours
    for side in sides:
        if side.rows <= k:
            raise InputDataError(f"{side.path}: {side.rows} records; a comparison with {k} neighbours needs at "
                                 f"least {k + 1} on each side")
    texts = [side.texts(n, settings.seed) for side in sides]
    cache = EmbeddingCache(cache_dir / EMBEDDING_CACHE_FILE) if cache_dir is not None else None
    try:
        vectors, embedded = embed(texts[0] + texts[1], settings.model, cache, settings.device, settings.batch_size,
                                  loader=lambda: load(settings, where))
    finally:
        if cache is not None:
            cache.close()
    # The measures run on one thread: the same numbers whatever the machine's thread count
    # (k-means sums per-thread partial centroids in the order threads finish), and a BLAS
    # that spins its threads on a busy machine is slower than one thread at these sizes.
    with threadpool_limits(limits=1):
        return _measure(sides, texts, vectors, settings), embedded


def _measure(sides: list[Side], texts: list[list[str]], vectors: np.ndarray, settings: CompareConfig
             ) -> dict[str, Any]:
    n, k = len(texts[0]), settings.neighbours
    syn, ref = vectors[:n], vectors[n:]
    tokens = [[text_stats.words(t) for t in side] for side in texts]
    clusters = settings.topics or topics.default_topics(n)
    result: dict[str, Any] = {
        "synthetic": _describe(sides[0], n),
        "reference": _describe(sides[1], n),
        "settings": {**settings.model_dump(exclude={"device", "batch_size"}), "topics": clusters,
                     "model": shown_path(Path(settings.model))},  # a Hub id is relative: as given
        **{name: round(value, 4) for name, value in metrics.prdc(ref, syn, k).items()},
    }
    detail = metrics.mauve(syn, ref, settings.seed)
    result["mauve"] = round(detail.pop("mauve"), 4)
    result["mauve_detail"] = detail
    result["vendi"] = {side: round(metrics.vendi(v), 3) for side, v in zip(SIDES, (syn, ref))}
    result["lengths"] = {"unit": "words",
                         **text_stats.compare_distributions(sides[0].lengths, sides[1].lengths, SIDES)}
    result["distinct_n"] = {
        str(g): {"corpus": {side: round(text_stats.corpus_distinct(t, g), 4) for side, t in zip(SIDES, tokens)},
                 "per_record": text_stats.compare_distributions(sides[0].distinct[g], sides[1].distinct[g], SIDES)}
        for g in text_stats.NGRAM_SIZES}
    result["phrases"] = text_stats.phrases(*tokens)
    result["topics"] = topics.topic_clusters(syn, ref, texts[0], texts[1], min(clusters, 2 * n), settings.seed)
    result["map"] = _map(syn, ref, settings.seed)
    return result


def _describe(side: Side, n: int) -> dict[str, Any]:
    return {"path": shown_path(Path(side.path)), "rows": side.rows, "sampled": n, "without_text": side.empty}


def _map(synthetic: np.ndarray, reference: np.ndarray, seed: int) -> dict[str, list[list[float]]]:
    """Both samples projected to 2-D (PCA of the pooled sample), up to MAP_POINTS a side."""
    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.choice(len(v), size=min(len(v), MAP_POINTS), replace=False)) for v in (synthetic, reference)]
    pooled = np.vstack([synthetic, reference]).astype(np.float64)
    centre = pooled.mean(axis=0)
    _, _, vt = np.linalg.svd(pooled - centre, full_matrices=False)
    out = {}
    for side, v, pick in zip(SIDES, (synthetic, reference), picks):
        xy = (v[pick] - centre) @ vt[:2].T
        out[side] = np.round(xy, 4).tolist()
    return out


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
