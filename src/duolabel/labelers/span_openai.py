"""The ``openai`` backend in a ``spans`` project: extraction through the server, cached and budgeted.

:class:`~duolabel.labelers.span_labeler.LLMSpanLabeler` asks a text generator for each item's
entities (:mod:`duolabel.labelers.llm_spans`). For the ``openai`` backend that generator is
:class:`ListGenerator` (an :class:`~duolabel.labelers.generation.OpenAIGenerator` that reads
past the first line), wrapped in
:class:`CachedGenerator`, which gives it what the openai labeler has: every reply is written
to the project's response cache as soon as it arrives (extraction is greedy, so a cached
reply is the reply; a re-run pays nothing for it), and ``labeler.budget`` bounds what one
call spends (tokens at the project's prices and the machine's time, as the ledger counts
them). When the budget is reached no further request is sent and
:class:`~duolabel.labelers.base.LabelingStopped` says so; the items answered so far are kept.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from duolabel.config import OpenAILabelerConfig
from duolabel.context import Context
from duolabel.labelers.base import LabelingStopped, Usage
from duolabel.labelers.cache import ResponseCache, cache_key
from duolabel.labelers.generation import Generated, OpenAIGenerator, TextGenerator

__all__ = ["CachedGenerator", "ListGenerator", "openai_span_generator"]


class CachedGenerator:
    """A :class:`~duolabel.labelers.generation.TextGenerator` with a response cache and a budget.

    Parameters
    ----------
    generator : TextGenerator
        What writes (an :class:`~duolabel.labelers.generation.OpenAIGenerator`).
    cache : ResponseCache, optional
        Where replies are kept, by model, prompt and settings.
    budget : float, optional
        Most this generator may spend; once reached, the next uncached prompt raises
        :class:`~duolabel.labelers.base.LabelingStopped` instead of being sent.
    price_input_per_million, price_output_per_million, price_compute_hour : float
        The project's prices (``costs``), for ``cost``.

    Examples
    --------
    >>> from duolabel.labelers.cache import MemoryResponseCache
    >>> class Echo:
    ...     identity = {"backend": "echo"}
    ...     def generate(self, prompt, *, max_tokens, temperature, seed):
    ...         return Generated(text=prompt[::-1], input_tokens=1000, output_tokens=1000)
    >>> gen = CachedGenerator(Echo(), cache=MemoryResponseCache(), budget=0.002,
    ...                       price_input_per_million=1.0, price_output_per_million=1.0)
    >>> gen.generate("ab", max_tokens=5, temperature=0.0, seed=0).text, gen.cost
    ('ba', 0.002)
    >>> gen.generate("ab", max_tokens=5, temperature=0.0, seed=0).text, gen.cached  # from the cache
    ('ba', 1)
    >>> gen.generate("cd", max_tokens=5, temperature=0.0, seed=0)
    Traceback (most recent call last):
    duolabel.labelers.base.LabelingStopped: the budget of 0.002 was reached (cost 0.002); ...
    """

    def __init__(
        self,
        generator: TextGenerator,
        *,
        cache: ResponseCache | None = None,
        budget: float | None = None,
        price_input_per_million: float = 0.0,
        price_output_per_million: float = 0.0,
        price_compute_hour: float = 0.0,
    ) -> None:
        self.generator = generator
        self.identity = generator.identity
        self.cache = cache
        self.budget = budget
        self.prices = (price_input_per_million, price_output_per_million, price_compute_hour)
        self.cost = 0.0
        self.cached = 0
        self.requests = 0
        self.started = time.perf_counter()

    def restart(self) -> None:
        """A new call: the budget counts from here (as the openai labeler's is per call)."""
        self.cost, self.started = 0.0, time.perf_counter()

    def spent(self) -> float:
        """Tokens paid for plus the machine's time since this generator was made."""
        return self.cost + self.prices[2] * (time.perf_counter() - self.started) / 3600

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int) -> Generated:
        key = cache_key(
            kind="generate", **self.identity, prompt=prompt, max_tokens=max_tokens,
            temperature=temperature, seed=seed,
        )  # fmt: skip
        found = self.cache.get(key) if self.cache is not None else None
        if found is not None:
            self.cached += 1
            return Generated(**found)
        if self.budget is not None and self.spent() >= self.budget:
            raise LabelingStopped(
                f"the budget of {self.budget:g} was reached (cost {self.spent():.4g}); raise "
                "labeler.budget, or run again to continue (answered items are cached)",
                probs=np.zeros((0, 0)),
                usage=Usage(),
            )
        out = self.generator.generate(prompt, max_tokens=max_tokens, temperature=temperature, seed=seed)
        self.requests += 1
        self.cost += (out.input_tokens * self.prices[0] + out.output_tokens * self.prices[1]) / 1e6
        if self.cache is not None:
            self.cache.put(key, out.as_dict())  # at once: a run stopped later keeps what it paid for
        return out


class ListGenerator(OpenAIGenerator):
    """The server's continuation up to a blank line, not the end of the first one: a model
    often opens the JSON list on a new line and spreads its objects over several, and the
    reply is read as JSON, which lines do not change.

    Examples
    --------
    >>> from duolabel.labelers.openai import OpenAILabeler
    >>> ListGenerator(OpenAILabeler(labels=["PER"], model="m", base_url="http://127.0.0.1:8000/v1")).stop
    ('\\n\\n', '\\nText:')
    """

    stop = ("\n\n", "\nText:")  # a blank line, or the model writing the next item itself

    def __init__(self, labeler: Any) -> None:
        super().__init__(labeler)
        self.identity = {**self.identity, "stop": list(self.stop)}  # another reply: another key


def openai_span_generator(ctx: Context, cfg: OpenAILabelerConfig) -> CachedGenerator:
    """The generator of a spans project's ``openai`` entry (what
    :class:`~duolabel.labelers.span_labeler.LLMSpanLabeler` asks): the server's, with the
    store's response cache and the entry's budget."""
    from duolabel.labelers.cache import StoreResponseCache
    from duolabel.labelers.openai import OpenAILabeler

    task, costs = ctx.config.task, ctx.config.costs
    server = OpenAILabeler(
        labels=task.label_names,
        model=cfg.model,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        endpoint=cfg.endpoint,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
    )
    return CachedGenerator(
        ListGenerator(server),
        cache=StoreResponseCache(ctx.store),
        budget=cfg.budget,
        price_input_per_million=costs.llm_input_per_million,
        price_output_per_million=costs.llm_output_per_million,
        price_compute_hour=costs.compute_hour,
    )
