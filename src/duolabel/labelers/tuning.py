"""What the fine-tuned labelers share: honest probabilities, saved models and progress.

A labeler that changes its encoder learns from every item it trains on, so its own
predictions on those items are in-sample and useless to calibration. Two ways keep some
of them honest, and :class:`TunedLabeler` chooses between them by the size of the
training set (``cross_fit_max_items``):

- **cross-fitting** (small sets): ``cv_folds`` models, each trained without one fold,
  predict that fold; every training item gets an out-of-fold probability. It costs about
  ``cv_folds`` extra trainings, cheap on a few hundred short texts and about five times
  too slow on 1,000+ items on a 2-core machine (a fine-tuning epoch runs at roughly 20-40
  short texts per second per core there).
- **a held-out calibration fold** (larger sets): a stratified fold of
  ``calibration_fraction`` of the items is left out of training; only its items get
  out-of-fold probabilities, and the other rows of ``oof_proba_`` are NaN, which the
  labeling stage reads as "no out-of-fold prediction for this item" (it predicts those
  items like any other and never gives them to calibration).

With a held-out fold, ``refit`` trains the final model once more on every item, for the
epochs the fold chose: the fold's ``oof_proba_`` rows stay those of the first model,
which never saw them, so calibration is fitted on honest probabilities of the model
trained without the fold and applied to the refit one's (close, not identical: the price
of a final model that learns from every label).

With cross-fitting, ``ensemble`` keeps the models it trained on parts of the items (the
``cv_folds`` fold models, and the one that chose the number of epochs when a validation
fold chose it) and predicts with the
mean of their probabilities and the final model's: no extra training, about ``cv_folds + 2``
times the prediction time. Calibration is still fitted on the single fold models'
out-of-fold probabilities: the ensemble has no honest probability for a training item.

Which one was used is in ``fit_usage_.extra`` (``cross_fitted``, ``honest_items``) and so
in the runs ledger. A trained model is saved under ``model_dir/<name>-<version>/``
(written to a temporary folder and renamed, so a killed run never leaves half a model);
a second ``fit`` with the same version loads it instead of training.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from duolabel.errors import LabelerError
from duolabel.labelers.base import Progress, TextItem, Usage
from duolabel.labelers.embedding import local_model_folder

__all__ = ["TunedLabeler", "check_training_labels"]


def linear_schedule(optimizer: Any, steps: int) -> Any:
    """Linear warm-up over the first tenth of ``steps``, then linear decay to 0."""
    import torch

    warmup = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / max(1, steps - warmup)))
    )


def optimizer_step(loss: Any, optimizer: Any, schedule: Any, parameters: list[Any]) -> None:
    """One step: back-propagate, clip the gradient norm at 1, update, advance the schedule."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    optimizer.step()
    schedule.step()
    optimizer.zero_grad()


def check_training_labels(labels: Sequence[str], given: Sequence[str], *, minimum: int = 1) -> dict[str, int]:
    """Refuse training labels outside ``labels`` or labels with fewer than ``minimum``
    examples; return the count of each label.

    Examples
    --------
    >>> check_training_labels(["a", "b"], ["a", "b", "a"])
    {'a': 2, 'b': 1}
    """
    unknown = sorted(set(given) - set(labels))
    if unknown:
        raise LabelerError(f"training labels {unknown} are not among the project's labels")
    counts = Counter(given)
    short = [label for label in labels if counts[label] < minimum]
    if short:
        raise LabelerError(
            f"too few training examples for label(s) {', '.join(map(repr, short))} "
            f"(need at least {minimum} each); add golden items for every label"
        )
    return {label: counts[label] for label in labels}


#: Positions of the items a model trains on and of those it predicts.
Split = tuple[np.ndarray, np.ndarray]


class _Meter:
    """Turns work (training item passes, unknown in advance under early stopping, or the
    predictions of several models) into advances of the caller's bar, whose total is the
    number of items."""

    def __init__(self, progress: Progress | None, total: int, planned: float) -> None:
        self.progress, self.total, self.planned = progress, total, max(planned, 1.0)
        self.work = 0.0
        self.shown = 0

    def __call__(self, work: float) -> None:
        self.work += work
        self._show(min(int(self.total * self.work / self.planned), self.total))

    def finish(self) -> None:
        self._show(self.total)

    def _show(self, target: int) -> None:
        if self.progress is not None and target > self.shown:
            self.progress(target - self.shown)
            self.shown = target


