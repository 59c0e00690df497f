"""What `factory compare` and a pipeline's `output.reference` can set; defaults live here."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from factory.core.constants import DEFAULT_EMBEDDING_MODEL
from factory.core.strict import Strict


class CompareConfig(Strict):
    # The sentence-embedding model both sides are embedded with (the diversity stage's by
    # default, so a run's cache already holds the synthetic side).
    model: str = DEFAULT_EMBEDDING_MODEL
    # The roles whose contents are compared; by default every role but `system`.
    roles: list[str] | None = Field(None, min_length=1)
    # Records drawn from each side (seeded, uniformly): both sides are cut to the same
    # size, since every k-NN measure, MAUVE, Vendi and distinct-n depend on it.
    max_samples: int = Field(5000, ge=10)
    # k of the k-nearest-neighbour balls (Naeem et al. 2020 use 5).
    neighbours: int = Field(5, ge=1, le=100)
    # Topic clusters; by default about sqrt(2 x sample)/2, at most 20.
    topics: int | None = Field(None, ge=2, le=200)
    seed: int = 0
    device: str | None = None
    batch_size: int = Field(64, ge=1)


class ReferenceConfig(CompareConfig):
    """`output.reference`: a path alone, or a mapping with `path` and any comparison setting."""

    path: str

    @model_validator(mode="before")
    @classmethod
    def _a_path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    def settings(self) -> CompareConfig:
        return CompareConfig(**self.model_dump(exclude={"path"}))
