"""Routing policies: for each item, accept the model's label, ask people, or ask an expert.

A policy scores items (higher = more likely right) and compares the score with a
threshold chosen on the golden items (see :mod:`duolabel.core.operating`):

- :class:`ThresholdPolicy` scores by calibrated confidence and asks a fixed number of people;
- :class:`DynamicOverlap` accepts the same way, but asks one person at a time and fuses their
  answers with the model's distribution until the posterior is sure enough;
- :class:`MetaRouter` scores by one minus the predicted probability that the model's label is
  wrong, from a classifier trained (cross-fitted) on the golden items.

The expert tier (:func:`expert_tier`) sends the lowest-scoring share of the routed items to
experts instead of people; :func:`route_items` applies a policy and the tier together.

Policies are found by name in :data:`POLICIES` (the ``routing.policy`` setting); a new one is
a subclass of :class:`ThresholdPolicy` (it inherits the members the route stage and
``simulate`` use) plus ``@POLICIES.register("name")``, or an entry point in the
``duolabel.policies`` group. :func:`make_policy` builds one from the routing settings.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, runtime_checkable

import numpy as np

from duolabel.core.probs import signals
from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT
from duolabel.core.registry import Registry

__all__ = [
    "FEATURES",
    "POLICIES",
    "Decision",
    "DynamicOverlap",
    "FollowUpPolicy",
    "MetaRouter",
    "OPTIONAL_FEATURES",
    "Policy",
    "ThresholdPolicy",
    "expert_tier",
    "feature_matrix",
    "fuse",
    "make_policy",
    "optional_columns",
    "policy_version",
    "route_items",
]

_EPS = 1e-12

POLICIES: Registry[type[ThresholdPolicy]] = Registry("policy", group="duolabel.policies")


@dataclass(frozen=True)
class Decision:
    """What happens to one item: the model's label is ``accept``-ed, or ``overlap`` people
    (``humans``) or an ``expert`` label it."""

    kind: Literal["accept", "humans", "expert"]
    overlap: int = 0


class Policy(Protocol):
    """The one required method of a routing policy: a decision per item."""

    def decide(
        self, probs: np.ndarray, features: Mapping[str, np.ndarray] | None = None
    ) -> list[Decision]: ...


@runtime_checkable
class FollowUpPolicy(Protocol):
    """A policy that decides again once people's answers are in (dynamic overlap)."""

    def follow_up(
        self, prior: np.ndarray, answers: Sequence[int], accuracies: Sequence[float]
    ) -> Decision: ...


