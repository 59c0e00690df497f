"""How big a generated dataset is: the `count`, `keep`, `balance` keys every task's `generate:` shares."""

from __future__ import annotations

from pydantic import Field, model_validator

from factory.core.strict import Strict


class Sizing(Strict):
    """How big the dataset is: `count` samples requested, or `keep` samples kept.

    With `keep`, generation tops up in rounds (at most `max_rounds`) until the filters
    have kept exactly that many; `count` is then the first round's size (default: keep).
    `balance` gives each value of a seed variable (a list: each combination; a mapping
    {VAR: {value: weight}}: weighted shares) its quota of `keep` (see factory/run/quota.py).
    """

    count: int | None = Field(None, gt=0)
    keep: int | None = Field(None, gt=0)
    balance: str | list[str] | dict[str, dict[str, float] | None] | None = None
    max_rounds: int = Field(5, ge=1, le=100)

    @model_validator(mode="after")
    def _size(self):
        if self.count is None and self.keep is None and self.needs_count():
            raise ValueError("give count (samples to request) or keep (samples the dataset must end with)")
        if self.balance is not None and self.keep is None:
            raise ValueError("balance needs keep (the total to divide among the cells)")
        if self.count is None and self.keep is not None:
            self.__dict__["count"] = self.keep  # not through validate_assignment: no revalidation loop
        return self

    @classmethod
    def needs_count(cls) -> bool:
        return True
