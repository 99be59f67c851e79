"""Prompt-variant disagreement: an error signal for LLM labelers (CoAnnotating-style).

An LLM labeler scores each item under its main prompt and, with ``prompt_variants: k``,
under ``k`` fixed paraphrases of the instruction (:func:`variant_instructions`). Where the
paraphrases' label distributions disagree, the model's answer rests on the wording rather
than the text, and it is more often wrong. :func:`variant_disagreement` measures that as
the generalised Jensen-Shannon divergence of the distributions (the entropy of their mean
minus their mean entropy): zero when every prompt gives the same distribution, whatever
its own uncertainty, which the ``entropy`` signal already measures. The main prompt's
distribution stays the labeler's prediction; the disagreement is stored in the
prediction's features under :data:`PROMPT_DISAGREEMENT`.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PARAPHRASES",
    "PROMPT_DISAGREEMENT",
    "variant_disagreement",
    "variant_features",
    "variant_instructions",
]

#: The feature name of the signal (in ``Prediction.features`` and ``ERROR_SIGNALS``).
PROMPT_DISAGREEMENT = "prompt_disagreement"

#: Fixed rewordings of the instruction, written once and tuned to no data set; ``{task}`` is
#: the project's instruction (or a generic one when it has none).
PARAPHRASES = (
    "{task}",
    "Read the text below and decide which label fits it best. {task}",
    "You are a careful annotator. {task} Pick exactly one of the labels listed.",
    "Classify the following text. {task}",
    "Task: {task} Choose the single most appropriate label.",
    "An expert would label this text as follows. {task}",
)
_GENERIC = "Assign the text one of the possible labels."


def variant_instructions(instructions: str, k: int) -> list[str]:
    """The ``k`` paraphrased instructions scored beside the main one (at most
    ``len(PARAPHRASES)``), none equal to ``instructions`` itself.

    Examples
    --------
    >>> for text in variant_instructions("Is it spam?", 2):
    ...     print(text)
    Read the text below and decide which label fits it best. Is it spam?
    You are a careful annotator. Is it spam? Pick exactly one of the labels listed.
    """
    task = " ".join(instructions.split()) or _GENERIC
    out: list[str] = []
    for template in PARAPHRASES:
        text = template.format(task=task)
        if text != instructions and text not in out:
            out.append(text)
    return out[: max(k, 0)]


def variant_disagreement(dists: np.ndarray) -> np.ndarray:
    """Per item, the generalised Jensen-Shannon divergence (nats) of its distributions under
    the prompts: ``dists`` has shape (prompts, items, labels). NaN where a prompt abstained.

    Examples
    --------
    >>> same = np.array([[[0.7, 0.3]], [[0.7, 0.3]]])
    >>> variant_disagreement(same).round(6).tolist()
    [0.0]
    >>> apart = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> variant_disagreement(apart).round(4).tolist()  # log 2: the most two prompts can disagree
    [0.6931]
    """
    dists = np.asarray(dists, dtype=float)

    def entropy(p: np.ndarray) -> np.ndarray:
        return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)

    spread = np.maximum(entropy(dists.mean(axis=0)) - entropy(dists).mean(axis=0), 0.0)
    return np.where(np.isnan(dists).any(axis=(0, 2)), np.nan, spread)


def variant_features(ids: list[str], main: np.ndarray, variants: np.ndarray) -> dict[str, dict[str, float]]:
    """Per item id, its :data:`PROMPT_DISAGREEMENT` over the main distributions (items,
    labels) and the variants' (prompts, items, labels); items not measured are left out.

    Examples
    --------
    >>> variant_features(["a"], np.array([[1.0, 0.0]]), np.array([[[0.0, 1.0]]]))["a"]
    {'prompt_disagreement': 0.6931471805599453}
    """
    spread = variant_disagreement(np.concatenate([np.asarray(main)[None], variants]))
    return {i: {PROMPT_DISAGREEMENT: float(v)} for i, v in zip(ids, spread, strict=True) if not np.isnan(v)}