def policy_version(kind: str, params: Mapping[str, object], model_version: str) -> str:
    """Identifies the decisions a policy with these parameters makes on one model version."""
    key = json.dumps({"kind": kind, "params": params, "model": model_version}, sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _top(probs: np.ndarray) -> np.ndarray:
    return probs.max(axis=1) if len(probs) else np.zeros(0)


@POLICIES.register("threshold")
class ThresholdPolicy:
    """Accept when the score (the calibrated top-label confidence unless ``scores`` is
    given) is at least ``threshold``; otherwise ask ``overlap`` people.

    The base of every policy: ``fit`` and ``cross_fit_scores`` (what the operating point is
    chosen on) learn nothing here; :attr:`uses_features` says whether :meth:`score` needs
    the item features beyond the calibrated distribution.

    Examples
    --------
    >>> import numpy as np
    >>> ThresholdPolicy(threshold=0.8, overlap=3).decide(np.array([[0.9, 0.1], [0.6, 0.4]]))
    [Decision(kind='accept', overlap=0), Decision(kind='humans', overlap=3)]
    """

    uses_features = False

    def __init__(self, *, threshold: float = 0.9, overlap: int = 3) -> None:
        self.threshold = threshold
        self.overlap = overlap

    @property
    def max_answers(self) -> int:
        """The most answers a routed item gets: people's label on it comes from this many."""
        return self.overlap

    @property
    def expected_answers(self) -> float:
        """Answers a routed item is expected to take, for the cost of routing it."""
        return self.overlap

    def fit(
        self, probs: np.ndarray, features: Mapping[str, np.ndarray], wrong: np.ndarray
    ) -> ThresholdPolicy:
        """Learn from the golden items (``wrong``: the model's label is wrong); nothing here."""
        return self

    def cross_fit_scores(
        self, probs: np.ndarray, features: Mapping[str, np.ndarray], wrong: np.ndarray
    ) -> np.ndarray:
        """The golden items' scores from a policy that never saw them (here: the scores)."""
        return self.score(probs, features)

    def score(self, probs: np.ndarray, features: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Per item: higher means the model's label is more likely right."""
        return _top(probs)

    def decide(self, probs: np.ndarray, features: Mapping[str, np.ndarray] | None = None) -> list[Decision]:
        """Accept items scoring at least the threshold; ask ``overlap`` people on the rest."""
        return [
            Decision("accept") if s >= self.threshold else Decision("humans", self.overlap)
            for s in self.score(probs, features)
        ]


def fuse(prior: np.ndarray, answers: Sequence[int], accuracies: Sequence[float]) -> np.ndarray:
    """Posterior over labels after people's answers, each from a person right with
    probability ``accuracy`` and otherwise picking one of the other labels uniformly.

    Examples
    --------
    >>> import numpy as np
    >>> fuse(np.array([0.5, 0.5]), [0, 0], [0.8, 0.8]).round(3).tolist()
    [0.941, 0.059]
    """
    k = len(prior)
    log_post = np.log(np.clip(np.asarray(prior, dtype=float), _EPS, 1.0))
    for answer, accuracy in zip(answers, accuracies, strict=True):
        p = float(np.clip(accuracy, 1.0 / k + 1e-6, 1.0 - 1e-6))
        likelihood = np.full(k, (1.0 - p) / (k - 1))
        likelihood[answer] = p
        log_post += np.log(likelihood)
    post = np.exp(log_post - log_post.max())
    return post / post.sum()


@POLICIES.register("dynamic")
class DynamicOverlap(ThresholdPolicy):
    """Accept like :class:`ThresholdPolicy`; for the rest ask one person, fuse the answers
    with the model's calibrated distribution (:func:`fuse`), and ask one more only while the
    top label's posterior is below ``posterior_target``, up to ``max_overlap`` people. Items
    still unsure then go to an expert when ``escalate`` is set.

    Examples
    --------
    >>> import numpy as np
    >>> policy = DynamicOverlap(threshold=0.9, posterior_target=0.9, max_overlap=3)
    >>> policy.follow_up(np.array([0.6, 0.4]), [0], [0.9])  # model and person agree
    Decision(kind='accept', overlap=1)
    >>> policy.follow_up(np.array([0.6, 0.4]), [1], [0.9])  # they disagree: ask one more
    Decision(kind='humans', overlap=2)
    """

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        posterior_target: float = 0.95,
        max_overlap: int = 5,
        escalate: bool = True,
    ) -> None:
        super().__init__(threshold=threshold, overlap=1)
        self.posterior_target = posterior_target
        self.max_overlap = max_overlap
        self.escalate = escalate

    @property
    def max_answers(self) -> int:
        return self.max_overlap

    def follow_up(self, prior: np.ndarray, answers: Sequence[int], accuracies: Sequence[float]) -> Decision:
        """What to do once ``answers`` are in: ``accept`` (the fused label is final, overlap =
        answers used), ``humans`` (ask one more), or ``expert``."""
        return self.settle(float(fuse(prior, answers, accuracies).max()), len(answers))

    def settle(self, sure: float, answers: int) -> Decision:
        """The decision once ``answers`` answers leave the likeliest answer with posterior
        ``sure``: what :meth:`follow_up` does with the fused distribution, and what a list's
        whole-list posterior (:mod:`duolabel.core.listfollow`) is compared with.

        Examples
        --------
        >>> DynamicOverlap(posterior_target=0.9, max_overlap=2).settle(0.8, 2)
        Decision(kind='expert', overlap=2)
        """
        if sure >= self.posterior_target:
            return Decision("accept", answers)
        if answers < self.max_overlap:
            return Decision("humans", answers + 1)
        return Decision("expert", answers) if self.escalate else Decision("accept", answers)

    @property
    def expected_answers(self) -> float:
        # A planning figure: between one answer (agreement at once) and max_overlap.
        return (1 + self.max_overlap) / 2


# Features of the meta-router, in this order. ``neighbourhood_accuracy`` is the model's
# accuracy on the nearest golden items in embedding space.
FEATURES = ("confidence", "margin", "entropy", "disagreement", "log_length", "neighbourhood_accuracy")

# Features the meta-router uses only where a labeler measured them (an LLM labeler's
# ``prompt_variants``): appended after FEATURES, so a project without them keeps exactly the
# columns, and so the scores, it had before.
OPTIONAL_FEATURES = (PROMPT_DISAGREEMENT,)


def optional_columns(features: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """The :data:`OPTIONAL_FEATURES` measured on at least one item of ``features``.

    Examples
    --------
    >>> import numpy as np
    >>> optional_columns({"prompt_disagreement": np.array([np.nan, 0.2])})
    ('prompt_disagreement',)
    >>> optional_columns({"prompt_disagreement": np.array([np.nan])})
    ()
    """
    return tuple(
        name
        for name in OPTIONAL_FEATURES
        if name in features and np.isfinite(np.asarray(features[name], dtype=float)).any()
    )


def feature_matrix(
    probs: np.ndarray,
    features: Mapping[str, np.ndarray],
    optional: Sequence[str] = (),
    fill: Mapping[str, float] | None = None,
) -> np.ndarray:
    """The meta-router's inputs: signals of the calibrated distribution plus ``features``
    (``disagreement``, ``log_length``, ``neighbourhood_accuracy``; missing ones are 0), then
    the ``optional`` columns, whose missing or NaN values (items not measured) are ``fill``-ed
    (by default with the mean of the measured ones)."""
    n = len(probs)
    found = signals(probs)
    columns = {"confidence": found["max_prob"], "margin": found["margin"], "entropy": found["entropy"]}
    rows = [columns.get(name, np.asarray(features.get(name, np.zeros(n)), dtype=float)) for name in FEATURES]
    for name in optional:
        values = np.asarray(features.get(name, np.full(n, np.nan)), dtype=float)
        measured = np.isfinite(values)
        default = (fill or {}).get(name, float(values[measured].mean()) if measured.any() else 0.0)
        rows.append(np.where(measured, values, default))
    return np.column_stack(rows) if n else np.zeros((0, len(FEATURES) + len(optional)))


@POLICIES.register("meta")
class MetaRouter(ThresholdPolicy):
    """Scores items by one minus the predicted probability that the model's label is wrong,
    from a logistic regression on :data:`FEATURES` trained on golden items, plus the
    :data:`OPTIONAL_FEATURES` measured on them (``columns_``: scoring uses the columns the
    router was fitted with; an item without a value gets the golden items' mean).

    ``fit`` learns from golden items; ``cross_fit_scores`` gives the golden items' own scores
    from models that never saw them, which is what the operating point is chosen on.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> probs = rng.dirichlet([1, 1], size=200)
    >>> wrong = rng.random(200) > probs.max(axis=1)
    >>> router = MetaRouter(threshold=0.5).fit(probs, {}, wrong)
    >>> router.score(probs, {}).shape
    (200,)
    """

    uses_features = True

    def __init__(
        self, *, threshold: float = 0.9, overlap: int = 3, folds: int = 5, random_state: int = 0
    ) -> None:
        super().__init__(threshold=threshold, overlap=overlap)
        self.folds = folds
        self.random_state = random_state

    def _model(self) -> Any:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))

    def fit(self, probs: np.ndarray, features: Mapping[str, np.ndarray], wrong: np.ndarray) -> MetaRouter:
        self.optional_ = optional_columns(features)
        self.fill_ = {
            name: float(np.nanmean(np.asarray(features[name], dtype=float))) for name in self.optional_
        }
        x = feature_matrix(probs, features, self.optional_, self.fill_)
        wrong = np.asarray(wrong, dtype=bool)
        self.base_rate_ = float(wrong.mean()) if len(wrong) else 0.0
        self.model_ = self._model().fit(x, wrong) if 0 < wrong.sum() < len(wrong) else None
        return self

    def _predict(self, model: object | None, base: float, x: np.ndarray) -> np.ndarray:
        if model is None:  # the model was always right (or always wrong) on the golden items
            return np.full(len(x), base)
        return model.predict_proba(x)[:, 1]  # type: ignore[attr-defined]

    def score(self, probs: np.ndarray, features: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        x = feature_matrix(probs, features or {}, self.optional_, self.fill_)
        return 1.0 - self._predict(self.model_, self.base_rate_, x)

    @property
    def columns_(self) -> tuple[str, ...]:
        """The feature columns the fitted router scores with, in order."""
        return FEATURES + self.optional_

    def cross_fit_scores(
        self, probs: np.ndarray, features: Mapping[str, np.ndarray], wrong: np.ndarray
    ) -> np.ndarray:
        """Out-of-fold scores of the golden items themselves."""
        from sklearn.model_selection import StratifiedKFold

        x = feature_matrix(probs, features, optional_columns(features))
        wrong = np.asarray(wrong, dtype=bool)
        out = np.empty(len(x))
        n_splits = min(self.folds, int(wrong.sum()), int((~wrong).sum()))
        if n_splits < 2:
            return np.full(len(x), 1.0 - (float(wrong.mean()) if len(wrong) else 0.0))
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        for train, test in splitter.split(x, wrong):
            model = self._model().fit(x[train], wrong[train])
            out[test] = 1.0 - self._predict(model, 0.0, x[test])
        return out


def expert_tier(decisions: list[Decision], scores: np.ndarray, *, share: float) -> list[Decision]:
    """Send to experts the routed items whose score is within the lowest ``share`` of the
    routed items' scores (by value, so the order of items never matters)."""
    routed = [i for i, d in enumerate(decisions) if d.kind == "humans"]
    if share <= 0 or not routed:
        return decisions
    cutoff = np.quantile(scores[routed], share, method="inverted_cdf")
    return [
        Decision("expert") if d.kind == "humans" and scores[i] <= cutoff and share > 0 else d
        for i, d in enumerate(decisions)
    ]


def route_items(
    policy: ThresholdPolicy,
    probs: np.ndarray,
    features: Mapping[str, np.ndarray] | None = None,
    *,
    expert_share: float = 0.0,
) -> list[Decision]:
    """The policy's decisions at its threshold, then the expert tier: what the route stage
    writes and what ``simulate`` replays.

    Examples
    --------
    >>> import numpy as np
    >>> probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.7, 0.3]])
    >>> [d.kind for d in route_items(ThresholdPolicy(threshold=0.8), probs, expert_share=0.5)]
    ['accept', 'expert', 'humans']
    """
    scores = policy.score(probs, features)
    return expert_tier(policy.decide(probs, features), scores, share=expert_share)


def make_policy(name: str, settings: Mapping[str, Any]) -> ThresholdPolicy:
    """The policy registered as ``name``, its keyword parameters taken from ``settings`` (the
    routing settings as plain values; keys the policy does not take are left out).

    Examples
    --------
    >>> policy = make_policy("dynamic", {"max_overlap": 4, "overlap": 3, "mode": "target"})
    >>> type(policy).__name__, policy.max_answers, policy.expected_answers
    ('DynamicOverlap', 4, 2.5)
    """
    cls = POLICIES.get(name)
    accepted = _parameters(cast(Any, cls))  # a class hashes (mypy reads the dataclass's eq)
    return cls(**{key: value for key, value in settings.items() if key in accepted})


@functools.cache
def _parameters(cls: type) -> frozenset[str]:
    # Remembered: the web app makes the policy after every answer (its follow-up), and
    # inspect.signature was a fifth of that follow-up's Python time.
    return frozenset(inspect.signature(cls).parameters)
