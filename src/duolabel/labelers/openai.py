"""The ``openai`` labeler: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp server).

Each item becomes one prompt (:func:`~duolabel.labelers.prompts.build_prompt`, with few-shot
examples from the golden set). The distribution over the labels is read from the
log-probabilities of the first answer token: every top token is matched to the label(s) it
spells the start of, their probabilities are summed per label and renormalised over the
labels. A server that returns no log-probabilities is asked for a few samples instead and
the vote share is used; ``verbalized=True`` asks the model to state its confidence.

Requests run concurrently (bounded per server), each with a timeout. ``base_url`` may name
several servers serving the same model (a fleet, :mod:`duolabel.labelers.fleet`): each
request goes to the least-loaded one, a failed request (refused, timed out, 5xx, rate
limited) is retried on another, and a server that keeps failing leaves the rotation for a
while. With one server, a failed request is retried on it with exponential backoff. Every
answer is written to the response cache as soon as it arrives, so a run stopped by its
budget, dead servers or a Ctrl-C is resumed by running it again, without paying twice for
what was answered.

Requests are shaped for label scoring: no more top tokens than there are labels are asked
for, and the prompt puts what every item shares first (instructions, labels), the item
last, so a server that caches prompt prefixes reuses it; ``cache_prompt=True`` asks
llama.cpp's server to do so explicitly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import re
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from duolabel.core.calibration import contextual_correction
from duolabel.core.prompt_variants import variant_features
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import LabelingStopped, Progress, TextItem, Usage
from duolabel.labelers.cache import ResponseCache, cache_key
from duolabel.labelers.fewshot import encoder_name
from duolabel.labelers.fleet import Fleet, Server, take
from duolabel.labelers.prompts import CONTENT_FREE, PromptedLabeler

__all__ = ["LabelingStopped", "OpenAILabeler", "logprob_distribution", "match_label"]

OPENAI_URL = "https://api.openai.com/v1"
# A local server (llama.cpp, vLLM, Ollama) checks no key, but the client insists on one.
PLACEHOLDER_KEY = "not-needed"
SAMPLE_TOKENS = 8  # enough to spell a label name when sampling answers as text
VERBALIZED_TOKENS = 16  # a label name, a comma and a number
VERBALIZED_HINT = (
    "After the label, say how sure you are that it is right, as a number from 0 to 1, "
    "in the form: label, confidence."
)
_PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2026\u2013\u2014 "
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:label|answer|category|class)\s*(?:is\s*)?[:=]?\s*")
_CONFIDENCE = re.compile(
    r"^(?P<label>.*?)[\s,;:(\[-]*(?:confidence\s*[:=]?\s*)?(?P<conf>\d*\.?\d+)[)\]]?\s*$"
)
_RETRYABLE_STATUS = {408, 409, 425, 429}
_NO_LOGPROBS = re.compile(
    r"logprob.*(not supported|unsupported|not support)|(not support|unsupported).*logprob", re.I
)
Mode = Literal["logprobs", "samples", "verbalized"]


# -- answers to labels (pure functions) ---------------------------------------


def _norm(text: str) -> str:
    """Case, spacing, ``_``/``-`` and surrounding punctuation do not change a label."""
    text = text.lower().replace("_", " ").replace("-", " ")
    return " ".join(text.split()).strip(_PUNCTUATION)


def match_label(answer: str, labels: Sequence[str]) -> int | None:
    """The index of the label a free-text answer names, or None when that is not clear.

    The first non-empty line is read. It names a label when, ignoring case, spacing and
    punctuation, it equals the label, is the start of exactly one label, or starts with
    exactly one label followed by a separator (``billing, 0.9``). Anything else, including
    an answer that fits two labels equally, is None: the item is then an abstention.

    Examples
    --------
    >>> match_label(" Billing.", ["billing", "shipping"]), match_label("ship", ["billing", "shipping"])
    (0, 1)
    >>> match_label("refund", ["billing", "shipping"]) is None
    True
    """
    line = _norm(next((ln for ln in answer.splitlines() if ln.strip()), ""))
    names = [_norm(label) for label in labels]
    # "Label: billing" is read as "billing", unless "label: billing" is itself a label.
    for got in dict.fromkeys([line, _ANSWER_PREFIX.sub("", line)]):
        if not got:
            continue
        for fits in (
            lambda name, got=got: name == got,
            lambda name, got=got: name.startswith(got),
            lambda name, got=got: re.match(re.escape(name) + r"\s*[,;:(|/]", got) is not None,
        ):
            hits = [i for i, name in enumerate(names) if name and fits(name)]
            if hits:
                return hits[0] if len(hits) == 1 else None
    return None


def logprob_distribution(
    positions: Sequence[Sequence[tuple[str, float]]], labels: Sequence[str]
) -> np.ndarray | None:
    """Probabilities over ``labels`` from the top log-probabilities of the answer tokens.

    ``positions`` holds, for each generated token in order, its top ``(token, logprob)``
    pairs, the chosen token first. At the first position where any top token spells the
    start of a label (ignoring case and spacing), each such token's probability goes to
    the label(s) it fits, split evenly when it fits several, and the result is
    renormalised over the labels. Positions whose chosen token is only whitespace or
    punctuation (a newline, ``**``) are skipped; a position chosen as some other word
    ends the search: the answer is not a label, and the result is None (an abstention).
    """
    names = [_norm(label) for label in labels]
    for top in positions:
        mass = np.zeros(len(labels))
        for token, logprob in top:
            tok = _norm(token)
            if not tok or not math.isfinite(logprob):
                continue
            hits = [i for i, name in enumerate(names) if name.startswith(tok)]
            if hits:
                mass[hits] += math.exp(logprob) / len(hits)
        if mass.sum() > 0:
            return mass / mass.sum()
        if not top or _norm(top[0][0]):
            return None
    return None


def _verbalized_distribution(answer: str, labels: Sequence[str]) -> np.ndarray | None:
    """``label, 0.8`` -> 0.8 on the label and the rest spread evenly; None if unreadable."""
    line = next((ln.strip() for ln in answer.splitlines() if ln.strip()), "")
    found = _CONFIDENCE.match(line)
    if found is None:
        return None
    label = match_label(found["label"], labels)
    confidence = float(found["conf"])
    if label is None or not 0.0 <= confidence <= 1.0:
        return None
    if len(labels) == 1:
        return np.ones(1)
    probs = np.full(len(labels), (1.0 - confidence) / (len(labels) - 1))
    probs[label] = confidence
    return probs


def _vote_share(texts: Sequence[str], labels: Sequence[str]) -> np.ndarray | None:
    votes = np.zeros(len(labels))
    for text in texts:
        label = match_label(text, labels)
        if label is not None:
            votes[label] += 1
    return votes / votes.sum() if votes.sum() else None


# -- the labeler ----------------------------------------------------------------


@dataclass
class _Run:
    """The state of one ``predict_proba`` call (so that threads may share a labeler)."""

    probs: np.ndarray
    done: np.ndarray
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    sampled: int = 0
    no_logprobs: bool = False
    failure: str | None = None
    requests: int = 0  # answered HTTP requests: what the server did (and may bill)


@dataclass(kw_only=True, eq=False, repr=False)
class OpenAILabeler(PromptedLabeler):
    """Labels items with a model behind any OpenAI-compatible API.

    Parameters
    ----------
    model : str
        The model name sent to the server.
    base_url : str or list of str, optional
        The server (``http://127.0.0.1:8000/v1``); OpenAI itself when omitted. A list is a
        fleet serving the same model: requests go to the least-loaded server and fail over to
        another. Cache keys and the version follow the first URL only, so servers may be
        added to or removed after it without asking anything again.
    api_key_env : str
        The environment variable holding the API key. The key is read from there only and
        never stored or logged; a server at ``base_url`` needs none.
    endpoint : {"completions", "chat"}
        ``/v1/completions`` (the prompt is continued) or ``/v1/chat/completions`` (the
        prompt is one user message).
    top_logprobs : int
        Most top tokens read at each answer position (OpenAI allows 5 on completions, 20
        on chat); no more than there are labels is asked for. 0 never asks for
        log-probabilities: the vote share of samples is used.
    samples : int
        Answers sampled (temperature 1) per item when the server gives no log-probabilities.
    verbalized : bool
        Ask for "label, confidence" (0 to 1) and use the stated confidence instead.
    answer_tokens : int
        Tokens generated per answer when reading log-probabilities; more lets the reading
        look past leading whitespace or markup, at a cost on servers that compute top
        tokens slowly (llama.cpp's Python server takes about 1 s per token for Gemma).
    concurrency : int
        Requests in flight at once on each server.
    timeout : float
        Seconds one request may take.
    max_retries : int
        Retries of a request after a rate limit, server error, timeout or lost connection.
    backoff : float
        Seconds before the first retry on a server the request already failed on, doubled
        for each next one.
    cooldown : float
        Seconds a server of a fleet that failed twice in a row is left out of the rotation,
        doubled each time it is left out again; then it is tried again.
    cache_prompt : bool
        Send llama.cpp's ``cache_prompt: true``, so the server keeps the shared prompt prefix
        (instructions and labels) in its KV cache; only for llama.cpp's server (other servers
        may refuse an unknown field). Not part of the cache keys: the answer is the same.
    budget : float, optional
        Most this call may spend (in the currency of the prices); once the cost of its
        answered requests and of the time spent (``price_compute_hour``) reaches it, no new
        request is sent. Requests already in flight finish, so the cost can pass the budget by up
        to ``concurrency`` times the number of servers, less one, requests.
    price_input_per_million, price_output_per_million : float
        Price per million prompt and completion tokens, for ``Usage.extra["cost"]``.
    price_compute_hour : float
        Price of an hour of this machine's time; the budget counts it with the tokens, as
        the runs ledger does.
    cache : ResponseCache, optional
        Where answers are kept; a cached answer costs no request.
    seed : int
        Seed of the sampled answers.
    labels, descriptions, instructions, few_shot, encode, demos, contextual, prompt_variants
        As for :class:`~duolabel.labelers.prompts.PromptedLabeler`: the project's words,
        the few-shot settings and contextual calibration (three more requests per distinct
        set of examples: once in all with ``demos`` or ``few_shot=0``, per item otherwise).

    Examples
    --------
    >>> labeler = OpenAILabeler(labels=["billing", "shipping"], model="gemma-3-270m",
    ...                         base_url="http://127.0.0.1:8000/v1")
    >>> probs, usage = labeler.fit(golden, gold).predict_proba(items)  # doctest: +SKIP

    Two servers of the same model; answers are cached under the first one's address:

    >>> fleet = OpenAILabeler(labels=["billing", "shipping"], model="gemma-3-270m",
    ...                       base_url=["http://10.0.0.1:8000/v1/", "http://10.0.0.2:8000/v1"])
    >>> fleet.urls
    ['http://10.0.0.1:8000/v1', 'http://10.0.0.2:8000/v1']
    """

    name = "openai"

    model: str
    base_url: str | Sequence[str] | None = None
    api_key_env: str = "OPENAI_API_KEY"
    endpoint: Literal["completions", "chat"] = "completions"
    top_logprobs: int = 5
    samples: int = 5
    verbalized: bool = False
    answer_tokens: int = 2
    concurrency: int = 4
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 0.5
    cooldown: float = 30.0
    cache_prompt: bool = False
    budget: float | None = None
    price_input_per_million: float = 0.0
    price_output_per_million: float = 0.0
    price_compute_hour: float = 0.0
    cache: ResponseCache | None = None

    # -- prompts and keys ---------------------------------------------------

    @property
    def urls(self) -> list[str]:
        """The servers' addresses (one unless ``base_url`` lists a fleet), as named in errors."""
        if self.base_url is None:
            return [OPENAI_URL]
        named = [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)
        return [url.rstrip("/") for url in named] or [OPENAI_URL]

    @property
    def url(self) -> str:
        """The (first) server's address."""
        return self.urls[0]

    @property
    def _key_url(self) -> str | None:
        # A one-server project's keys predate fleets: the first URL, as it was written.
        if self.base_url is None or isinstance(self.base_url, str):
            return self.base_url
        return self.base_url[0] if self.base_url else None

    def _fleet(self) -> Fleet:
        """The dispatcher, kept across calls so that a dropped server stays dropped."""
        fleet: Fleet | None = getattr(self, "fleet_", None)
        if fleet is None or [s.url for s in fleet.servers] != self.urls:
            fleet = Fleet(self.urls, concurrency=self.concurrency, cooldown=self.cooldown)
            self.fleet_ = fleet
        fleet.concurrency = max(1, self.concurrency)
        return fleet

    def _prompt(self, text: str, examples: Sequence[tuple[str, str]] = (), base: str | None = None) -> str:
        instructions = self.instructions if base is None else base
        if self.verbalized:
            instructions = f"{instructions} {VERBALIZED_HINT}".strip()
        return self.prompt(text, examples, instructions=instructions).text

    def _examples(self, items: Sequence[TextItem]) -> list[Any]:
        selector = getattr(self, "selector_", None)
        return selector.select(items) if selector is not None else [[] for _ in items]

    def prompts(self, items: Sequence[TextItem], examples: list[Any] | None = None) -> list[str]:
        """The prompt each item is sent with, few-shot examples included (after ``fit``);
        ``examples`` are the items' examples when the caller has chosen them already."""
        examples = self._examples(items) if examples is None else examples
        return [self._prompt(item.text, ex) for item, ex in zip(items, examples, strict=True)]

    def _base_mode(self) -> Mode:
        if self.verbalized:
            return "verbalized"
        return "logprobs" if self.top_logprobs > 0 else "samples"

    def _params(self, mode: Mode, *, shaped: bool = True) -> dict[str, Any]:
        """What is sent besides the prompt; it is part of every cache key.

        Only as many top tokens as there are labels are asked for (``shaped``); answers
        cached before that asked for ``top_logprobs`` and are still read (``_cached``).
        """
        if mode == "logprobs":
            top = min(self.top_logprobs, len(self.labels)) if shaped else self.top_logprobs
            if self.endpoint == "chat":
                extra: dict[str, Any] = {"logprobs": True, "top_logprobs": top}
            else:
                extra = {"logprobs": top}
            return {"max_tokens": self.answer_tokens, "temperature": 0.0, **extra}
        if mode == "samples":
            return {"max_tokens": SAMPLE_TOKENS, "temperature": 1.0, "n": self.samples, "seed": self.seed}
        return {"max_tokens": VERBALIZED_TOKENS, "temperature": 0.0}

    def _key(self, prompt: str, mode: Mode, *, shaped: bool = True) -> str:
        return cache_key(
            model=self.model,
            base_url=self._key_url,
            endpoint=self.endpoint,
            prompt=prompt,
            params=self._params(mode, shaped=shaped),
        )

    # -- learning -----------------------------------------------------------

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> OpenAILabeler:
        """Keep the golden items as few-shot examples; nothing is sent to the server."""
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels")
        started = time.perf_counter()
        self.selector_ = self._selector(items, labels)
        if progress is not None:
            progress(len(items))
        self.fit_usage_ = Usage(items=len(items), seconds=time.perf_counter() - started)
        self.version_ = cache_key(
            labeler=self.name,
            model=self.model,
            base_url=self._key_url,
            endpoint=self.endpoint,
            params={mode: self._params(mode) for mode in ("logprobs", "samples", "verbalized")},
            mode=self._base_mode(),
            few_shot=self.few_shot,
            encode=encoder_name(self.encode),
            template=self._prompt("{text}"),
            golden=[(i.id, label, i.content_hash) for i, label in zip(items, labels, strict=True)],
            **self._prompt_state(),
        )[:16]
        return self

    # -- predicting ---------------------------------------------------------

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels`` for ``items``; a NaN row is an abstention.

        Runs its own event loop, so call it from plain (sync) code, any thread. Raises
        :class:`LabelingStopped` (a ``LabelerError``) when the budget is reached or the
        server stops answering; its ``partial`` keeps what was answered.
        """
        items = list(items)
        if not items:
            return np.zeros((0, len(self.labels))), Usage(extra={"cost": 0.0, "abstained": 0.0})
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._predict(items, progress))
        # Called from inside an event loop (a notebook, an async web handler): that
        # loop cannot be blocked on, so this call gets a loop of its own in a thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self._predict(items, progress)).result()

    def complete(self, prompt: str, seed: int = 0, *, max_tokens: int = 48, temperature: float = 0.8) -> str:
        """The model's continuation of ``prompt`` up to the end of the line (one sampled
        answer, not cached; ``optimize-prompt`` has the LLM write instruction candidates)."""
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "stop": ["\n"]}

        async def ask() -> dict[str, Any]:
            clients = self._clients()
            try:
                return await self._request(
                    _Dispatch(clients, self._fleet(), asyncio.Condition()), prompt, params
                )
            finally:
                for client in clients.values():
                    await client.close()

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # safe inside a running loop
            response = pool.submit(asyncio.run, ask()).result()
        choices = response.get("choices") or [{}]
        return _choice_text(choices[0])

    def _clients(self) -> dict[str, Any]:
        """One client per server, by URL."""
        try:
            import openai
        except ModuleNotFoundError:
            raise SetupError(
                "the openai labeler needs the openai package: pip install 'duolabel[openai]'"
            ) from None
        key = os.environ.get(self.api_key_env)
        if not key:
            if self.base_url is None:
                raise SetupError(
                    f"set {self.api_key_env}: the OpenAI API needs a key (export {self.api_key_env}=...), "
                    "or point labeler.base_url at your own server"
                )
            key = PLACEHOLDER_KEY
        # Retries are ours (max_retries=0): the SDK's would hide a dead server for minutes.
        return {
            url: openai.AsyncOpenAI(api_key=key, base_url=url, timeout=self.timeout, max_retries=0)
            for url in self.urls
        }

    def _cached(self, prompt: str) -> tuple[Mode, dict[str, Any]] | None:
        if self.cache is None:
            return None
        modes: list[Mode] = [self._base_mode()]
        if modes[0] == "logprobs":
            modes.append("samples")  # answered by the fallback on an earlier run
        for mode in modes:
            found = self.cache.get(self._key(prompt, mode))
            if found is None and mode == "logprobs" and self.top_logprobs > len(self.labels):
                # Asked before requests were shaped: more top tokens, read the same way.
                found = self.cache.get(self._key(prompt, mode, shaped=False))
            if found is not None:
                return mode, found
        return None

    async def _predict(self, items: list[TextItem], progress: Progress | None) -> tuple[np.ndarray, Usage]:
        started = time.perf_counter()
        examples = self._examples(items)
        prompts = self.prompts(items, examples)
        # Contextual calibration: the content-free prompts of each distinct set of examples
        # go first, so that a run stopped part-way has the bias of every item it answered.
        sets = list(dict.fromkeys(tuple(ex) for ex in examples)) if self.contextual else []
        bias_prompts = [self._prompt(text, ex) for ex in sets for text in CONTENT_FREE]
        n_bias = len(bias_prompts)
        # Paraphrased prompts (prompt_variants) go last, variant by variant: no item waits for them.
        variants = self.variants()
        prompts = (
            bias_prompts
            + prompts
            + [self._prompt(it.text, ex, v) for v in variants for it, ex in zip(items, examples, strict=True)]
        )
        self.item_features_: dict[str, dict[str, float]] = {}
        run = _Run(
            probs=np.full((len(prompts), len(self.labels)), np.nan), done=np.zeros(len(prompts), dtype=bool)
        )
        clients: Any = None  # made at the first request: a fully cached run needs no server or key
        # Each server bounds its own requests (the fleet); this bounds what waits for one.
        slots = asyncio.Semaphore(max(1, self.concurrency) * len(self.urls))
        fleet, changed = self._fleet(), asyncio.Condition()
        stop: str | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            for i, prompt in enumerate(prompts):
                shown = progress if n_bias <= i < n_bias + len(items) else None
                hit = self._cached(prompt)
                if hit is not None:
                    run.usage.cached += 1
                    self._record(run, i, *hit, shown)
                    continue
                await slots.acquire()
                # The budget covers what the ledger counts: tokens and the machine's time.
                spent = run.cost + self.price_compute_hour * (time.perf_counter() - started) / 3600
                if run.failure is None and self.budget is not None and spent >= self.budget:
                    stop = (
                        f"the budget of {self.budget:g} was reached after {int(run.done.sum())} items "
                        f"(cost {spent:.4g}); raise labeler.budget, or run again to continue "
                        "(answered items are cached)"
                    )
                if run.failure is not None or stop is not None:
                    slots.release()
                    break
                if clients is None:
                    clients = self._clients()
                    dispatch = _Dispatch(clients, fleet, changed)
                tasks.append(asyncio.create_task(self._one(dispatch, run, i, prompt, slots, shown)))
        finally:
            # In-flight requests are paid for: let them land in the cache before leaving.
            await asyncio.gather(*tasks, return_exceptions=True)
            for client in (clients or {}).values():
                await client.close()
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]  # a bug, not a server problem
        probs, done_items = run.probs[n_bias : n_bias + len(items)], run.done[n_bias : n_bias + len(items)]
        if sets:
            probs = self._debiased(probs, run.probs[:n_bias], sets, examples)
        run.usage.items = int(done_items.sum())
        run.usage.seconds = time.perf_counter() - started
        message = run.failure or stop
        run.usage.extra.update(
            cost=run.cost,
            # answered items without a distribution (content-free prompts are not items)
            abstained=float((np.isnan(probs).any(axis=1) & done_items).sum()),
            sampled=float(run.sampled),
            requests=float(run.requests),
            content_free_prompts=n_bias,
            **({"variant_prompts": len(variants) * len(items)} if variants else {}),
        )
        if variants and message is None:
            asked = run.probs[n_bias + len(items) :].reshape(len(variants), len(items), -1)
            self.item_features_ = variant_features([item.id for item in items], probs, asked)
        if message is not None:
            done = len(items) if done_items.all() else int(np.argmin(done_items))
            raise LabelingStopped(message, probs=probs[:done].copy(), usage=run.usage)
        return probs, run.usage

    def _debiased(
        self,
        probs: np.ndarray,
        bias_rows: np.ndarray,
        sets: list[tuple[tuple[str, str], ...]],
        examples: list[list[tuple[str, str]]],
    ) -> np.ndarray:
        """Each item's distribution divided by its prompt's content-free one (NaN when no
        content-free input of that prompt was answered: an abstention, not an uncorrected row)."""
        out = np.full_like(probs, np.nan)
        k = len(CONTENT_FREE)
        for s, ex in enumerate(sets):
            rows = bias_rows[s * k : (s + 1) * k]
            rows = rows[~np.isnan(rows[:, 0])]
            if not len(rows):
                continue
            mine = [i for i, e in enumerate(examples) if tuple(e) == ex]
            out[mine] = contextual_correction(probs[mine], rows.mean(axis=0))
        return out

    async def _one(
        self,
        client: _Dispatch,
        run: _Run,
        i: int,
        prompt: str,
        slots: asyncio.Semaphore,
        progress: Progress | None,
    ) -> None:
        mode = self._base_mode()
        if mode == "logprobs" and run.no_logprobs:
            mode = "samples"
        try:
            try:
                answer = await self._ask(client, run, prompt, mode)
                if mode == "logprobs" and answer["positions"] is None:
                    raise _NoLogprobs
            except _NoLogprobs:
                run.no_logprobs = True  # this server gives none: sample from now on
                mode = "samples"
                answer = await self._ask(client, run, prompt, mode)
        except _TooLong:
            answer = {"texts": [], "positions": None, "input_tokens": 0, "output_tokens": 0, "too_long": True}
        except LabelerError as exc:
            run.failure = run.failure or str(exc)
            return
        finally:
            slots.release()
        if self.cache is not None:
            self.cache.put(self._key(prompt, mode), answer)
        self._record(run, i, mode, answer, progress)

    def _record(
        self, run: _Run, i: int, mode: Mode, answer: dict[str, Any], progress: Progress | None
    ) -> None:
        if answer.get("too_long"):  # the prompt does not fit: an abstention (a NaN row)
            run.done[i] = True
            if progress is not None:
                progress(1)
            return
        if mode == "logprobs":
            positions = [[(tok, lp) for tok, lp in top] for top in answer["positions"] or []]
            probs = logprob_distribution(positions, self.labels)
        elif mode == "samples":
            probs = _vote_share(answer["texts"], self.labels)
            run.sampled += 1
        else:
            probs = _verbalized_distribution(answer["texts"][0] if answer["texts"] else "", self.labels)
        if probs is not None:  # else an abstention: the row stays NaN
            run.probs[i] = probs
        run.done[i] = True
        if progress is not None:
            progress(1)

    async def _ask(self, client: _Dispatch, run: _Run, prompt: str, mode: Mode) -> dict[str, Any]:
        """One item's answer, as kept in the cache: texts, top tokens per position, tokens."""
        params = self._params(mode)
        answer: dict[str, Any] = {"texts": [], "positions": None, "input_tokens": 0, "output_tokens": 0}
        calls = 0
        # Servers that ignore ``n`` (llama.cpp) are asked again, with a new seed each time.
        while calls == 0 or (
            mode == "samples" and len(answer["texts"]) < self.samples and calls < self.samples
        ):
            if mode == "samples":
                params = {**params, "n": self.samples - len(answer["texts"]), "seed": self.seed + calls}
            response = await self._request(client, prompt, params)
            calls += 1
            run.requests += 1
            usage = response.get("usage") or {}
            answer["input_tokens"] += int(usage.get("prompt_tokens") or 0)
            answer["output_tokens"] += int(usage.get("completion_tokens") or 0)
            run.usage.input_tokens += int(usage.get("prompt_tokens") or 0)
            run.usage.output_tokens += int(usage.get("completion_tokens") or 0)
            run.cost += (
                int(usage.get("prompt_tokens") or 0) * self.price_input_per_million
                + int(usage.get("completion_tokens") or 0) * self.price_output_per_million
            ) / 1e6
            choices = response.get("choices") or []
            answer["texts"] += [_choice_text(choice) for choice in choices]
            if mode == "logprobs" and choices:
                answer["positions"] = _top_tokens(choices[0].get("logprobs"))
        return answer

    async def _request(self, via: _Dispatch, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        """One answered request: sent to the least-loaded server, retried on another."""
        if self.endpoint == "chat":
            body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
        else:
            body = {"prompt": prompt}
        if self.cache_prompt:
            body["extra_body"] = {"cache_prompt": True}
        failed: dict[str, str] = {}  # url -> why, for this request
        attempts = self.max_retries + len(self.urls)  # a first try on each server, then retries
        backoffs = 0
        for attempt in range(attempts):
            if attempt and via.fleet.tried_all(failed):
                # No untried server is left: wait before asking one that failed again.
                await asyncio.sleep(self.backoff * 2**backoffs)
                backoffs += 1
            server = await take(via.fleet, via.changed, failed)
            answer = await self._send(via, server, body, params)
            if not isinstance(answer, str):
                return answer
            failed[server.url] = answer
        if len(self.urls) == 1:
            raise LabelerError(
                f"the server at {self.url} is not answering: {failed[self.url]} (tried {attempts} times); "
                "check that it is running, then run again to continue (answered items are cached)"
            )
        why = "; ".join(f"{url}: {reason}" for url, reason in failed.items())
        raise LabelerError(
            f"no server of labeler.base_url is answering ({why}; tried {attempts} times); check that "
            "they are running, then run again to continue (answered items are cached)"
        )

    async def _send(
        self, via: _Dispatch, server: Server, body: dict[str, Any], params: dict[str, Any]
    ) -> dict[str, Any] | str:
        """One try on ``server``: the response, or why the server did not answer (a retry)."""
        import openai

        client = via.clients[server.url]
        create: Any = client.chat.completions.create if self.endpoint == "chat" else client.completions.create
        failure: str | None = None  # set when the server did not answer: worth a retry
        try:
            response = await create(model=self.model, **body, **params)
        except openai.APIConnectionError as exc:  # refused, reset, timed out
            failure = _reason(exc)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            # The server's text may quote part of the key: it is not repeated here.
            raise LabelerError(
                f"the server at {server.url} refused the API key ({exc.status_code}): "
                f"check {self.api_key_env}"
            ) from None
        except openai.APIStatusError as exc:
            if "logprobs" in params and _NO_LOGPROBS.search(_reason(exc)):
                # e.g. llama.cpp without logits_all: "logprobs is not supported" (a 500).
                # A bad value (too many top tokens) is not this: it stays an error.
                raise _NoLogprobs from None
            if exc.status_code == 400 and _TOO_LONG.search(_reason(exc)):
                raise _TooLong from None  # this item's prompt: an abstention, not a failed run
            if exc.status_code < 500 and exc.status_code not in _RETRYABLE_STATUS:
                raise LabelerError(
                    f"the server at {server.url} refused the request ({exc.status_code}): {_reason(exc)}"
                ) from None
            failure = f"{exc.status_code} {_reason(exc)}"
        except openai.APIResponseValidationError as exc:
            raise LabelerError(
                f"the server at {server.url} sent an unreadable answer: {_reason(exc)}"
            ) from None
        finally:
            # Every way out frees the slot; only a missing answer counts against the server.
            await via.release(server, failure)
        return failure if failure is not None else dict(response.model_dump())


@dataclass
class _Dispatch:
    """What one run sends through: a client per server, the fleet, and its wake-up call."""

    clients: dict[str, Any]
    fleet: Fleet
    changed: asyncio.Condition

    async def release(self, server: Server, failure: str | None) -> None:
        if failure is None:
            self.fleet.answered(server)
        else:
            self.fleet.failed(server, failure)
        async with self.changed:
            self.changed.notify_all()


_TOO_LONG = re.compile(r"context|too long|maximum.*tokens|exceeds", re.I)


class _TooLong(Exception):
    """The server refused one prompt as longer than its context window."""


class _NoLogprobs(Exception):
    """The server gives no log-probabilities (it left them out, or refused the request)."""


def _reason(exc: BaseException) -> str:
    """One line: the error and, where it has one, its cause (``Connection refused``)."""
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text.rstrip('.')}: {cause}"
    return " ".join(text.split())[:300]


