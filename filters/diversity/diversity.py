"""Embedding diversity: keep a budget of records that cover the space, not repeat it.

Two selections over sentence-transformers embeddings (cached per text):
- `threshold` (DEITA's score-first method): walk records from the best judge score
  down (input order when unscored), keep one unless its cosine similarity to a kept
  record reaches `threshold`, until `budget` are kept;
- `kcenter`: greedy max-min distance to `budget` records, for data without scores.
`auto` takes the first when records carry judge scores, else the second when a budget
is set. Each dropped record names its nearest kept record and their similarity.

`selection` says how: `exact` compares every record with every kept one in this
process; `clustered` (filters/diversity/clustered.py) runs the same selection inside
k-means clusters, as tasks (Ray tasks under `executor.type: ray`), and reports its
agreement with the exact selection; `auto` clusters from AUTO_CLUSTERED_RECORDS records.
The choice depends on the data only, never on the executor: the same dataset anywhere.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from factory.core.constants import DEFAULT_EMBEDDING_MODEL, EMBEDDING_CACHE_FILE
from factory.core.record import Record
from filters.base import Stage, TextConfig
from filters.diversity.parts import Spilled, spill_and_embed
from filters.ray_parts import work_folder
from filters.walk_order import walk_order

PROJECTION_POINTS = 1000  # points of the 2-D kept/dropped map kept for the report


class Diversity(Stage):
    name = "diversity"

    class Config(TextConfig):
        model: str = DEFAULT_EMBEDDING_MODEL
        method: Literal["auto", "threshold", "kcenter"] = "auto"
        # How many to keep: a count, or a fraction of the records that reach this stage.
        budget: int | float | None = Field(None, gt=0)
        threshold: float = Field(0.9, gt=0, le=1)
        batch_size: int = Field(64, ge=1)
        device: str | None = None
        cache: bool = True
        selection: Literal["auto", "exact", "clustered"] = "auto"
        # k-means clusters (clustered selection); by default about 10,000 records each.
        clusters: int | None = Field(None, ge=1)
        # Neighbouring clusters each record's near-duplicates are also looked for in.
        probes: int = Field(2, ge=0, le=32)
        # Records the agreement with the exact selection is measured on (0: not measured).
        agreement_sample: int = Field(1000, ge=0)
        seed: int = 0  # of the k-means sample and start, and of the agreement sample

        @model_validator(mode="after")
        def _budget(self):
            if self.selection == "exact" and self.clusters is not None:
                raise ValueError("clusters: only with selection clustered or auto (selection is exact)")
            if isinstance(self.budget, float) and self.budget > 1:
                raise ValueError("budget: a fraction must be at most 1 (or give a whole count)")
            if self.method == "kcenter" and self.budget is None:
                raise ValueError("method kcenter needs a budget (how many records to keep)")
            return self

    def __init__(self, config=None, **options) -> None:
        super().__init__(config, **options)
        self.embedded = 0
        self.method_used = ""
        self.selection_used: dict[str, Any] = {}
        self.projection: dict[str, list] = {}

    def check_models(self) -> None:
        from filters.diversity.embeddings import check_model

        check_model(self.config.model, f"{self.where}.model")

    def budget_for(self, n: int) -> int | None:
        b = self.config.budget
        if b is None:
            return None
        return max(1, round(b * n)) if isinstance(b, float) else int(b)

    def process(self, records: Iterable[Record]) -> Iterator[Record]:
        """The records stream to disk with their embeddings (filters/diversity/parts.py)
        and are read back to be kept or dropped: this process holds a few numbers per
        record, never the records or the matrix."""
        c = self.config
        with contextlib.ExitStack() as stack:
            work = stack.enter_context(work_folder(self, "diversity"))
            cluster = self.context.cluster if self.context else None
            spilled = spill_and_embed(records, work, c.text, stack.enter_context(self._embedder(cluster)),
                                      c.fields or ())
            self.embedded = spilled.embedded
            c.check_fields(spilled.witnesses, self.where)
            if spilled.count:
                yield from self._keep(work, spilled, cluster)

    @contextlib.contextmanager
    def _embedder(self, cluster: Any) -> Iterator[Callable[[list[str]], tuple[np.ndarray, int]]]:
        """texts -> (their vectors, how many were computed): from the cache, else the model
        (loaded once, when first needed) or the cluster's actor pool."""
        from filters.diversity.embeddings import EmbeddingCache, embed, load_model

        c = self.config
        cache = EmbeddingCache(self.context.out_dir / EMBEDDING_CACHE_FILE) if c.cache and self.context else None
        encode = None
        if cluster is not None:  # the embeddings on the cluster's actors
            from filters.diversity.embeddings_ray import pool_encoder

            encode = pool_encoder(cluster.ray(), c.model, c.device, c.batch_size)
        model = functools.cache(lambda: load_model(c.model, c.device))
        try:
            yield lambda texts: embed(texts, c.model, cache, c.device, c.batch_size, loader=model, encode=encode)
        finally:
            if cache is not None:
                cache.close()

    def _keep(self, work: Path, spilled: "Spilled", cluster: Any) -> Iterator[Record]:
        from filters.diversity.select import kcenter_select, threshold_select
        from filters.ray_parts import ids, read_back

        c = self.config
        vectors, scores = spilled.vectors, spilled.scores
        scored = any(s is not None for s in scores)
        budget = self.budget_for(spilled.count)
        method = c.method
        if method == "auto":
            method = "threshold" if scored or budget is None else "kcenter"
        self.method_used = method
        if self._clustered(spilled.count):
            selection = self._select_clustered(vectors, method, scores if scored else None, budget, cluster)
        elif method == "kcenter":
            self.selection_used = {"selection": "exact"}
            first = int(np.argmax([s if s is not None else -np.inf for s in scores])) if scored else 0
            selection = kcenter_select(vectors, budget, first=first)
        else:
            self.selection_used = {"selection": "exact"}
            selection = threshold_select(vectors, walk_order(scores, spilled.count), c.threshold, budget)
        kept = np.zeros(spilled.count, dtype=bool)
        kept[selection.kept] = True
        self.projection = _projection(vectors, kept)
        named = ids(work, spilled.parts, np.unique(selection.nearest[~kept]))
        for i, record in enumerate(read_back(work, spilled.parts)):
            if kept[i]:
                yield record
                continue
            near = named[int(selection.nearest[i])]
            similarity = round(float(selection.similarity[i]), 4)
            if selection.too_similar[i]:
                self.drop(record, "too_similar", f"cosine {similarity:.3f} with {near} (threshold {c.threshold:g})",
                          nearest_kept=near, similarity=similarity)
            else:
                self.drop(record, "over_budget", f"budget of {budget} reached; nearest kept {near} at cosine "
                          f"{similarity:.3f}", nearest_kept=near, similarity=similarity)

    def _clustered(self, n: int) -> bool:
        from filters.diversity.clustered import AUTO_CLUSTERED_RECORDS

        return self.config.selection == "clustered" or (self.config.selection == "auto" and n >= AUTO_CLUSTERED_RECORDS)

    def _select_clustered(self, vectors: np.ndarray, method: str, scores: list | None, budget: int | None,
                          cluster: Any):
        from filters.diversity import clustered as dc

        c = self.config
        run = dc.run_here
        if cluster is not None:
            run = dc.ray_runner(cluster.ray())
        k = dc.cluster_count(len(vectors), budget, method, c.clusters)
        hoods = dc.partition(vectors, k, c.probes, c.seed, run)
        if method == "kcenter":
            values = None if scores is None else np.array([np.nan if s is None else s for s in scores], dtype=float)
            result = dc.kcenter_clustered(vectors, budget, values, hoods, run, c.agreement_sample, c.seed)
        else:
            order = walk_order(scores or (), len(vectors))
            result = dc.threshold_clustered(vectors, order, c.threshold, budget, hoods, run, c.agreement_sample, c.seed)
        self.selection_used = {"selection": "clustered", **result.info}
        return result.selection

    def funnel(self) -> dict[str, Any]:
        out = {**super().funnel(), "method": self.method_used, **self.selection_used, "embedded": self.embedded}
        if self.projection:
            out["projection"] = self.projection
        return out


def _projection(vectors: np.ndarray, kept: np.ndarray) -> dict[str, list]:
    """A 2-D PCA map of (a sample of) the records, kept versus dropped, for the report."""
    n = len(vectors)
    if n < 3:
        return {}
    pick = np.random.default_rng(0).choice(n, size=min(n, PROJECTION_POINTS), replace=False)
    pick.sort()
    sample = vectors[pick] - vectors[pick].mean(axis=0)
    _, _, vt = np.linalg.svd(sample, full_matrices=False)
    xy = sample @ vt[:2].T
    return {"x": np.round(xy[:, 0], 4).tolist(), "y": np.round(xy[:, 1], 4).tolist(),
            "kept": kept[pick].tolist()}
