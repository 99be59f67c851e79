"""Dynamic overlap for list-valued answers: how sure people's lists and the model leave a list.

The ``dynamic`` policy (:class:`duolabel.core.policies.DynamicOverlap`) asks one person at a
time and stops once the fused posterior of the likeliest answer reaches ``posterior_target``.
For one label, :func:`~duolabel.core.policies.fuse` gives that posterior over the labels. A
list (``multi_label``, ``spans``) is not one draw from a handful of answers, so it is fused
**element by element** and the posterior of the likeliest list is the product over elements of
the likelier side of each: :func:`list_posterior`.

Why elements, not the answers' similarity or the lists' equality:

- *List equality* (one "label" per distinct list) needs a model of how often two people's wrong
  lists coincide. The one-coin model's "errors spread uniformly over the other answers" over
  2^L lists makes two equal lists almost certain, which is wrong: people err on the same hard
  label together.
- *The answer score* (Jaccard, span F1) measures how close two lists are, but closeness is not
  a probability that either is right, so no posterior target could be checked against it.
- *Elements* are what the types already decide on: a multi-label list is one yes/no question per
  label (binary relevance: calibration, aggregation and the whole-list chance of routing all work
  per label), and a span list is the set of its spans. Each element is a two-answer question
  fused exactly as one label is (:func:`~duolabel.core.policies.fuse` with two answers), and the
  whole list's posterior is the product over elements, the same independence assumption as the
  model's own whole-list chance (:meth:`duolabel.core.tasks.MultiLabel.model_confidence`).

A person's accuracy on one element is taken to be their measured accuracy, which for lists is
the mean of :meth:`~duolabel.core.tasks.TaskType.answer_score` on controls. For multi-label
that is the Jaccard index, never above the per-label accuracy (labels both leave out count for
the latter only), so people are trusted no more than they are and the rule asks for at least as
many answers as it needs. A person whose score is 0.5 or less carries no evidence (``fuse``
clips it), so the item goes on to ``max_overlap`` answers and, with ``escalate``, an expert.

Where each type's prior comes from:

- ``multi_label``: each label's calibrated probability.
- ``spans``: the model gives only the calibrated chance ``c`` that its whole list is right, a
  lower bound of the chance each of its calls (a span it marked is there, one it did not mark is
  not) is right. The model is a voter with accuracy ``max(c, 0.5)`` on every span anyone marked
  (0.5: no evidence). Spans nobody marked are unbounded, so one more factor covers them: the
  chance that a span exists which the model and every person missed, ``1 - max(c, 0.5)`` a
  priori and a person missing it with chance one minus their accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from duolabel.core.multilabel import answer_sets
from duolabel.core.policies import fuse
from duolabel.core.spans import parse_spans

__all__ = ["LIST_TYPES", "element_posteriors", "list_posterior"]

#: The list-valued task types whose answers :func:`list_posterior` fuses.
LIST_TYPES = ("multi_label", "spans")


def element_posteriors(prior: np.ndarray, votes: np.ndarray, accuracies: Sequence[float]) -> np.ndarray:
    """Per element, the posterior chance it belongs to the true list, from its ``prior``
    chance and people's yes/no ``votes`` (``(people, elements)``, True: in their list), each
    person right on an element with their accuracy.

    Examples
    --------
    >>> element_posteriors(np.array([0.5, 0.9]), np.array([[True, False]]), [0.8]).round(3).tolist()
    [0.8, 0.692]
    """
    prior = np.asarray(prior, dtype=float)
    votes = np.asarray(votes, dtype=bool).reshape(len(accuracies), len(prior))
    return np.array(
        [
            fuse(np.array([1.0 - p, p]), [int(v) for v in votes[:, j]], list(accuracies))[1]
            for j, p in enumerate(prior)
        ]
    )


def _sure(posteriors: np.ndarray) -> float:
    return float(np.prod(np.maximum(posteriors, 1.0 - posteriors)))


def list_posterior(
    kind: str,
    calibrated: Sequence[float] | None,
    model_answer: str | None,
    answers: Sequence[str],
    accuracies: Sequence[float],
    labels: Sequence[str],
) -> float:
    """The posterior chance that the likeliest list is right, after people's stored
    ``answers`` (with their ``accuracies``) and the model's ``calibrated`` row and stored
    ``model_answer`` (None: no calibrated prediction, the model gives no evidence).

    Examples
    --------
    >>> # the model is fairly sure of joy alone, one person agrees
    >>> round(list_posterior("multi_label", [0.8, 0.1], '["joy"]', ['["joy"]'], [0.9], ["joy", "love"]), 3)
    0.961
    >>> # the person leaves joy out: joy is now a coin toss, one more person is needed
    >>> round(list_posterior("multi_label", [0.8, 0.1], '["joy"]', ['[]'], [0.9], ["joy", "love"]), 3)
    0.684
    >>> one = '[{"start": 0, "end": 5, "label": "PER"}]'
    >>> round(list_posterior("spans", [0.7, 0.7], one, [one, one], [0.9, 0.9], ["PER"]), 3)
    0.99
    """
    if kind == "multi_label":
        prior = np.full(len(labels), 0.5) if calibrated is None else np.asarray(calibrated, dtype=float)
        chosen = [set(s) for s in answer_sets(answers)]
        votes = np.array([[label in s for label in labels] for s in chosen], dtype=bool)
        return _sure(element_posteriors(prior, votes, accuracies))
    if kind == "spans":
        # Every column of a spans prediction holds the calibrated whole-list chance.
        trust = 0.5 if calibrated is None or not len(calibrated) else max(float(calibrated[0]), 0.5)
        model = set(parse_spans(model_answer)) if calibrated is not None and model_answer else set()
        given = [set(parse_spans(a)) for a in answers]
        elements = sorted(model.union(*given))
        prior = np.array([trust if e in model else 1.0 - trust for e in elements])
        votes = np.array([[e in g for e in elements] for g in given], dtype=bool)
        marked = _sure(element_posteriors(prior, votes, accuracies)) if elements else 1.0
        people = np.clip(np.asarray(accuracies, dtype=float), 0.5, 1.0 - 1e-6)  # as fuse reads them
        missed = (1.0 - trust) * float(np.prod(1.0 - people))
        return marked * trust / (trust + missed)
    raise ValueError(f"no element-wise posterior for task type {kind!r}; one of {', '.join(LIST_TYPES)}")
