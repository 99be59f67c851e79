"""Aggregation of human answers (and the model's vote) into labels, on crowd-kit's columns.

Every aggregator is an estimator over one answers frame with the columns ``task, worker, label``
(one row per answer): ``fit(answers, *, known=None, model_probas=None)`` returns ``self`` and
sets ``labels_`` (task -> label) and ``probas_`` (tasks x labels, each row summing to 1).

- ``known`` maps tasks to their true label (controls, golden items). Dawid-Skene and the fusion
  fix those labels inside EM, so they anchor every worker's confusion matrix; the other methods
  return them as given.
- ``model_probas`` (tasks x labels, the calibrated model distribution) breaks exact ties in the
  vote-counting methods and is one more annotator, with a learned confusion matrix, in
  :class:`DawidSkene` with ``fuse_model=True``.

Results never depend on the order of the rows or on the workers' names: arrays are built from
sorted tasks and labels, and remaining exact ties go to the model, then to the label order.

The aggregators are registered in :data:`AGGREGATORS` under the names ``aggregation.method``
takes; a third-party package adds one through the ``duolabel.aggregators`` entry point group.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, Self

import numpy as np
import pandas as pd

from duolabel.core.registry import Registry
from duolabel.errors import DuolabelError

__all__ = [
    "AGGREGATORS",
    "GLAD",
    "MACE",
    "Aggregator",
    "DawidSkene",
    "MajorityVote",
    "MedianVote",
    "WeightedMajorityVote",
    "check_answers",
    "make_aggregator",
]

COLUMNS = ("task", "worker", "label")
AGGREGATORS: Registry[Callable[..., Aggregator]] = Registry("aggregator", group="duolabel.aggregators")
"""Aggregation methods by name (``aggregation.method``); each is built with ``labels=`` and its
keyword parameters."""
# The built-in methods in the order error messages list them (the project file's order).
BUILT_IN = ("majority_vote", "weighted_majority_vote", "dawid_skene", "glad", "mace", "median")
_SHOWN = 10
# Probabilities closer than this count as a tie, so that float rounding in sums taken in a
# different row order can never flip a label.
_TIE = 1e-9


def check_answers(answers: pd.DataFrame, labels: Sequence[str], *, name: str = "answers") -> None:
    """Check the answers contract once, at the boundary; raise a DuolabelError naming every bad row.

    ``answers`` needs the columns ``task, worker, label`` without missing values, every label
    among ``labels``, and at most one answer per worker and task.
    """
    missing = [c for c in COLUMNS if c not in answers.columns]
    if missing:
        raise DuolabelError(
            f"{name}: missing column(s) {', '.join(missing)}; expected the columns task, worker, label."
        )
    problems: list[str] = []
    nulls = answers[list(COLUMNS)].isna().any(axis=1).to_numpy()
    for pos in np.flatnonzero(nulls)[:_SHOWN]:
        problems.append(f"row {pos}: a missing task, worker or label")
    allowed = set(labels)
    bad = ~answers["label"].isin(allowed).to_numpy() & ~nulls
    for pos in np.flatnonzero(bad)[:_SHOWN]:
        problems.append(
            f"row {pos}, task {answers['task'].iloc[pos]!r}, column 'label': {answers['label'].iloc[pos]!r}"
            f" is not one of {', '.join(map(repr, labels))}"
        )
    dup = answers.duplicated(subset=["task", "worker"], keep="first").to_numpy() & ~nulls
    for pos in np.flatnonzero(dup)[:_SHOWN]:
        problems.append(
            f"row {pos}: worker {answers['worker'].iloc[pos]!r} answered task "
            f"{answers['task'].iloc[pos]!r} more than once"
        )
    if problems:
        total = int(nulls.sum() + bad.sum() + dup.sum())
        more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
        raise DuolabelError(f"{name}: {total} bad row(s):\n" + "\n".join(problems) + more)


class Aggregator(Protocol):
    """Turns answers (``task, worker, label``) into one label and a posterior per task."""

    labels_: pd.Series
    probas_: pd.DataFrame

    def fit(
        self,
        answers: pd.DataFrame,
        *,
        known: Mapping[Any, str] | None = None,
        model_probas: pd.DataFrame | Mapping[Any, Mapping[str, float]] | None = None,
    ) -> Self: ...


@dataclass(frozen=True)
class _Coded:
    """Answers as integer arrays over sorted tasks, canonically ordered workers and the labels."""

    tasks: pd.Index
    workers: pd.Index
    t: np.ndarray
    w: np.ndarray
    y: np.ndarray
    known: np.ndarray  # per task: the known label's code, or -1
    model: np.ndarray | None  # per task: the model's distribution, NaN where it has none

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.tasks), len(self.workers), int(self.model.shape[1]) if self.model is not None else -1


def _as_frame(model_probas: Any, labels: Sequence[str]) -> pd.DataFrame | None:
    if model_probas is None:
        return None
    if not isinstance(model_probas, pd.DataFrame):
        model_probas = pd.DataFrame.from_dict(
            {k: dict(v) for k, v in model_probas.items()}, orient="index", dtype=float
        )
    extra = [str(c) for c in model_probas.columns if c not in set(labels)]
    if extra:
        raise DuolabelError(
            f"model probabilities: column(s) {extra} are not among the labels {list(labels)}."
        )
    frame = model_probas.reindex(columns=list(labels)).astype(float).fillna(0.0)
    values = frame.to_numpy()
    if not np.isfinite(values).all() or (values < 0).any():
        raise DuolabelError("model probabilities: every value must be a finite number >= 0.")
    total = values.sum(axis=1, keepdims=True)
    return pd.DataFrame(
        np.divide(values, total, out=np.full_like(values, np.nan), where=total > 0),
        index=frame.index,
        columns=frame.columns,
    )


def _canonical_workers(w_raw: np.ndarray, codes: np.ndarray, n_workers: int) -> np.ndarray:
    """A rank per worker that depends on what they answered, never on their name or the row order.

    Workers are ordered by their sorted (task, label) codes; workers with equal keys gave the
    same answers everywhere and are interchangeable, so their relative order cannot matter.
    """
    order = np.lexsort((codes, w_raw))
    split = np.split(codes[order], np.cumsum(np.bincount(w_raw, minlength=n_workers))[:-1])
    keys = sorted(range(n_workers), key=lambda i: (len(split[i]), split[i].tobytes()))
    rank = np.empty(n_workers, dtype=np.int64)
    rank[keys] = np.arange(n_workers)
    return rank


def _encode(
    answers: pd.DataFrame, labels: Sequence[str], known: Mapping[Any, str] | None, model_probas: Any
) -> _Coded:
    check_answers(answers, labels)
    known = dict(known or {})
    bad = sorted({str(v) for v in known.values()} - set(labels))
    if bad:
        raise DuolabelError(
            f"known answers: {', '.join(map(repr, bad))} not among the labels {list(labels)}."
        )
    tasks = pd.Index(sorted(set(answers["task"]) | set(known), key=str), name="task")
    t = tasks.get_indexer(answers["task"])
    y = pd.Categorical(answers["label"], categories=list(labels)).codes.astype(np.int64)
    w_raw, names = pd.factorize(answers["worker"])
    rank = _canonical_workers(w_raw, t.astype(np.int64) * len(labels) + y, len(names))
    workers = pd.Index(np.asarray(names, dtype=object)[np.argsort(rank)], name="worker")
    code = {label: i for i, label in enumerate(labels)}
    known_codes = np.array([code[known[task]] if task in known else -1 for task in tasks], dtype=np.int64)
    frame = _as_frame(model_probas, labels)
    model = None
    if frame is not None:
        model = frame.reindex(tasks).to_numpy(dtype=float)
    return _Coded(tasks, workers, t.astype(np.int64), rank[w_raw], y, known_codes, model)


class _Base:
    """Shared plumbing: known answers, tie-breaking and the fitted attributes."""

    labels: list[str]

    def fit_predict(
        self,
        answers: pd.DataFrame,
        *,
        known: Mapping[Any, str] | None = None,
        model_probas: Any = None,
    ) -> pd.Series:
        """Fit and return ``labels_``."""
        return self.fit(answers, known=known, model_probas=model_probas).labels_  # type: ignore[attr-defined]

    def fit_predict_proba(
        self,
        answers: pd.DataFrame,
        *,
        known: Mapping[Any, str] | None = None,
        model_probas: Any = None,
    ) -> pd.DataFrame:
        """Fit and return ``probas_``."""
        return self.fit(answers, known=known, model_probas=model_probas).probas_  # type: ignore[attr-defined]

    def _finish(self, coded: _Coded, probas: np.ndarray) -> None:
        k = len(self.labels)
        probas = np.asarray(probas, dtype=float).copy()
        fixed = coded.known >= 0
        probas[fixed] = np.eye(k)[coded.known[fixed]]
        top = probas.max(axis=1, keepdims=True)
        tied = probas >= top - _TIE
        model = np.zeros_like(probas) if coded.model is None else np.nan_to_num(coded.model, nan=0.0)
        score = np.where(tied, model, -1.0)
        tied &= score >= score.max(axis=1, keepdims=True) - _TIE
        pick = np.argmax(tied, axis=1)  # the first tied label in the project's order
        self.labels_ = pd.Series(
            np.asarray(self.labels, dtype=object)[pick], index=coded.tasks, name="agg_label"
        )
        self.probas_ = pd.DataFrame(probas, index=coded.tasks, columns=pd.Index(self.labels, name="label"))


def _vote_counts(coded: _Coded, k: int, weights: np.ndarray | None = None) -> np.ndarray:
    n = len(coded.tasks)
    return np.bincount(coded.t * k + coded.y, weights=weights, minlength=n * k).reshape(n, k).astype(float)


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum(axis=1, keepdims=True)
    k = counts.shape[1]
    return np.divide(counts, total, out=np.full_like(counts, 1.0 / k), where=total > 0)


@AGGREGATORS.register("majority_vote")
class MajorityVote(_Base):
    """The most frequent answer per task; its vote share is the posterior.

    Ties go to the label the model finds likelier (``model_probas``), then to the first in
    ``labels``. Known answers are returned as given.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["a", "a", "a"], "worker": [1, 2, 3], "label": ["x", "y", "x"]})
    >>> MajorityVote(labels=["x", "y"]).fit_predict(df).to_dict()
    {'a': 'x'}
    """

    def __init__(self, *, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> MajorityVote:
        coded = _encode(answers, self.labels, known, model_probas)
        self._finish(coded, _shares(_vote_counts(coded, len(self.labels))))
        return self


@AGGREGATORS.register("median")
class MedianVote(_Base):
    """The median answer on an ordered scale (``labels`` in scale order): the ``ordinal`` default.

    A near miss pulls the label less than a far one: answers low, low, high give low, where low,
    mid, high give mid. When the answers split evenly, every rank between the two middle
    answers is a median; the one the model finds likelier wins, else the middle of that range.
    ``probas_`` are the vote shares (so the confidence of a final label is the share of the
    answers that chose it). Known answers are returned as given.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["a"] * 3 + ["b"] * 2, "worker": [1, 2, 3, 1, 2],
    ...                    "label": ["low", "high", "high", "low", "high"]})
    >>> MedianVote(labels=["low", "mid", "high"]).fit_predict(df).to_dict()
    {'a': 'high', 'b': 'mid'}
    """

    def __init__(self, *, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> MedianVote:
        coded = _encode(answers, self.labels, known, model_probas)
        shares = _shares(_vote_counts(coded, len(self.labels)))
        self._finish(coded, shares)
        cum = np.cumsum(shares, axis=1)
        lower = np.argmax(cum >= 0.5 - _TIE, axis=1)
        upper = np.argmax(cum > 0.5 + _TIE, axis=1)
        pick = (lower + upper) // 2
        if coded.model is not None:
            ranks = np.arange(len(self.labels))
            between = (ranks >= lower[:, None]) & (ranks <= upper[:, None])
            model = np.where(between, np.nan_to_num(coded.model, nan=0.0), -1.0)
            best = model.max(axis=1, keepdims=True)
            sure = ((model >= best - _TIE) & between).sum(axis=1) == 1  # one likeliest rank
            pick = np.where(sure & (best[:, 0] > 0), model.argmax(axis=1), pick)
        fixed = coded.known >= 0
        pick[fixed] = coded.known[fixed]
        self.labels_ = pd.Series(
            np.asarray(self.labels, dtype=object)[pick], index=coded.tasks, name="agg_label"
        )
        return self


@AGGREGATORS.register("weighted_majority_vote")
class WeightedMajorityVote(_Base):
    """Votes weighted by each worker's accuracy on control tasks.

    A worker of accuracy ``a`` votes with weight ``log((K - 1) a / (1 - a))`` (K labels), the
    weight that makes the weighted vote the most likely label when workers err uniformly at
    random (Nitzan & Paroush 1982; Li & Yu 2014), floored at 0 so that a worker below chance
    is ignored rather than counted against their answer. Accuracies are clipped to
    ``[0.001, 0.999]``. Workers missing from ``skills`` get ``default_skill``, or, when it is
    None, the mean of the given skills (plain majority vote when no worker has one).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": ["a"] * 3, "worker": ["p", "q", "r"], "label": ["x", "y", "y"]})
    >>> skills = {"p": 0.95, "q": 0.6, "r": 0.6}
    >>> WeightedMajorityVote(labels=["x", "y"], skills=skills).fit_predict(df).to_dict()
    {'a': 'x'}
    """

    def __init__(
        self,
        *,
        labels: Sequence[str],
        skills: Mapping[Any, float] | None = None,
        default_skill: float | None = None,
    ) -> None:
        self.labels = list(labels)
        self.skills = skills
        self.default_skill = default_skill

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> WeightedMajorityVote:
        coded = _encode(answers, self.labels, known, model_probas)
        skills = dict(self.skills or {})
        default = self.default_skill
        if default is None:
            default = float(np.mean(list(skills.values()))) if skills else None
        k = len(self.labels)
        if default is None:
            weight = np.ones(len(coded.workers))
        else:
            acc = np.clip([float(skills.get(w, default)) for w in coded.workers], 1e-3, 1 - 1e-3)
            weight = np.maximum(np.log((k - 1) * acc / (1 - acc)), 0.0)
        self.weights_ = pd.Series(weight, index=coded.workers, name="weight")
        self._finish(coded, _shares(_vote_counts(coded, k, weight[coded.w])))
        return self


@AGGREGATORS.register("dawid_skene")
class DawidSkene(_Base):
    """Dawid-Skene EM: one confusion matrix per worker; optionally the model as one more annotator.

    Known answers fix their task's posterior to the true label in every E-step, so they anchor
    each worker's confusion matrix (crowd-kit's ``true_labels``).

    Each confusion-matrix row is the posterior mean under a Dirichlet prior: ``smoothing``
    pseudo-answers in every cell plus ``diagonal_prior`` on the correct one (Bayesian
    Dawid-Skene, e.g. Kim & Ghahramani 2012; Paun et al. 2018). With both at 0 this is
    crowd-kit's plain EM (which only floors cells at 1e-10) — and then a worker seen on a single
    task has an unidentified matrix: EM can decide three unanimous newcomers "say y whatever the
    truth is" and overrule them with the class prior. One imagined correct answer per label
    prevents that and fades as a worker's real answers accumulate.

    With ``fuse_model=True`` the model is one more annotator with its own confusion matrix,
    learned jointly with the people's. Its answer on a task is its calibrated distribution read
    as (top label, confidence band): the bands split the model's top probabilities into
    ``model_bands`` quantile groups, and each (label, band) is a column of its confusion matrix,
    so a sure vote can earn a sharper row than a hesitant one. A model that is right most of the
    time gets a sharp diagonal and breaks ties between people; one no better than chance gets
    rows that are all alike, which shift no posterior. Known items with a model prediction (the
    golden set's out-of-fold predictions) anchor the model's matrix. Reading the distribution as
    fractional answers instead (``log M`` weighted by every probability) was tried first: it
    dilutes the model's evidence, and a model right 83% of the time broke only 66% of human ties
    correctly (80% with the banded vote) in ``tests/test_aggregation.py``'s simulation.

    ``model_errors="known"`` learns the model's matrix from the known items only (still inside
    the same EM, with the people's matrices learned from everything). Jointly, the model is
    judged against posteriors the crowd shapes, so a crowd that is wrong in a systematic way
    teaches EM that the model is wrong where it is right; the known items are an unbiased
    yardstick (the golden out-of-fold predictions calibration uses). See docs/benchmarks.md.

    Attributes
    ----------
    labels_, probas_ : the label and the posterior of every task.
    priors_ : class priors. errors_ : workers x true x given label (P(given | true)).
    skills_ : each worker's accuracy under the priors. model_errors_ : true x model's top label.
    model_used_ : per task, whether the model's vote entered its posterior.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aabb"), "worker": [1, 2, 1, 2], "label": list("xyxx")})
    >>> ds = DawidSkene(labels=["x", "y"]).fit(df, known={"b": "x"})
    >>> ds.labels_.to_dict()
    {'a': 'x', 'b': 'x'}
    """

    def __init__(
        self,
        *,
        labels: Sequence[str],
        n_iter: int = 100,
        tol: float = 1e-5,
        smoothing: float = 0.01,
        diagonal_prior: float = 1.0,
        fuse_model: bool = False,
        model_bands: int = 3,
        model_errors: Literal["joint", "known"] = "joint",
    ) -> None:
        self.labels = list(labels)
        self.n_iter = n_iter
        self.tol = tol
        self.smoothing = smoothing
        self.diagonal_prior = diagonal_prior
        self.fuse_model = fuse_model
        self.model_bands = model_bands
        self.model_errors = model_errors

    def _m_step(self, coded: _Coded, probas: np.ndarray, n_workers: int) -> np.ndarray:
        k = len(self.labels)
        index = coded.w * k + coded.y
        counts = np.empty((n_workers, k, k))
        for true in range(k):
            counts[:, true, :] = np.bincount(
                index, weights=probas[coded.t, true], minlength=n_workers * k
            ).reshape(n_workers, k)
        return self._normalize(counts)

    def _normalize(self, counts: np.ndarray) -> np.ndarray:
        """Add the Dirichlet pseudo-counts and normalise each row over the given labels."""
        k = counts.shape[-1]
        counts = counts + self.smoothing + self.diagonal_prior * np.eye(k)
        counts = np.clip(counts, 1e-10, None)  # crowd-kit's floor, for smoothing=0
        return counts / counts.sum(axis=-1, keepdims=True)

    def _model_votes(self, model: np.ndarray, has: np.ndarray) -> tuple[np.ndarray, int]:
        """One-hot (top label, confidence band) per task; zero rows where the model has no vote."""
        k = model.shape[1]
        top = np.argmax(np.nan_to_num(model, nan=-1.0), axis=1)
        confidence = np.nan_to_num(model, nan=0.0).max(axis=1)
        cuts = (
            np.quantile(confidence[has], np.arange(1, self.model_bands) / self.model_bands)
            if has.any()
            else []
        )
        edges = np.unique(cuts)
        band = np.searchsorted(edges, confidence, side="right")
        n_bands = len(edges) + 1
        votes = np.zeros((len(model), k * n_bands))
        votes[np.flatnonzero(has), (top * n_bands + band)[has]] = 1.0
        return votes, n_bands

    def _model_m_step(
        self, votes: np.ndarray, has: np.ndarray, probas: np.ndarray, n_bands: int
    ) -> np.ndarray:
        k = probas.shape[1]
        # the diagonal prior is shared between the bands of the correct label
        prior = self.smoothing + np.repeat(np.eye(k), n_bands, axis=1) * self.diagonal_prior / n_bands
        counts = np.clip(probas[has].T @ votes[has] + prior, 1e-10, None)
        return counts / counts.sum(axis=1, keepdims=True)

    def _loglik(self, coded: _Coded, errors: np.ndarray, q: Any, model_errors: Any) -> np.ndarray:
        n, k = len(coded.tasks), len(self.labels)
        per_answer = np.log(errors).transpose(0, 2, 1)[coded.w, coded.y]  # answers x true label
        loglik = np.empty((n, k))
        for true in range(k):
            loglik[:, true] = np.bincount(coded.t, weights=per_answer[:, true], minlength=n)
        if model_errors is not None:
            loglik += q @ np.log(model_errors).T
        return loglik

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> DawidSkene:
        coded = _encode(answers, self.labels, known, model_probas)
        n, k, n_workers = len(coded.tasks), len(self.labels), len(coded.workers)
        fixed = coded.known >= 0
        anchor = np.eye(k)[coded.known[fixed]]
        model = coded.model if self.fuse_model else None  # None unless the model's vote is fused
        has = ~np.isnan(model).any(axis=1) if model is not None else np.zeros(n, dtype=bool)
        # the tasks the model's confusion matrix is learned from
        judged = has & fixed if self.model_errors == "known" else has
        if model is not None and self.model_errors == "known" and not judged.any():
            raise DuolabelError(
                "model_errors='known' needs known answers on items the model labelled "
                "(golden items); got none."
            )
        q, n_bands = self._model_votes(model, has) if model is not None else (None, 1)
        # Start from the people's vote shares (the model's distribution where nobody answered).
        probas = _shares(_vote_counts(coded, k))
        answered = np.bincount(coded.t, minlength=n) > 0
        if model is not None:
            probas[~answered & has] = np.nan_to_num(model, nan=0.0)[~answered & has]
        probas[fixed] = anchor
        priors = np.clip(probas.mean(axis=0), 1e-10, None)
        errors = self._m_step(coded, probas, n_workers)
        model_errors = self._model_m_step(q, judged, probas, n_bands) if q is not None else None
        elbo = -np.inf
        self.n_iter_ = 0
        for _ in range(self.n_iter):
            log_post = np.log(priors) + self._loglik(coded, errors, q, model_errors)
            log_post -= log_post.max(axis=1, keepdims=True)
            probas = np.exp(log_post)
            probas /= probas.sum(axis=1, keepdims=True)
            probas[fixed] = anchor
            priors = np.clip(probas.mean(axis=0), 1e-10, None)
            errors = self._m_step(coded, probas, n_workers)
            if q is not None:
                model_errors = self._model_m_step(q, judged, probas, n_bands)
            # crowd-kit's evidence lower bound, so that both stop after the same iteration: the
            # log prior enters once per answer (not once per task), and the sum is per answer.
            per_task_answers = np.bincount(coded.t, minlength=n)[:, None]
            loglik = self._loglik(coded, errors, q, model_errors) + per_task_answers * np.log(priors)
            clipped = np.clip(probas, 1e-10, None)
            new = float(((probas * loglik).sum() - (clipped * np.log(clipped)).sum()) / max(len(coded.t), 1))
            self.n_iter_ += 1
            if new - elbo < self.tol:
                break
            elbo = new
        self.priors_ = pd.Series(priors / priors.sum(), index=pd.Index(self.labels, name="label"))
        self.errors_ = errors
        self.workers_ = coded.workers
        diag = np.einsum("wkk->wk", errors)
        self.skills_ = pd.Series(diag @ self.priors_.to_numpy(), index=coded.workers, name="skill")
        self.model_errors_ = None
        if model_errors is not None:  # P(model's top label | true label), summed over the confidence bands
            by_label = model_errors.reshape(k, k, n_bands).sum(axis=2)
            self.model_errors_ = pd.DataFrame(by_label, index=self.labels, columns=self.labels)
        self.model_used_ = pd.Series(has, index=coded.tasks, name="model_used")
        self._finish(coded, probas)
        return self


def _crowdkit_frame(coded: _Coded, labels: Sequence[str]) -> pd.DataFrame:
    """Answers for crowd-kit, rows sorted and workers renamed to their canonical rank.

    crowd-kit numbers workers, tasks and labels in order of first appearance (and MACE draws its
    random start in that order), so a fixed row order and name-free worker ids keep its results
    independent of the input's row order and worker names.
    """
    order = np.lexsort((coded.w, coded.y, coded.t))
    return pd.DataFrame(
        {
            "task": coded.tasks.to_numpy()[coded.t[order]],
            "worker": coded.w[order],
            "label": np.asarray(labels, dtype=object)[coded.y[order]],
        }
    )


def _run_crowdkit(model: Any, frame: pd.DataFrame) -> Any:
    # crowd-kit 1.4.2 calls pandas methods with `inplace=`, which pandas 3 deprecates
    # (Pandas4Warning); the results are unaffected, so those warnings alone are silenced here.
    from pandas.errors import Pandas4Warning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Pandas4Warning)
        return model.fit(frame)


class _CrowdKitMethod(_Base):
    """A crowd-kit method on the canonical frame; known answers are returned as given."""

    def _probas(self, coded: _Coded, fitted: Any) -> np.ndarray:
        probas = fitted.probas_.reindex(index=coded.tasks, columns=self.labels).fillna(0.0).to_numpy(float)
        total = probas.sum(axis=1, keepdims=True)
        return np.divide(probas, total, out=np.full_like(probas, 1.0 / len(self.labels)), where=total > 0)


@AGGREGATORS.register("glad")
class GLAD(_CrowdKitMethod):
    """GLAD (Whitehill et al. 2009): worker skill and task difficulty, crowd-kit's implementation.

    ``skills_`` holds each worker's alpha (higher is better; negative is adversarial).
    Known answers are returned as given but do not enter the estimation (crowd-kit's GLAD
    has no ``true_labels``); use :class:`DawidSkene` where they should anchor it.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aaabbb"), "worker": [1, 2, 3] * 2, "label": list("xxyyyx")})
    >>> GLAD(labels=["x", "y"]).fit_predict(df).to_dict()
    {'a': 'x', 'b': 'y'}
    """

    def __init__(self, *, labels: Sequence[str], n_iter: int = 100, tol: float = 1e-5) -> None:
        self.labels = list(labels)
        self.n_iter = n_iter
        self.tol = tol

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> GLAD:
        from crowdkit.aggregation import GLAD as CrowdKitGLAD

        coded = _encode(answers, self.labels, known, model_probas)
        # Uniform priors over every label of the task: by default crowd-kit takes the labels seen in
        # the answers, and with a single one its error term is log(K - 1) = log(0).
        priors = pd.Series(1.0 / len(self.labels), index=self.labels)
        model = CrowdKitGLAD(n_iter=self.n_iter, tol=self.tol, labels_priors=priors)
        fitted = _run_crowdkit(model, _crowdkit_frame(coded, self.labels))
        alphas = fitted.alphas_.reindex(range(len(coded.workers))).to_numpy(float)
        self.skills_ = pd.Series(alphas, index=coded.workers, name="alpha")
        self._finish(coded, self._probas(coded, fitted))
        return self


@AGGREGATORS.register("mace")
class MACE(_CrowdKitMethod):
    """MACE (Hovy et al. 2013): each worker is sometimes a spammer; crowd-kit's implementation.

    ``skills_`` holds each worker's probability of answering truthfully rather than spamming.
    Known answers are returned as given (crowd-kit's MACE does not take them).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"task": list("aaabbb"), "worker": [1, 2, 3] * 2, "label": list("xxyyyx")})
    >>> MACE(labels=["x", "y"]).fit_predict(df).to_dict()
    {'a': 'x', 'b': 'y'}
    """

    def __init__(
        self, *, labels: Sequence[str], n_restarts: int = 10, n_iter: int = 50, random_state: int = 0
    ) -> None:
        self.labels = list(labels)
        self.n_restarts = n_restarts
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(
        self, answers: pd.DataFrame, *, known: Mapping[Any, str] | None = None, model_probas: Any = None
    ) -> MACE:
        from crowdkit.aggregation import MACE as CrowdKitMACE

        coded = _encode(answers, self.labels, known, model_probas)
        frame = _crowdkit_frame(coded, self.labels)
        model = CrowdKitMACE(n_restarts=self.n_restarts, n_iter=self.n_iter, random_state=self.random_state)
        fitted = _run_crowdkit(model, frame)
        # crowd-kit numbers workers by first appearance in `frame`; map back to the canonical rank
        first_seen = pd.unique(frame["worker"])
        truthful = np.empty(len(coded.workers))
        truthful[first_seen] = fitted.spamming_[:, 1]
        self.skills_ = pd.Series(truthful, index=coded.workers, name="truthful")
        self._finish(coded, self._probas(coded, fitted))
        return self


def make_aggregator(method: str, *, labels: Sequence[str], **params: Any) -> Aggregator:
    """The aggregator registered as ``method`` (see :data:`AGGREGATORS`) with its parameters.

    Examples
    --------
    >>> type(make_aggregator("dawid_skene", labels=["x", "y"], fuse_model=True)).__name__
    'DawidSkene'
    """
    if method not in AGGREGATORS:
        known = [*BUILT_IN, *(name for name in AGGREGATORS.names() if name not in BUILT_IN)]
        raise DuolabelError(f"aggregation method {method!r} is not one of {', '.join(known)}.")
    return AGGREGATORS.get(method)(labels=labels, **params)
