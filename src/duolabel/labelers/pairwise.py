"""Labelers for pairwise tasks: which of two responses to a prompt is better.

A labeler sees :class:`~duolabel.labelers.base.TextItem` s (id, text, content hash); a pair's
two responses are in the item's fields (``response_a``, ``response_b``), which a
:data:`PairLookup` reads (from the store in a project). The one hook of the labeler factories,
:func:`duolabel.labelers.llm_pairwise.for_task`, turns a backend's labeler in a ``pairwise``
project into

- :class:`PairwiseEmbeddingLabeler` for the ``embedding`` backend: the frozen encoder embeds
  the prompt and both responses, and a logistic-regression head reads
  :func:`~duolabel.core.pairwise.pair_features`, trained on every golden pair in both orders
  (swap augmentation) and predicting the mean of both orders, so that swapping A and B swaps
  its probabilities exactly;
- :class:`~duolabel.labelers.llm_pairwise.PairwiseLLMLabeler` for the LLM backends: each pair
  scored as shown and swapped, averaged, swap-inconsistent pairs abstaining.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from duolabel.core.pairwise import PAIR_FIELDS, pair_features, swapped_answer, swapped_columns
from duolabel.errors import LabelerError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.labelers.embedding import EmbeddingLabeler
from duolabel.store import Item, Store

__all__ = ["Pair", "PairLookup", "PairwiseEmbeddingLabeler", "pair_of", "render_pair", "store_pairs"]

C_GRID = (0.1, 1.0, 10.0)  # the head's regularisation, chosen by cross-validated log loss


@dataclass(frozen=True)
class Pair:
    """A pairwise item as labelers read it: the prompt and the two responses, as shown."""

    id: str
    prompt: str
    a: str
    b: str
    content_hash: str = ""

    def swapped(self) -> Pair:
        """The same pair with A and B exchanged."""
        return Pair(self.id, self.prompt, self.b, self.a, self.content_hash + ":swapped")


#: The pairs behind items, in their order; ``LabelerError`` naming an item without its responses.
PairLookup = Callable[[Sequence[TextItem]], list[Pair]]


def store_pairs(store: Store) -> PairLookup:
    """A :data:`PairLookup` reading the items' fields from the project store."""

    def lookup(items: Sequence[TextItem]) -> list[Pair]:
        ids = [item.id for item in items]
        found: dict[str, Any] = {}
        with store.read() as session:
            for start in range(0, len(ids), 900):
                part = ids[start : start + 900]
                found.update(session.execute(select(Item.id, Item.fields).where(Item.id.in_(part))).all())
        return [pair_of(item, found.get(item.id)) for item in items]

    return lookup


def pair_of(item: TextItem, fields: dict[str, Any] | None) -> Pair:
    """The pair of ``item`` given its stored fields; ``LabelerError`` if a response is missing.

    Examples
    --------
    >>> pair_of(TextItem("x", "Say hi"), {"response_a": "hi", "response_b": "bye"}).b
    'bye'
    """
    fields = fields or {}
    missing = [name for name in PAIR_FIELDS if not fields.get(name)]
    if missing:
        raise LabelerError(
            f"item {item.id!r} has no {' or '.join(missing)}: a pairwise labeler needs both responses"
        )
    return Pair(
        item.id, item.text, str(fields[PAIR_FIELDS[0]]), str(fields[PAIR_FIELDS[1]]), item.content_hash
    )


def render_pair(pair: Pair) -> str:
    """The pair as one text, for a labeler that reads text (the LLMs).

    Examples
    --------
    >>> print(render_pair(Pair("x", "Say hi", "hi", "bye")))
    Instruction: Say hi
    Response A: hi
    Response B: bye
    """
    return f"Instruction: {pair.prompt}\nResponse A: {pair.a}\nResponse B: {pair.b}"