#: Saved model versions kept per backend in a project's ``models`` folder (the newest ones).
KEEP_MODELS = 3


class TunedLabeler:
    """Base of the labelers that train their encoder (``finetune``, ``setfit``).

    Subclasses implement ``_train`` (one model on some of the training items, optionally
    predicting others), ``_predict`` and ``_save`` / ``_load``; this class decides how
    training items get honest probabilities, versions, saves and reloads models.
    """

    name = "tuned"
    #: Whether ``_train`` chooses its number of epochs on a validation fold.
    selects_epochs = False
    #: With cross-fitting, how the epochs are chosen: on one validation fold held out of
    #: the training items (``validation_fold``) or on every item's out-of-fold
    #: probabilities, pooled over the cross-fitting folds (``cross_fit``).
    choose_epochs = "validation_fold"

    def __init__(
        self,
        *,
        labels: Sequence[str],
        model_path: str | Path | None = None,
        model_dir: str | Path | None = None,
        max_length: int = 128,
        batch_size: int = 16,
        learning_rate: float = 2e-5,
        class_weight: str = "none",
        cross_fit_max_items: int = 200,
        cv_folds: int = 5,
        calibration_fraction: float = 0.15,
        refit: bool = False,
        ensemble: bool = False,
        threads: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.labels = list(labels)
        self.model_path = model_path
        self.model_dir = model_dir
        self.max_length = max_length
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.class_weight = class_weight
        self.cross_fit_max_items = cross_fit_max_items
        self.cv_folds = cv_folds
        self.calibration_fraction = calibration_fraction
        self.refit = refit
        self.ensemble = ensemble
        self.threads = threads
        self.random_state = random_state

    # -- what subclasses provide -----------------------------------------------

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
        """Train one model; return it, its number of epochs and its probabilities on the
        validation texts (None without them). ``history``, when given (only to a labeler that
        ``selects_epochs``), gets the validation probabilities after every epoch it scored."""
        raise NotImplementedError

    def _score(self, proba: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
        """The validation score that chooses the epochs (higher is better): accuracy, ties
        to the lower log-loss."""
        nll = float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, 1.0))))
        return (float(np.mean(proba.argmax(axis=1) == y)), -nll)

    def _predict(self, model: Any, texts: list[str], progress: Progress | None) -> np.ndarray:
        raise NotImplementedError

    def _save(self, model: Any, folder: Path) -> None:
        raise NotImplementedError

    def _load(self, folder: Path) -> Any:
        raise NotImplementedError

    def _work(self, n: int, epochs: int | None) -> float:
        """Planned item passes of one training on ``n`` items (for the progress bar)."""
        raise NotImplementedError

    def _settings(self) -> dict[str, Any]:
        """Everything besides the data that determines the model (for its version)."""
        return {
            key: getattr(self, key)
            for key in (
                "max_length",
                "batch_size",
                "learning_rate",
                "class_weight",
                "cross_fit_max_items",
                "cv_folds",
                "calibration_fraction",
                "refit",
                "random_state",
            )
        } | ({"ensemble": True} if self.ensemble else {})  # off: the versions saved before it existed

    # -- shared machinery --------------------------------------------------------

    @property
    def model_name(self) -> str:
        return str(self.model_path) if self.model_path else "all-MiniLM-L6-v2"

    def _model_folder(self) -> Path:
        return local_model_folder(self.model_path)

    def _threads(self) -> None:
        import torch

        torch.set_num_threads(self.threads or os.cpu_count() or 1)

    def _version(self, items: Sequence[TextItem], labels: Sequence[str]) -> str:
        digest = hashlib.sha256()
        settings = json.dumps(self._settings(), sort_keys=True)
        digest.update(f"{self.name}|{self.model_name}|{settings}|{'|'.join(self.labels)}".encode())
        for item, label in sorted(zip((i.id for i in items), labels, strict=True)):
            digest.update(f"\n{item}\t{label}".encode())
        digest.update("".join(sorted(i.content_hash for i in items)).encode())
        return digest.hexdigest()[:16]

    def _folds(self, y: np.ndarray, counts: dict[str, int]) -> tuple[str, list[Split]]:
        """``cross_fit`` and its folds, or ``held_out`` and the (train, calibration) split."""
        from sklearn.model_selection import StratifiedKFold

        if len(y) <= self.cross_fit_max_items:
            folds = min(self.cv_folds, min(counts.values()))
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.random_state)
            return "cross_fit", list(splitter.split(np.zeros(len(y)), y))
        return "held_out", [self._holdout(y, offset=0)]

    def _holdout(self, y: np.ndarray, *, offset: int) -> tuple[np.ndarray, np.ndarray]:
        """A stratified split leaving out ``calibration_fraction`` of the items (at least
        one per label)."""
        from sklearn.model_selection import StratifiedShuffleSplit

        size = max(math.ceil(self.calibration_fraction * len(y)), len(self.labels))
        split = StratifiedShuffleSplit(n_splits=1, test_size=size, random_state=self.random_state + offset)
        train, held = next(split.split(np.zeros(len(y)), y))
        return train, held

    def fit(
        self, items: Sequence[TextItem], labels: Sequence[str], *, progress: Progress | None = None
    ) -> TunedLabeler:
        """Train on labelled items (or load the model this version saved) and set
        ``oof_proba_``: honest probabilities for the training items, NaN rows where a
        held-out calibration fold leaves none."""
        # Two per label: a stratified validation or calibration fold needs one of each.
        counts = check_training_labels(self.labels, labels, minimum=2)
        self.version_ = self._version(items, labels)
        self.train_ids_ = [item.id for item in items]
        started = time.perf_counter()
        self._threads()
        folder = Path(self.model_dir) / f"{self.name}-{self.version_}" if self.model_dir else None
        if folder is not None and (folder / "meta.json").is_file():
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            self.model_ = self._load(folder)
            self.members_ = [self._load(folder / f"member-{k}") for k in range(meta.get("members", 0))]
            self.oof_proba_ = np.load(folder / "oof.npy")
            if progress is not None:
                progress(len(items))
            loaded = 1.0
        else:
            meta = self._fit_new([item.text for item in items], labels, counts, progress)
            if folder is not None:
                self._write(folder, meta)
                self._prune(folder)
            loaded = 0.0
        self.fit_info_ = meta
        self.fit_usage_ = Usage(
            items=len(items),
            seconds=time.perf_counter() - started,
            extra={
                "cross_fitted": float(meta["mode"] == "cross_fit"),
                "honest_items": float(meta["honest_items"]),
                "epochs": float(meta["epochs"]),
                "model_loaded": loaded,
            },
        )
        return self

    def _fit_new(
        self, texts: list[str], labels: Sequence[str], counts: dict[str, int], progress: Progress | None
    ) -> dict[str, Any]:
        y = np.array([self.labels.index(label) for label in labels])
        n = len(y)
        mode, folds = self._folds(y, counts)
        oof = np.full((n, len(self.labels)), np.nan)

        def part(idx: np.ndarray) -> tuple[list[str], np.ndarray]:
            return [texts[i] for i in idx], y[idx]

        # The epochs chosen on every fold model's out-of-fold probabilities together.
        pooled = mode == "cross_fit" and self.selects_epochs and self.choose_epochs == "cross_fit"
        if mode == "cross_fit":
            planned = sum(self._work(len(rest), None) for rest, _ in folds) + self._work(n, None)
            planned += self._work(n, None) if self.selects_epochs and not pooled else 0.0
        else:
            planned = self._work(len(folds[0][0]), None) + (self._work(n, None) if self.refit else 0.0)
        meter = _Meter(progress, n, planned)

        def train(
            idx: np.ndarray | None,
            held: np.ndarray | None,
            epochs: int | None,
            seed: int,
            history: list[np.ndarray] | None = None,
        ) -> Any:
            """One model on the items at ``idx`` (all when None), predicting ``held``."""
            return self._train(
                *part(np.arange(n) if idx is None else idx),
                validation=None if held is None else part(held),
                epochs=epochs,
                seed=seed,
                meter=meter,
                history=history,
            )

        members: list[Any] = []

        def kept(trained: tuple[Any, int, np.ndarray | None]) -> tuple[Any, int, np.ndarray | None]:
            """With ``ensemble``, keep a model trained on part of the items (else it is freed)."""
            if self.ensemble:
                members.append(trained[0])
            return trained

        if pooled:  # every fold model stops early on its own fold
            histories: list[list[np.ndarray]] = [[] for _ in folds]
            for k, ((rest, held), history) in enumerate(zip(folds, histories, strict=True), start=1):
                kept(train(rest, held, None, k, history))
            chosen, oof = self._pooled_epochs(folds, histories, y)
            model, used, _ = train(None, None, chosen, 0)
        elif mode == "cross_fit":
            epochs: int | None = None
            if self.selects_epochs:  # the number of epochs, chosen once on a validation fold
                _, epochs, _ = kept(train(*self._holdout(y, offset=1), None, 0))
            for k, (rest, held) in enumerate(folds, start=1):
                oof[held] = kept(train(rest, held, epochs, k))[2]
            model, used, _ = train(None, None, epochs, 0)
        else:
            rest, held = folds[0]
            model, used, oof[held] = train(rest, held, None, 0)
            if self.refit:  # on every label, for the epochs the calibration fold chose
                model, used, _ = train(None, None, used, 0)
        meter.finish()
        self.model_ = model
        self.members_ = members
        self.oof_proba_ = oof
        return {
            "mode": mode,
            "honest_items": int((~np.isnan(oof).any(axis=1)).sum()),
            "epochs": int(used),
            "items": n,
            "members": len(self.members_),
        }

    def _pooled_epochs(
        self, folds: list[Split], histories: list[list[np.ndarray]], y: np.ndarray
    ) -> tuple[int, np.ndarray]:
        """The number of epochs whose out-of-fold probabilities, pooled over every fold,
        score best (``choose_epochs: cross_fit``), and those probabilities.

        Each fold model stopped early on its own fold; for a later epoch it contributes its
        last epoch's probabilities. Every pooled row is still out-of-fold, so calibration
        stays honest; the choice itself is made on all the training items rather than on one
        small validation fold. It is made on the probabilities calibration then sees, so
        they are slightly optimistic: one pick among at most ``max_epochs`` candidates, the
        same caveat as a held-out fold that both stops early and calibrates.
        """
        best: tuple[tuple[float, ...], int, np.ndarray] | None = None
        for epoch in range(1, max(len(h) for h in histories) + 1):
            proba = np.full((len(y), len(self.labels)), np.nan)
            for (_, held), history in zip(folds, histories, strict=True):
                proba[held] = history[min(epoch, len(history)) - 1]
            score = self._score(proba, y)
            if best is None or score > best[0]:  # ties to the fewer epochs
                best = (score, epoch, proba)
        assert best is not None
        return best[1], best[2]

    def _prune(self, kept: Path) -> None:
        """Delete all but the newest ``KEEP_MODELS`` saved versions of this backend: each
        retrain on new labels saves a new one (about 90 MB for MiniLM), and an older version
        is only ever reused by a run on exactly its training data, which retrains if needed."""
        saved = [
            folder
            for folder in kept.parent.glob(f"{self.name}-*")
            if folder != kept and (folder / "meta.json").is_file()
        ]
        saved.sort(key=lambda folder: (folder / "meta.json").stat().st_mtime, reverse=True)
        for old in saved[KEEP_MODELS - 1 :]:
            shutil.rmtree(old, ignore_errors=True)

    def _write(self, folder: Path, meta: dict[str, Any]) -> None:
        """Save the model atomically: a temporary folder renamed into place."""
        folder.parent.mkdir(parents=True, exist_ok=True)
        temp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        try:
            self._save(self.model_, temp)
            for k, member in enumerate(self.members_):
                (place := temp / f"member-{k}").mkdir()
                self._save(member, place)
            np.save(temp / "oof.npy", self.oof_proba_)
            # meta.json marks a complete model: it is written last.
            (temp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
            try:
                temp.rename(folder)
            except OSError:  # another run saved the same version first: keep that one
                if not (folder / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def predict_proba(
        self, items: Sequence[TextItem], *, progress: Progress | None = None
    ) -> tuple[np.ndarray, Usage]:
        """Probabilities over ``labels`` for ``items``; rows sum to 1, never an abstention."""
        if not hasattr(self, "model_"):
            raise LabelerError(f"the {self.name} labeler is not trained yet: call fit() first")
        usage = Usage(items=len(items))
        if not items:
            return np.zeros((0, len(self.labels))), usage
        started = time.perf_counter()
        self._threads()
        texts = [item.text for item in items]
        models = [*self.members_, self.model_]  # set with model_, by fit or a loaded version
        # One bar over the items, however many models predict them.
        meter = _Meter(progress, len(items), float(len(items) * len(models)))
        proba = np.mean([np.asarray(self._predict(m, texts, meter), dtype=float) for m in models], axis=0)
        meter.finish()
        proba = np.clip(proba, 0.0, None)
        proba /= proba.sum(axis=1, keepdims=True)
        usage.seconds = time.perf_counter() - started
        return proba, usage