def _choice_text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    if message is not None:
        return str(message.get("content") or "")
    return str(choice.get("text") or "")


def _top_tokens(logprobs: dict[str, Any] | None) -> list[list[list[Any]]] | None:
    """Top ``[token, logprob]`` pairs per position, chosen token first; None when absent.

    Completions give ``top_logprobs`` as one dict per position; chat gives ``content``, a
    list of tokens each with its ``top_logprobs`` list.
    """
    if not logprobs:
        return None
    positions: list[list[list[Any]]] = []
    if logprobs.get("content") is not None:  # chat
        for entry in logprobs["content"]:
            top = [[t["token"], float(t["logprob"])] for t in entry.get("top_logprobs") or []]
            positions.append(_chosen_first(top, entry.get("token")))
    elif logprobs.get("top_logprobs") is not None:  # completions
        chosen = logprobs.get("tokens") or []
        for k, entry in enumerate(logprobs["top_logprobs"]):
            top = [[tok, float(lp)] for tok, lp in (entry or {}).items()]
            positions.append(_chosen_first(top, chosen[k] if k < len(chosen) else None))
    return positions or None


def _chosen_first(top: list[list[Any]], chosen: str | None) -> list[list[Any]]:
    top.sort(key=lambda pair: -pair[1])
    if chosen is not None:
        top.sort(key=lambda pair: pair[0] != chosen)  # stable: the rest stay by probability
    return top
