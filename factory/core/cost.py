"""What a run costs, and the cap that stops it before it costs more.

Prices are per million tokens (`teacher.price: {input, output}`), per teacher (a
judge or a dialogue role may have its own). One `Budget` is shared by every engine of
a run: generation, the roles, the judge. Before a request is sent its cost is
estimated at the worst case (the prompt, and every token `max_tokens` allows) and
held until it is answered; a request that does not fit waits while others are in
flight (what they do not use comes back), and when it still does not fit with nothing
in flight, no new request starts and the run stops with BudgetReached. Requests
paid by an earlier invocation of the run count as spent: they were paid for once, and
`max_cost` caps what the dataset costs, not one invocation.
"""

from __future__ import annotations

from factory.core.errors import FactoryError


HOLD_POLL_S = 0.02  # how often a request waiting for budget looks again


def effective_price(config):
    """What the teacher charges per million tokens: `teacher.price`, less
    `teacher.batch.discount` in batch mode (both providers charge half for batches).
    None without a price."""
    price = getattr(config, "price", None)
    if price is None or getattr(config, "mode", "online") != "batch":
        return price
    factor = 1.0 - config.batch.discount
    return price.model_copy(update={name: value * factor for name, value in price.model_dump().items()
                                    if isinstance(value, float)})


class BudgetReached(FactoryError):
    """The next request could take the run over max_cost; what completed is stored."""


def request_cost(price, prompt_tokens: float, completion_tokens: float, cached_tokens: float = 0) -> float:
    """Cost in the price's currency of one request's tokens; 0 without a price.

    `cached_tokens` (of the prompt, served from the provider's cache) are billed at
    `price.cached_input` when set; completion tokens include any reasoning tokens, which
    providers bill as output."""
    if price is None:
        return 0.0
    cached = min(cached_tokens, prompt_tokens) if price.cached_input is not None else 0
    return ((prompt_tokens - cached) * price.input + cached * (price.cached_input or 0.0)
            + completion_tokens * price.output) / 1_000_000


class Budget:
    def __init__(self, max_cost: float | None, already: float = 0.0):
        self.max_cost = max_cost
        self.spent = 0.0  # paid by this invocation
        self.replayed = already  # paid by earlier invocations of the run (the run store knows)
        self.reserved = 0.0  # worst cases of requests in flight
        self.in_flight = 0

    @property
    def total(self) -> float:
        return self.spent + self.replayed

    def reserve(self, worst: float, tokens: tuple[int, int] = (0, 0)) -> None:
        """Hold `worst`, the most a request can cost (`tokens`: its prompt and its
        max_tokens), or raise BudgetReached when that could take the run over max_cost."""
        if self.max_cost is not None and self.total + self.reserved + worst > self.max_cost:
            flight = (f", {self.reserved:.4f} held for {self.in_flight} request{'s' if self.in_flight != 1 else ''} "
                      "in flight" if self.in_flight else "")
            raise BudgetReached(
                f"max_cost {self.max_cost:g} would be passed, so no new request starts: {self.total:.4f} spent"
                f"{flight}, and the next request can cost up to {worst:.4f} ({tokens[0]:,} prompt + up to "
                f"{tokens[1]:,} completion tokens); raise max_cost and run again to continue "
                "(completed requests are replayed from the run store, not paid again)")
        self.reserved += worst
        self.in_flight += 1

    async def hold(self, worst: float, tokens: tuple[int, int] = (0, 0)) -> None:
        """`reserve`, waiting while requests in flight hold the budget: most answers cost
        far less than their worst case, and what they do not use comes back. Raises
        BudgetReached only when nothing is in flight and the request still does not fit."""
        import asyncio

        while True:
            try:
                return self.reserve(worst, tokens)
            except BudgetReached:
                if not self.in_flight:
                    raise
            await asyncio.sleep(HOLD_POLL_S)

    def release(self, worst: float) -> None:
        self.reserved -= worst
        self.in_flight -= 1


def cost_entry(budget: Budget, config, total: float | None = None) -> dict:
    """run.json's `cost` (for the card and the report): what the dataset cost, in the
    teacher's currency (`total`: the whole run's, from the store); empty when nothing is
    priced and nothing was spent."""
    price = config.teacher.price
    total = budget.total if total is None else total
    if not (price or config.max_cost or total):
        return {}
    return {"cost": {"currency": price.currency if price else "USD", "total": round(total, 6),
            "paid_now": round(budget.spent, 6), "replayed_from_journal": round(max(0.0, total - budget.spent), 6),
            "max_cost": config.max_cost,
            "price_per_million": _per_million(price),
            **({"batch_discount": config.teacher.batch.discount} if config.teacher.mode == "batch" else {})}}


def _per_million(price) -> dict | None:
    if price is None:
        return None
    out = {"input": price.input, "output": price.output}
    if price.cached_input is not None:
        out["cached_input"] = price.cached_input
    return out


def token_summary(usage: dict) -> str:
    """"1,200 prompt (800 cached) + 300 completion (120 thinking)": the parts only when there are any."""
    cached, thinking = usage.get("cached_tokens"), usage.get("reasoning_tokens")
    return (f"{usage.get('prompt_tokens', 0):,} prompt" + (f" ({cached:,} cached)" if cached else "")
            + f" + {usage.get('completion_tokens', 0):,} completion" + (f" ({thinking:,} thinking)" if thinking else ""))
