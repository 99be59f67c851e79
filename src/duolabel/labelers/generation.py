"""Free text from the LLM labelers' models: one line per prompt, for synthetic items.

The labelers score labels and never generate; generating synthetic training items
(:mod:`duolabel.synthetic`) needs the same models to write. Each backend here wraps a
built labeler and continues a prompt up to the end of its line:

- ``llama``: sampled token by token in-process from the labeler's own llama.cpp model,
  so the log-probability of what was written is known (top-k sampling with a seeded
  generator: the same prompt and seed give the same text);
- ``openai``: one ``/v1/completions`` (or chat) request, asking for the log-probabilities
  of the chosen tokens and going on without them when the server has none.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from duolabel.errors import LabelerError, SetupError

__all__ = ["Generated", "LlamaGenerator", "OpenAIGenerator", "TextGenerator", "generator_for"]

TOP_K = 40  # tokens sampled from at each step: a base model's long tail is mostly noise


@dataclass
class Generated:
    """One continuation: its text (one line, stripped), the mean log-probability of its
    tokens when the backend gives them, and what it used."""

    text: str
    logprob: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "logprob": self.logprob,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": self.seconds,
        }


class TextGenerator(Protocol):
    """Continues a prompt to the end of the line."""

    #: What identifies the model and its settings in cache keys.
    identity: dict[str, Any]

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int) -> Generated: ...


class LlamaGenerator:
    """Samples from a :class:`~duolabel.labelers.llama.LlamaLabeler`'s model, in-process.

    Examples
    --------
    >>> from duolabel.labelers.llama import LlamaLabeler
    >>> gen = LlamaGenerator(LlamaLabeler(labels=["book", "not_book"]))  # doctest: +SKIP
    >>> gen.generate("A review of a novel:", max_tokens=20, temperature=0.8, seed=1).text  # doctest: +SKIP
    """

    def __init__(self, labeler: Any) -> None:
        self.labeler = labeler
        path = labeler._model_file()
        self.identity = {"backend": "llama", "model": [path.name, path.stat().st_size], "top_k": TOP_K}

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int) -> Generated:
        from duolabel.labelers.llama import BLOCK, _import_llama

        labeler = self.labeler
        llm = labeler._load()
        llama_cpp = _import_llama()
        started = time.perf_counter()
        tokens = llm.tokenize(prompt.encode(), add_bos=True)
        room = labeler.n_ctx - len(tokens)
        if room < 2:
            raise LabelerError(f"the generation prompt has {len(tokens)} tokens: more than n_ctx allows")
        evaluated = labeler._advance(tokens, reusable=labeler._reusable, block=BLOCK)
        # What stays in the cache past the prompt is this generation's: only the prompt's
        # whole blocks may be reused by the next call (the labeler's own rule).
        labeler._reusable = len(tokens) - len(tokens) % BLOCK
        rng = np.random.default_rng(seed)
        eos = llm.token_eos()
        chosen: list[int] = []
        logprobs: list[float] = []
        for _ in range(min(max_tokens, room - 1)):
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            top = np.argpartition(row, -TOP_K)[-TOP_K:]
            logits = row[top].astype(np.float64)
            peak = float(row.max())
            log_total = peak + math.log(float(np.exp(row - peak, dtype=np.float32).sum(dtype=np.float64)))
            if temperature <= 0:
                token = int(top[int(np.argmax(logits))])
            else:
                weights = np.exp((logits - logits.max()) / temperature)
                token = int(rng.choice(top, p=weights / weights.sum()))
            piece = llm.detokenize([token]).decode("utf-8", errors="ignore")
            if token == eos or "\n" in piece:
                break
            chosen.append(token)
            logprobs.append(float(row[token]) - log_total)
            llm.eval([token])
        text = llm.detokenize(chosen).decode("utf-8", errors="ignore").strip()
        return Generated(
            text=text,
            logprob=float(np.mean(logprobs)) if logprobs else None,
            input_tokens=evaluated,
            output_tokens=len(chosen),
            seconds=time.perf_counter() - started,
        )


class OpenAIGenerator:
    """Asks an :class:`~duolabel.labelers.openai.OpenAILabeler`'s server to continue a prompt.

    Examples
    --------
    >>> from duolabel.labelers.openai import OpenAILabeler
    >>> gen = OpenAIGenerator(OpenAILabeler(labels=["a", "b"], model="m",
    ...                                     base_url="http://127.0.0.1:8000/v1"))
    >>> gen.identity["backend"], gen.identity["endpoint"]
    ('openai', 'completions')
    """

    #: Where a continuation ends: one line (a synthetic item) unless a subclass says otherwise.
    stop: tuple[str, ...] = ("\n",)

    def __init__(self, labeler: Any, *, logprobs: bool = True) -> None:
        self.labeler = labeler
        self.identity = {
            "backend": "openai",
            "model": labeler.model,
            "base_url": labeler.base_url,
            "endpoint": labeler.endpoint,
        }
        self._client: Any = None
        # Asked only where a filter reads them: llama_cpp.server computes a log-probability over
        # its whole vocabulary for every generated token (measured: 18 tokens in 49-53 s with
        # them, 2-5 s without, one thread).
        self._logprobs = logprobs

    def _connect(self) -> Any:
        if self._client is None:
            try:
                import openai
            except ModuleNotFoundError:
                raise SetupError(
                    "generating with the openai labeler needs the openai package: "
                    "pip install 'duolabel[openai]'"
                ) from None
            key = os.environ.get(self.labeler.api_key_env) or (
                "not-needed" if self.labeler.base_url else None
            )
            if key is None:
                raise SetupError(f"set {self.labeler.api_key_env}: the OpenAI API needs a key")
            self._client = openai.OpenAI(
                api_key=key,
                base_url=self.labeler.url,
                timeout=self.labeler.timeout,
                max_retries=self.labeler.max_retries,
            )
        return self._client

    def _create(self, prompt: str, params: dict[str, Any]) -> dict[str, Any]:
        import openai

        client = self._connect()
        chat = self.labeler.endpoint == "chat"
        if self._logprobs:
            params = {**params, **({"logprobs": True} if chat else {"logprobs": 1})}
        try:
            if chat:
                return client.chat.completions.create(
                    model=self.labeler.model, messages=[{"role": "user", "content": prompt}], **params
                ).model_dump()
            return client.completions.create(model=self.labeler.model, prompt=prompt, **params).model_dump()
        except openai.APIStatusError as exc:
            if self._logprobs and "logprob" in str(exc).lower():
                self._logprobs = False  # this server gives none: ask without from now on
                return self._create(prompt, {k: v for k, v in params.items() if k != "logprobs"})
            raise LabelerError(f"the server at {self.labeler.url} refused the request: {exc}") from None
        except openai.APIConnectionError as exc:
            raise LabelerError(
                f"the server at {self.labeler.url} is not answering ({exc}); run again to continue "
                "(generated items are kept)"
            ) from None

    def generate(self, prompt: str, *, max_tokens: int, temperature: float, seed: int) -> Generated:
        started = time.perf_counter()
        params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed, "stop": list(self.stop)}
        response = self._create(prompt, params)
        choice = (response.get("choices") or [{}])[0]
        message = choice.get("message")
        text = str((message or {}).get("content") if message is not None else choice.get("text") or "")
        usage = response.get("usage") or {}
        return Generated(
            text=(text.split("\n")[0] if "\n" in self.stop else text).strip(),
            logprob=_mean_logprob(choice.get("logprobs")),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            seconds=time.perf_counter() - started,
        )


def _mean_logprob(logprobs: dict[str, Any] | None) -> float | None:
    """Mean log-probability of the chosen tokens (completions or chat form); None if absent."""
    if not logprobs:
        return None
    if logprobs.get("content") is not None:  # chat
        values = [float(t["logprob"]) for t in logprobs["content"]]
    else:
        values = [float(v) for v in logprobs.get("token_logprobs") or [] if v is not None]
    return float(np.mean(values)) if values else None


def generator_for(labeler: Any, *, logprobs: bool = True) -> TextGenerator:
    """The generator for a built LLM labeler (``llama`` or ``openai``). ``logprobs``: whether an
    openai server is asked for the generation's log-probabilities (llama computes them from the
    logits it has anyway)."""
    name = getattr(labeler, "name", "")
    if name == "llama":
        return LlamaGenerator(labeler)
    if name == "openai":
        return OpenAIGenerator(labeler, logprobs=logprobs)
    raise SetupError(
        f"the {name or type(labeler).__name__} labeler cannot generate text: use a llama or openai one"
    )
