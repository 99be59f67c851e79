"""Labelers that fine-tune the sentence encoder: ``finetune`` and ``setfit``.

``finetune``: the sentence encoder trained end to end with a linear head.

All of all-MiniLM-L6-v2 (or the ``model`` folder) is trained with a linear classification
head on its mean-pooled token vectors, in plain torch on the CPU: AdamW, a linear warm-up
and decay, dynamic padding. The number of epochs is chosen by early stopping on the
training labels (never on items it will label): with cross-fitting, on every item's
out-of-fold probabilities pooled over the folds (``choose_epochs="cross_fit"``, the
default: :meth:`TunedLabeler._pooled_epochs`), or on one stratified validation fold
(``"validation_fold"``, and always above ``cross_fit_max_items``, where it is the calibration
fold). Scored by accuracy by default, ties going to the lower log-loss. Not by log-loss
alone: the log-loss turns up (the model grows confident) epochs before the accuracy stops
improving, and the confidence is calibrated afterwards anyway. How
the training items get honest probabilities for calibration (cross-fitting or a held-out
calibration fold) is :mod:`duolabel.labelers.tuning`'s.

``setfit``: SetFit (Tunstall et al., 2022): the encoder is first tuned contrastively on
pairs of training texts (same label: cosine similarity 1, different labels: 0), then a
logistic-regression head is trained on its embeddings.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from duolabel.errors import SetupError
from duolabel.labelers.base import Progress
from duolabel.labelers.tuning import TunedLabeler, _Meter, linear_schedule, optimizer_step

__all__ = ["FineTuneLabeler", "SetFitLabeler"]

#: What the encoder takes of the tokenizer's output.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Texts per inference batch (no gradients: larger batches are cheaper per item).
PREDICT_BATCH = 64


class _Classifier:
    """The encoder, its tokenizer and the linear head, as one trainable unit."""

    def __init__(self, encoder: Any, tokenizer: Any, head: Any) -> None:
        self.encoder, self.tokenizer, self.head = encoder, tokenizer, head

    def parameters(self) -> list[Any]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def train(self, mode: bool = True) -> None:
        self.encoder.train(mode)
        self.head.train(mode)

    def logits(self, batch: dict[str, Any]) -> Any:
        hidden = self.encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return self.head(pooled)


class FineTuneLabeler(TunedLabeler):
    """A sentence encoder fine-tuned end to end with a linear head, with early stopping.

    Parameters
    ----------
    labels : list of str
        The project's labels; probability columns follow this order.
    model_path : str or Path, optional
        A local transformers / sentence-transformers folder; the bundled all-MiniLM-L6-v2
        when omitted.
    model_dir : str or Path, optional
        Where trained models are saved, one folder per version; nothing is saved when omitted.
    max_epochs, patience : int
        Early stopping: at most ``max_epochs``; stop once the validation score has not
        improved for ``patience`` epochs, and keep the best epoch's weights. The learning
        rate warms up over the first tenth of ``max_epochs`` and decays linearly to 0 at its
        end, so the cap also sets how fast the rate falls in the epochs that are kept: with
        12 rather than 6, the fold still stopped after 3 to 6 epochs on 500 emotion labels, at
        a higher rate, and 0.016 more accurate on average (docs/benchmarks.md).
    select_on : {"accuracy", "log_loss"}
        The validation score: accuracy (ties to the lower log-loss) or log-loss alone.
    head_learning_rate : float
        Learning rate of the freshly initialised head (the encoder uses ``learning_rate``).
    refit : bool
        Above ``cross_fit_max_items``, train the final model again on every label for the
        epochs the held-out calibration fold chose; the fold's ``oof_proba_`` rows (all that
        calibration gets) still come from the first model, trained without the fold.
    max_length, batch_size, learning_rate, class_weight, cross_fit_max_items, cv_folds,
    calibration_fraction, ensemble, threads, random_state
        See :class:`duolabel.labelers.tuning.TunedLabeler` and the configuration reference.

    Examples
    --------
    >>> labeler = FineTuneLabeler(labels=["book", "not_book"], max_epochs=1)  # doctest: +SKIP
    >>> labeler.fit(items, gold).predict_proba(new_items)[0].shape  # doctest: +SKIP
    (3, 2)
    """

    name = "finetune"
    selects_epochs = True

    def __init__(
        self,
        *,
        max_epochs: int = 12,
        patience: int = 2,
        select_on: str = "accuracy",
        choose_epochs: str = "cross_fit",
        head_learning_rate: float = 1e-3,
        learning_rate: float = 5e-5,
        **options: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, **options)
        self.max_epochs = max_epochs
        self.patience = patience
        if select_on not in ("accuracy", "log_loss"):
            raise SetupError(f"select_on must be 'accuracy' or 'log_loss', got {select_on!r}")
        self.select_on = select_on
        if choose_epochs not in ("validation_fold", "cross_fit"):
            raise SetupError(f"choose_epochs must be 'validation_fold' or 'cross_fit', got {choose_epochs!r}")
        self.choose_epochs = choose_epochs
        self.head_learning_rate = head_learning_rate
        self._base: tuple[Any, Any] | None = None

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "select_on": self.select_on,
            # Only when not the original way, so models saved before the option keep their version.
            **({"choose_epochs": self.choose_epochs} if self.choose_epochs != "validation_fold" else {}),
            "head_learning_rate": self.head_learning_rate,
        }

    def _work(self, n: int, epochs: int | None) -> float:
        return float(n * (epochs or self.max_epochs))

    # -- the model -------------------------------------------------------------

    def _encoder_files(self, folder: Path) -> Path:
        """The transformers folder inside a sentence-transformers one (the first module)."""
        modules = folder / "modules.json"
        if modules.is_file() and not (folder / "config.json").is_file():
            first = json.loads(modules.read_text(encoding="utf-8"))[0].get("path", "")
            return folder / first
        return folder

    def _load_base(self) -> tuple[Any, Any]:
        if self._base is None:
            folder = self._encoder_files(self._model_folder())
            try:
                from transformers import AutoModel, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ModuleNotFoundError:
                raise SetupError(
                    "the finetune labeler needs transformers: pip install transformers"
                ) from None
            hf_logging.disable_progress_bar()
            try:
                encoder = AutoModel.from_pretrained(str(folder))
                self._base = (encoder, AutoTokenizer.from_pretrained(str(folder)))
            except (OSError, ValueError) as exc:
                raise SetupError(f"labeler.model: cannot load {folder}: {exc}") from None
        return self._base

    def _fresh(self, seed: int) -> _Classifier:
        import torch

        encoder, tokenizer = self._load_base()
        torch.manual_seed(self.random_state * 1000 + seed)
        head = torch.nn.Linear(encoder.config.hidden_size, len(self.labels))
        return _Classifier(copy.deepcopy(encoder), tokenizer, head)

    def _batches(self, model: _Classifier, texts: list[str], order: np.ndarray, size: int) -> Any:
        for start in range(0, len(order), size):
            idx = order[start : start + size]
            batch = model.tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=self.max_length,
                padding=True,
                return_tensors="pt",
            )
            yield idx, {k: v for k, v in batch.items() if k in _MODEL_INPUTS}

    def _train(
        self,
        texts: list[str],
        y: np.ndarray,
        *,
        validation: tuple[list[str], np.ndarray] | None,
        epochs: int | None,
        seed: int,
        meter: _Meter,
        history: list[np.ndarray] | None = None,
    ) -> tuple[Any, int, np.ndarray | None]:
        import torch

        model = self._fresh(seed)
        total_epochs = epochs or self.max_epochs
        steps = total_epochs * -(-len(texts) // self.batch_size)
        optimizer = torch.optim.AdamW(
            [
                {"params": list(model.encoder.parameters()), "lr": self.learning_rate},
                {"params": list(model.head.parameters()), "lr": self.head_learning_rate},
            ],
            weight_decay=0.01,
        )
        schedule = linear_schedule(optimizer, steps)
        weight = None
        if self.class_weight == "balanced":  # n / (k * count), as scikit-learn's "balanced"
            counts = np.bincount(y, minlength=len(self.labels)).astype(float)
            weight = torch.tensor(len(y) / (len(self.labels) * np.maximum(counts, 1.0)), dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
        target = torch.tensor(y, dtype=torch.long)
        rng = np.random.default_rng(self.random_state * 1000 + seed)
        # (score, epoch, weights, validation probabilities); a score is a tuple, higher is better.
        best: tuple[tuple[float, ...], int, Any, np.ndarray | None] = ((-np.inf,), 0, None, None)
        stale = 0
        for epoch in range(1, total_epochs + 1):
            model.train()
            for idx, batch in self._batches(model, texts, rng.permutation(len(texts)), self.batch_size):
                loss = loss_fn(model.logits(batch), target[idx])
                optimizer_step(loss, optimizer, schedule, model.parameters())
                meter(len(idx))
            if validation is None or (epochs is not None and epoch < total_epochs):
                continue
            proba = self._predict(model, validation[0], None)
            if history is not None:
                history.append(proba)
            score = self._score(proba, validation[1])
            if epochs is not None:  # a fixed number of epochs: the last one's predictions
                best = (score, epoch, None, proba)
            elif score > best[0]:
                state = (copy.deepcopy(model.encoder.state_dict()), copy.deepcopy(model.head.state_dict()))
                best, stale = (score, epoch, state, proba), 0
            else:
                stale += 1
                if stale >= self.patience:  # no better for `patience` epochs: stop
                    break
        if validation is None:
            return model, total_epochs, None
        _, chosen, state, best_proba = best
        if state is not None:  # early stopping: back to the best epoch's weights
            model.encoder.load_state_dict(state[0])
            model.head.load_state_dict(state[1])
        return model, chosen, best_proba

    def _score(self, proba: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
        """The validation score early stopping compares (higher is better)."""
        accuracy, negative_nll = super()._score(proba, y)
        return (negative_nll,) if self.select_on == "log_loss" else (accuracy, negative_nll)

    def _predict(self, model: _Classifier, texts: list[str], progress: Progress | None) -> np.ndarray:
        import torch

        model.train(False)
        out = np.zeros((len(texts), len(self.labels)))
        # Similar lengths together: less padding, the same results.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.no_grad():
            for idx, batch in self._batches(model, texts, order, PREDICT_BATCH):
                out[idx] = torch.softmax(model.logits(batch).double(), dim=-1).numpy()
                if progress is not None:
                    progress(len(idx))
        return out

    def _save(self, model: _Classifier, folder: Path) -> None:
        import torch

        model.encoder.save_pretrained(str(folder / "encoder"))
        model.tokenizer.save_pretrained(str(folder / "encoder"))
        torch.save(model.head.state_dict(), folder / "head.pt")

    def _load(self, folder: Path) -> _Classifier:
        import torch
        from transformers import AutoModel, AutoTokenizer

        encoder = AutoModel.from_pretrained(str(folder / "encoder"))
        head = torch.nn.Linear(encoder.config.hidden_size, len(self.labels))
        head.load_state_dict(torch.load(folder / "head.pt", weights_only=True))
        return _Classifier(encoder, AutoTokenizer.from_pretrained(str(folder / "encoder")), head)


class SetFitLabeler(TunedLabeler):
    """SetFit-style: contrastive tuning of the sentence encoder, then a logistic head.

    The `setfit` library (1.2) installs beside our pins and runs offline with the bundled
    encoder, but needs ``datasets``, ``evaluate``, ``accelerate`` and ``requests`` on top
    of ours, writes checkpoints into the working folder and draws its own tqdm bars; the
    same method is a short loop over sentence-transformers' own ``CosineSimilarityLoss``
    (SetFit's default loss), which is what this class runs.

    Parameters
    ----------
    labels : list of str
        The project's labels; probability columns follow this order.
    epochs : int
        Passes over the sampled pairs.
    pairs_per_item : int
        Pairs sampled per training item (half positive, half negative where possible).
    max_pairs : int
        At most this many pairs in all, whatever the number of items (bounds the time).
    regularization : sequence of float
        Inverse regularization strengths ``C`` tried for the head; the best by
        cross-validation on the training embeddings is used.
    model_path, model_dir, max_length, batch_size, learning_rate, class_weight,
    cross_fit_max_items, cv_folds, calibration_fraction, refit, ensemble, threads, random_state
        See :class:`FineTuneLabeler`.

    Examples
    --------
    >>> labeler = SetFitLabeler(labels=["book", "not_book"], pairs_per_item=4)  # doctest: +SKIP
    >>> labeler.fit(items, gold).predict_proba(new_items)[0].shape  # doctest: +SKIP
    (3, 2)
    """

    name = "setfit"

    def __init__(
        self,
        *,
        epochs: int = 1,
        pairs_per_item: int = 20,
        max_pairs: int = 2000,
        regularization: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0),
        cross_fit_max_items: int = 50,
        **options: Any,
    ) -> None:
        # Cross-fitting costs cv_folds + 1 contrastive tunings of up to 20 pairs per item:
        # about 5 minutes for 50 items on 2 cores, hence the lower bound than finetune's.
        super().__init__(cross_fit_max_items=cross_fit_max_items, **options)
        self.epochs = epochs
        self.pairs_per_item = pairs_per_item
        self.max_pairs = max_pairs
        self.regularization = tuple(regularization)
        self._base: Any = None

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "epochs": self.epochs,
            "pairs_per_item": self.pairs_per_item,
            "max_pairs": self.max_pairs,
            "regularization": list(self.regularization),
        }

    def _n_pairs(self, n: int) -> int:
        return min(self.pairs_per_item * n, self.max_pairs)

    def _work(self, n: int, epochs: int | None) -> float:
        # Two texts per pair and epoch, plus encoding the items for the head.
        return float(2 * self._n_pairs(n) * self.epochs + n)

    def _load_base(self) -> Any:
        if self._base is None:
            from duolabel.labelers.embedding import EmbeddingLabeler

            # The frozen labeler's loader: the same offline settings and errors.
            self._base = EmbeddingLabeler(labels=self.labels, model_path=self.model_path)._load_encoder()
            self._base.max_seq_length = self.max_length
        return self._base

    def _pairs(self, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs of item positions and their target similarity: positives (same label)
        and negatives (other labels) alternate, so both kinds are balanced."""
        by_label = {label: np.flatnonzero(y == label) for label in np.unique(y)}
        first, second, target = [], [], []
        for i, label in enumerate(y):
            same = by_label[label][by_label[label] != i]
            other = np.flatnonzero(y != label)
            for k in range(self.pairs_per_item):
                pool, similar = (same, 1.0) if k % 2 == 0 else (other, 0.0)
                if len(pool):
                    first.append(i)
                    second.append(int(rng.choice(pool)))
                    target.append(similar)
        chosen = rng.permutation(len(first))[: self._n_pairs(len(y))]
        return np.array(first)[chosen], np.array(second)[chosen], np.array(target)[chosen]

    def _embed(self, encoder: Any, texts: list[str], progress: Progress | None = None) -> np.ndarray:
        out = []
        for start in range(0, len(texts), PREDICT_BATCH):
            part = texts[start : start + PREDICT_BATCH]
            out.append(
                encoder.encode(
                    part,
                    batch_size=PREDICT_BATCH,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            )
            if progress is not None:
                progress(len(part))
        return np.vstack(out)

    def _head(self, X: np.ndarray, y: np.ndarray) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        weight = "balanced" if self.class_weight == "balanced" else None
        head = LogisticRegression(max_iter=2000, class_weight=weight, random_state=self.random_state)
        folds = min(5, int(np.bincount(y).min()))
        if folds < 2 or len(self.regularization) < 2:
            return head.set_params(C=self.regularization[0]).fit(X, y)
        # The head's regularisation is chosen by cross-validation on the training items only.
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
        search = GridSearchCV(head, {"C": list(self.regularization)}, cv=splitter, scoring="neg_log_loss")
        return search.fit(X, y).best_estimator_

    def _train(
        self,
        texts: list[str],
        y: np.ndarray,
        *,
        validation: tuple[list[str], np.ndarray] | None,
        epochs: int | None,
        seed: int,
        meter: _Meter,
        history: list[np.ndarray] | None = None,
    ) -> tuple[Any, int, np.ndarray | None]:
        import torch
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

        torch.manual_seed(self.random_state * 1000 + seed)
        rng = np.random.default_rng(self.random_state * 1000 + seed)
        encoder = copy.deepcopy(self._load_base())
        loss_fn = CosineSimilarityLoss(encoder)
        first, second, target = self._pairs(y, rng)
        steps = max(1, self.epochs * -(-len(first) // self.batch_size))
        optimizer = torch.optim.AdamW(encoder.parameters(), lr=self.learning_rate, weight_decay=0.01)
        schedule = linear_schedule(optimizer, steps)
        encoder.train()
        for _ in range(self.epochs):
            order = rng.permutation(len(first))
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                features = [encoder.preprocess([texts[i] for i in side[idx]]) for side in (first, second)]
                loss = loss_fn(features, torch.tensor(target[idx], dtype=torch.float32))
                optimizer_step(loss, optimizer, schedule, list(encoder.parameters()))
                meter(2 * len(idx))
        encoder.eval()
        head = self._head(self._embed(encoder, texts), y)
        meter(len(texts))
        model = (encoder, head)
        proba = None if validation is None else self._predict(model, validation[0], None)
        return model, self.epochs, proba

    def _predict(self, model: Any, texts: list[str], progress: Progress | None) -> np.ndarray:
        import torch

        encoder, head = model
        with torch.no_grad():
            X = self._embed(encoder, texts, progress)
        out = np.zeros((len(texts), len(self.labels)))
        out[:, head.classes_] = head.predict_proba(X)
        return out

    def _save(self, model: Any, folder: Path) -> None:
        encoder, head = model
        encoder.save(str(folder / "encoder"))
        np.savez(folder / "head.npz", coef=head.coef_, intercept=head.intercept_, classes=head.classes_)

    def _load(self, folder: Path) -> Any:
        from sentence_transformers import SentenceTransformer
        from sklearn.linear_model import LogisticRegression

        encoder = SentenceTransformer(str(folder / "encoder"), device="cpu")
        encoder.max_seq_length = self.max_length
        saved = np.load(folder / "head.npz")
        # The head is rebuilt from its coefficients (no pickle in the project folder).
        head = LogisticRegression()
        head.coef_, head.intercept_, head.classes_ = saved["coef"], saved["intercept"], saved["classes"]
        return encoder, head
