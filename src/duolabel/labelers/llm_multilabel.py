"""Multi-label answers from an LLM labeler: one yes/no question per (item, label), scored.

Asked for a list of labels, a language model tends to name one and stop: generation suppresses
every label but the likeliest. So each label gets a question of its own instead ("does the label
*joy* apply to the text? yes or no") and the model's answer is *scored*, not generated: the
prompted labeler underneath (``llama`` or ``openai``) reads the probabilities of ``yes`` and
``no`` after ``Label:`` exactly as it reads the project's labels in a single-label task
(llama.cpp's logits of the two tokens, or the server's top log-probabilities), renormalised over
the two. The label's probability is P(yes) / (P(yes) + P(no)). Few-shot examples are the golden
items answered yes or no for that label (an item is never its own example), and contextual
calibration, when on, works per question.

:class:`PerLabelQuestions` wraps one prompted labeler built for the two answers and swaps in
each label's question and examples in turn, so a llama model is loaded once and consecutive
prompts of one label share their prefix in the KV cache (or a server's prompt cache).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from duolabel.core.multilabel import answer_sets
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import LabelingStopped, Progress, TextItem, Usage

__all__ = ["ANSWERS", "PerLabelQuestions", "question"]

ANSWERS = ["yes", "no"]  # the inner labeler's labels: column 0 is P(yes)
CHUNK = 16  # items asked every question before the next items: what a stopped run keeps


def question(label: str, description: str = "", instructions: str = "") -> str:
    """The instructions of the yes/no prompt about ``label``.

    Examples
    --------
    >>> question("joy", "happiness, delight", "Emotions.")
    'Emotions. Does the label "joy" (happiness, delight) apply to the text? Answer yes or no.'
    """
    about = f" ({' '.join(description.split())})" if description.strip() else ""
    asked = f'Does the label "{label}"{about} apply to the text? Answer yes or no.'
    return f"{instructions.strip()} {asked}".strip()


class PerLabelQuestions:
    """Per-label probabilities from a prompted labeler that scores labels (``llama``, ``openai``).

    Use :meth:`build` with the labeler class and the project's options. ``predict_proba``
    returns items x labels, each entry the probability that the label applies (rows need not
    sum to 1); an item with any question the model could not be asked (too long for the
    context) is an abstention, a NaN row. ``fit`` takes the golden items' answers as stored
    (JSON lists) and keeps, per label, the inner labeler's few-shot state and version.

    Examples
    --------
    >>> from duolabel.labelers.openai import OpenAILabeler
    >>> asker = PerLabelQuestions.build(OpenAILabeler, labels=["joy", "fear"], model="m",
    ...                                 base_url="http://127.0.0.1:8000/v1", few_shot=0)
    >>> asker.name, asker.inner.labels
    ('openai', ['yes', 'no'])
    >>> asker.inner.prompt("so glad", instructions=asker.questions[0]).text.splitlines()[0]
    'Does the label "joy" apply to the text? Answer yes or no.'
    """

    def __init__(
        self, inner: Any, *, labels: Sequence[str], descriptions: Sequence[str] = (), instructions: str = ""
    ) -> None:
        self.inner = inner
        self.labels = list(labels)
        self.descriptions = list(descriptions) or [""] * len(self.labels)
        self.instructions = instructions
        self.questions = [
            question(label, description, instructions)
            for label, description in zip(self.labels, self.descriptions, strict=True)
        ]
        self.name = inner.name

    @classmethod
    def build(
        cls,
        labeler: type,
        *,
        labels: Sequence[str],
        descriptions: Sequence[str] = (),
        instructions: str = "",
        demos: Sequence[Any] = (),
        **options: Any,
    ) -> PerLabelQuestions:
        """The wrapper around ``labeler(labels=["yes", "no"], **options)`` for the project's
        ``labels``, their ``descriptions`` and ``instructions``."""
        if demos:
            raise SetupError(
                "labeler prompt: fixed demonstrations (from optimize-prompt) answer with one label; "
                "task.type multi_label asks one yes/no question per label: remove the labeler's prompt"
            )
        inner = labeler(labels=ANSWERS, descriptions=["it applies", "it does not apply"], **options)
        return cls(inner, labels=labels, descriptions=descriptions, instructions=instructions)

    # -- what the label stage reads and sets on a labeler ------------------------------------

    @property
    def budget(self) -> float | None:
        """Most one ``predict_proba`` call may spend, over all its questions (``openai``)."""
        return getattr(self, "_budget", None)

    @budget.setter
    def budget(self, value: float | None) -> None:
        self._budget = value

    def close(self) -> None:
        """Free the inner labeler's model (llama.cpp's memory)."""
        closing = getattr(self.inner, "close", None)
        if closing is not None:
            closing()

    @contextmanager
    def _asking(self, j: int) -> Iterator[Any]:
        """The inner labeler set to ask about label ``j``: its question and its examples."""
        self.inner.instructions = self.questions[j]
        if hasattr(self, "fitted_"):
            self.inner.selector_, self.inner.version_ = self.fitted_[j]
        try:
            yield self.inner
        finally:
            self.inner.instructions = self.instructions

    def prompts(self, items: Sequence[TextItem], label: str) -> list[str | None]:
        """The prompt each item is asked about ``label`` with (after ``fit``: its examples
        included); None where it cannot fit the model's context."""
        with self._asking(self.labels.index(label)) as inner:
            return list(inner.prompts(items))

    # -- learning and predicting -------------------------------------------------------------

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> PerLabelQuestions:
        """Per label, the golden items answered yes (the label is in their list) or no."""
        if len(items) != len(labels):
            raise LabelerError(f"fit got {len(items)} items but {len(labels)} labels")
        sets = [set(s) for s in answer_sets(labels)]
        unknown = sorted(set().union(*sets) - set(self.labels)) if sets else []
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels {self.labels}")
        started = time.perf_counter()
        fitted = []
        for j, label in enumerate(self.labels):
            with self._asking(j) as inner:
                inner.fit(items, [ANSWERS[0] if label in s else ANSWERS[1] for s in sets])
                fitted.append((inner.selector_, inner.version_))
        self.fitted_ = fitted
        state = {"labels": self.labels, "questions": self.questions, "inner": [v for _, v in fitted]}
        self.version_ = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
        self.fit_usage_ = Usage(items=len(items), seconds=time.perf_counter() - started)
        if progress is not None:
            progress(len(items))
        return self

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Items x labels: the probability the model gives ``yes`` to each label's question.

        Items go in chunks, every question asked of a chunk before the next, so that a run
        stopped by the budget or a dead server (:class:`LabelingStopped`) keeps whole items.
        """
        if not hasattr(self, "fitted_"):
            raise LabelerError(f"the {self.name} labeler is not fitted yet: call fit() first")
        items = list(items)
        probs = np.zeros((len(items), len(self.labels)))
        usage = Usage()
        hourly = float(getattr(self.inner, "price_compute_hour", 0.0))
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            for j in range(len(self.labels)):
                if self.budget is not None:
                    # Each inner call checks its own spending: it gets what this call has left.
                    cost = usage.extra.get("cost", 0.0) + hourly * usage.seconds / 3600
                    self.inner.budget = max(self.budget - cost, 0.0)
                with self._asking(j) as inner:
                    try:
                        answered, spent = inner.predict_proba(chunk)
                    except LabelingStopped as stop:
                        usage.add(stop.partial[1])
                        raise LabelingStopped(str(stop), probs=probs[:start], usage=usage) from None
                usage.add(spent)
                probs[start : start + len(chunk), j] = answered[:, 0]
            if progress is not None:
                progress(len(chunk))
        # One unanswerable question leaves the list unknown: the item goes to people.
        probs[np.isnan(probs).any(axis=1)] = np.nan
        usage.items = len(items)
        usage.extra["questions"] = float(len(items) * len(self.labels))
        usage.extra["abstained"] = float(np.isnan(probs[:, 0]).sum()) if len(probs) and self.labels else 0.0
        return probs, usage