class PairwiseEmbeddingLabeler:
    """A logistic-regression head on the embeddings of a pair's prompt and responses.

    Parameters
    ----------
    encoder : EmbeddingLabeler
        The frozen encoder (its model and batch size); its ``cache`` is not used.
    pairs : PairLookup
        The pair behind each item.
    labels : list of str
        ``A, B`` or ``A, B, tie``.
    regularization : float or "cv"
        The head's C, or ``"cv"`` to choose one of :data:`C_GRID` by cross-validated log loss.
    caches : dict, optional
        An embedding cache per part (``prompt``, ``a``, ``b``): the store's in a project.
    cv_folds, random_state
        Folds of the out-of-fold probabilities (and of the C search); their seed.

    Examples
    --------
    >>> encoder = EmbeddingLabeler(labels=["A", "B"])
    >>> head = PairwiseEmbeddingLabeler(encoder, store_pairs(store), labels=["A", "B"])  # doctest: +SKIP
    >>> head.fit(golden, ["A", "B"]).predict_proba(items)[0].shape  # doctest: +SKIP
    (2, 2)
    """

    name = "embedding-pairwise"
    uses_unlabeled = False

    def __init__(
        self,
        encoder: EmbeddingLabeler,
        pairs: PairLookup,
        *,
        labels: Sequence[str],
        regularization: float | str = "cv",
        caches: dict[str, Any] | None = None,
        cv_folds: int = 5,
        random_state: int = 0,
    ) -> None:
        self.encoder = encoder
        self.pairs = pairs
        self.labels = list(labels)
        self.regularization = regularization
        self.caches = caches or {}
        self.cv_folds = cv_folds
        self.random_state = random_state

    def _embed(self, pairs: Sequence[Pair], progress: Progress | None = None) -> tuple[np.ndarray, ...]:
        """The embeddings of the prompts, the A and the B responses (three ``(n, d)`` arrays)."""
        parts = []
        for part in ("prompt", "a", "b"):
            self.encoder.cache = self.caches.get(part)
            texts = [TextItem(p.id, getattr(p, part), p.content_hash) for p in pairs]
            parts.append(self.encoder.encode(texts)[0])
        if progress is not None:
            progress(len(pairs))
        return tuple(parts)

    def _both_orders(
        self, pairs: Sequence[Pair], progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        p, a, b = self._embed(pairs, progress)
        return pair_features(p, a, b), pair_features(p, b, a)

    def _head(self, C: float) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=C, max_iter=2000, random_state=self.random_state)

    def _fit_head(self, shown: np.ndarray, swapped: np.ndarray, y: np.ndarray, C: float) -> Any:
        # Every pair in both orders, the swapped one with its answer swapped: the head learns
        # what makes a response better, not which position tends to win.
        flipped = np.array([self.labels.index(swapped_answer(self.labels[i])) for i in y])
        return self._head(C).fit(np.vstack([shown, swapped]), np.concatenate([y, flipped]))

    def _proba(self, head: Any, shown: np.ndarray, swapped: np.ndarray) -> np.ndarray:
        def full(x: np.ndarray) -> np.ndarray:
            out = np.zeros((len(x), len(self.labels)))
            out[:, head.classes_] = head.predict_proba(x)
            return out

        # The mean of both orders, the swapped one mapped back: exactly swap-symmetric.
        return (full(shown) + swapped_columns(full(swapped))) / 2

    def _folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        from sklearn.model_selection import StratifiedKFold

        folds = min(self.cv_folds, int(np.bincount(y).min()) if len(y) else 0)
        if folds < 2:
            return []
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        return list(splitter.split(np.zeros(len(y)), y))

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> PairwiseEmbeddingLabeler:
        """Train the head on labelled pairs (both orders) and compute their out-of-fold probabilities."""
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels {self.labels}")
        # A and B are the same question asked the other way round: either one suffices.
        if not set(labels) & {"A", "B"}:
            raise LabelerError("no training pairs answered A or B; add golden pairs")
        started = time.perf_counter()
        shown, swapped = self._both_orders(self.pairs(items), progress)
        y = np.array([self.labels.index(label) for label in labels])
        folds = self._folds(y)
        C = self._choose_C(shown, swapped, y, folds)
        self.head_ = self._fit_head(shown, swapped, y, C)
        oof = np.full((len(y), len(self.labels)), np.nan)
        for train, test in folds:
            head = self._fit_head(shown[train], swapped[train], y[train], C)
            oof[test] = self._proba(head, shown[test], swapped[test])
        self.oof_proba_ = oof
        self.fit_info_ = {"C": C, "folds": len(folds)}
        self.fit_usage_ = Usage(items=len(items), seconds=time.perf_counter() - started)
        self.version_ = self._version(items, labels)
        return self

    def _choose_C(self, shown: np.ndarray, swapped: np.ndarray, y: np.ndarray, folds: list[Any]) -> float:
        if self.regularization != "cv":
            return float(self.regularization)
        if not folds:
            return 1.0
        losses = []
        for C in C_GRID:
            loss = 0.0
            for train, test in folds:
                proba = self._proba(
                    self._fit_head(shown[train], swapped[train], y[train], C), shown[test], swapped[test]
                )
                loss -= float(np.log(np.clip(proba[np.arange(len(test)), y[test]], 1e-12, 1)).sum())
            losses.append(loss)
        return float(C_GRID[int(np.argmin(losses))])

    def _version(self, items: Sequence[TextItem], labels: Sequence[str]) -> str:
        digest = hashlib.sha256(
            f"{self.name}|{self.encoder.model_name}|{self.regularization}|{self.cv_folds}|"
            f"{self.random_state}|{'|'.join(self.labels)}".encode()
        )
        for item_id, digest_of, label in sorted(
            (i.id, i.content_hash, g) for i, g in zip(items, labels, strict=True)
        ):
            digest.update(f"\n{item_id}\t{digest_of}\t{label}".encode())
        return digest.hexdigest()[:16]

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels``: the mean of both orders (swap-symmetric)."""
        if not hasattr(self, "head_"):
            raise LabelerError("the pairwise embedding labeler is not trained yet: call fit() first")
        started = time.perf_counter()
        usage = Usage(items=len(items))
        if not items:
            return np.zeros((0, len(self.labels))), usage
        shown, swapped = self._both_orders(self.pairs(items), progress)
        proba = self._proba(self.head_, shown, swapped)
        usage.seconds = time.perf_counter() - started
        return proba, usage
