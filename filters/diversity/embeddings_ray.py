"""Embeddings computed by a pool of Ray actors, one per GPU of the cluster (one per CPU
without GPUs), each loading the model once; chunks of texts go to whichever actor is
free and come back in order. Only the texts the cache lacks are sent: the driver
writes what comes back to the same cache a local run reads (filters/diversity/embeddings.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHUNK_TEXTS = 2048  # texts one actor encodes per call


class Embedder:
    """A Ray actor holding one loaded model."""

    def __init__(self, model_name: str, device: str | None):
        from filters.diversity.embeddings import load_model

        self.model = load_model(model_name, device)

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False).astype(np.float32)


def pool_encoder(ray: Any, model_name: str, device: str | None, batch_size: int, actors: int | None = None):
    """A function texts -> unit-length float32 vectors, computed on the cluster."""

    def encode(texts: list[str]) -> np.ndarray:
        from ray.util import ActorPool

        gpus = int(ray.cluster_resources().get("GPU", 0))
        size = actors or max(1, gpus or int(ray.cluster_resources().get("CPU", 1)))
        size = min(size, -(-len(texts) // CHUNK_TEXTS))  # no more actors than chunks
        actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=0 if gpus else 1)(Embedder)
        members = [actor.remote(model_name, device) for _ in range(size)]
        try:
            chunks = [texts[i: i + CHUNK_TEXTS] for i in range(0, len(texts), CHUNK_TEXTS)]
            parts = ActorPool(members).map(lambda a, chunk: a.encode.remote(chunk, batch_size), chunks)
            return np.concatenate(list(parts))
        finally:
            for member in members:
                ray.kill(member)

    return encode
