"""The ``spans`` task type: labelled character-offset spans in an item's text.

Named entities, personal data, aspects: an answer is the list of the spans someone marked,
each ``{"start", "end", "label"}`` with ``text[start:end]`` the marked text. It is stored
canonically as a JSON list sorted by start, end and label (``[]`` when nothing applies), so
equal answers are equal strings and a CSV cell reads the same as a JSONL value.

People's answers are aggregated by a token-level vote (:class:`TokenVote`): each answer is
turned into one BIO tag per token, the majority tag wins per token, and the tokens are merged
back into spans. Agreement between annotators and the score of a control answer are
exact-match span F1 (:func:`span_f1`): a span counts when its start, end and label all match.

Examples
--------
>>> t = Spans()
>>> t.check_answer([{"start": 6, "end": 11, "label": "LOC"}, {"start": 0, "end": 5, "label": "PER"}],
...                ["LOC", "PER"])
'[{"start": 0, "end": 5, "label": "PER"}, {"start": 6, "end": 11, "label": "LOC"}]'
>>> t.check_against_text('[{"start": 0, "end": 5, "label": "PER"}]', "Alice")
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from duolabel.core.tasks import TASK_TYPES, AnswerError
from duolabel.errors import ConfigError

__all__ = [
    "Span",
    "Spans",
    "TokenVote",
    "bio_tags",
    "parse_spans",
    "span_f1",
    "span_scores",
    "spans_json",
    "tokens",
]

#: One span: (start, end, label), ``text[start:end]`` being the marked text.
Span = tuple[int, int, str]

#: A word or a single punctuation mark: the unit the token vote and the BIO tags work on.
_TOKEN = re.compile(r"\w+|[^\w\s]")


def spans_json(spans: Iterable[Span]) -> str:
    """The canonical stored form of ``spans``: a JSON list sorted by start, end and label.

    Examples
    --------
    >>> spans_json([(4, 9, "LOC"), (0, 3, "PER")])
    '[{"start": 0, "end": 3, "label": "PER"}, {"start": 4, "end": 9, "label": "LOC"}]'
    """
    return json.dumps(
        [{"start": s, "end": e, "label": lab} for s, e, lab in sorted(set(spans))], ensure_ascii=False
    )


def parse_spans(value: str) -> list[Span]:
    """A stored answer (a canonical JSON list, see :func:`spans_json`) as ``(start, end, label)``
    tuples. The stored form was checked when it was written, so this trusts it.

    Examples
    --------
    >>> parse_spans('[{"start": 0, "end": 3, "label": "PER"}]')
    [(0, 3, 'PER')]
    """
    return [(int(s["start"]), int(s["end"]), str(s["label"])) for s in json.loads(value)]


def span_scores(answer: Iterable[Span], gold: Iterable[Span]) -> tuple[int, int, int]:
    """Exact-match counts of ``answer`` against ``gold``: (true positives, false positives,
    false negatives).

    Examples
    --------
    >>> span_scores([(0, 3, "PER"), (4, 9, "LOC")], [(0, 3, "PER"), (4, 9, "ORG")])
    (1, 1, 1)
    """
    a, g = set(answer), set(gold)
    return len(a & g), len(a - g), len(g - a)


def span_f1(answer: Iterable[Span], gold: Iterable[Span]) -> float:
    """Exact-match span F1 of ``answer`` against ``gold``; 1.0 when both are empty (nothing to
    mark, and nothing marked). A control's score: partial credit for a partly right answer.

    Examples
    --------
    >>> span_f1([(0, 3, "PER"), (4, 9, "LOC")], [(0, 3, "PER")])
    0.6666666666666666
    >>> span_f1([], [])
    1.0
    """
    tp, fp, fn = span_scores(answer, gold)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def tokens(text: str | None, cuts: Iterable[int] = ()) -> list[tuple[int, int]]:
    """The token intervals the vote works on: words and punctuation marks of ``text``, each
    cut again at ``cuts`` (the answers' offsets) so that every span covers whole tokens. With
    no text, the pieces between consecutive cuts.

    Examples
    --------
    >>> tokens("New York's mayor", cuts=[8])
    [(0, 3), (4, 8), (8, 9), (9, 10), (11, 16)]
    >>> tokens(None, cuts=[0, 3, 8])
    [(0, 3), (3, 8)]
    """
    points = sorted(set(cuts))
    if text is None:
        return list(zip(points, points[1:], strict=False))
    out: list[tuple[int, int]] = []
    for match in _TOKEN.finditer(text):
        start, end = match.span()
        inner = [p for p in points if start < p < end]
        for a, b in zip([start, *inner], [*inner, end], strict=True):
            out.append((a, b))
    return out


def bio_tags(spans: Sequence[Span], pieces: Sequence[tuple[int, int]]) -> list[str]:
    """The BIO tag of each token (``pieces``) under ``spans``: ``B-<label>`` on a span's first
    token, ``I-<label>`` on the rest, ``O`` outside. Where spans overlap, the first by start
    wins, as BIO holds one tag per token.

    Examples
    --------
    >>> bio_tags([(0, 8, "LOC")], [(0, 3), (4, 8), (9, 14)])
    ['B-LOC', 'I-LOC', 'O']
    """
    tags = ["O"] * len(pieces)
    for start, end, label in sorted(spans):
        inside = [i for i, (a, b) in enumerate(pieces) if a >= start and b <= end and tags[i] == "O"]
        for n, i in enumerate(inside):
            tags[i] = ("B-" if n == 0 else "I-") + label
    return tags


def chunk_tags(
    tags: Sequence[str], pieces: Sequence[tuple[int, int]], sure: Sequence[float] | None = None
) -> tuple[list[Span], list[float]]:
    """Spans from one BIO tag per token (CoNLL chunking: ``B-X`` opens a span, ``I-X`` continues
    one of label X or opens it after anything else, ``O`` closes), with each span's confidence:
    the least of ``sure`` (per token; 1.0 without) over its tokens.

    Examples
    --------
    >>> chunk_tags(["B-PER", "I-PER", "O", "I-LOC"], [(0, 3), (4, 8), (9, 11), (12, 16)], [0.9, 0.6, 1, 0.7])
    ([(0, 8, 'PER'), (12, 16, 'LOC')], [0.6, 0.7])
    """
    spans: list[Span] = []
    least: list[float] = []
    current: list[Any] | None = None
    for n, (tag, (a, b)) in enumerate(zip(tags, pieces, strict=True)):
        p = 1.0 if sure is None else float(sure[n])
        label = tag[2:]
        if tag == "O" or tag.startswith("B-") or current is None or current[2] != label:
            if current is not None:
                spans.append((current[0], current[1], current[2]))
                least.append(current[3])
            current = None if tag == "O" else [a, b, label, p]
        else:
            current[1], current[3] = b, min(current[3], p)
    if current is not None:
        spans.append((current[0], current[1], current[2]))
        least.append(current[3])
    return spans, least


class TokenVote:
    """Aggregates span answers by a majority vote per token on BIO tags, merged back into spans.

    Each answer becomes one tag per token (``B-LABEL`` on a span's first token, ``I-LABEL`` on
    the rest, ``O`` outside); per token the tag most annotators gave wins (a tie with ``O`` goes
    to ``O``, so a span needs a majority to be kept), and the winning tags are chunked back into
    spans. ``texts`` (task -> item text) gives the tokens (words and punctuation marks, cut at
    the answers' offsets); without a task's text, the pieces between the answers' offsets are
    its tokens. After ``fit``: ``labels_`` (task -> the canonical JSON list of spans),
    ``confidence_`` (task -> the winning tag's share of the votes at the least agreed token:
    1.0 when everyone agreed everywhere) and ``probas_`` (tasks x labels: the largest share of
    votes any token got for the label). ``known`` and ``model_probas`` are accepted, as for
    every aggregator, and not used: a vote has nothing to anchor.

    Examples
    --------
    >>> df = pd.DataFrame({"task": ["a"] * 3, "worker": [1, 2, 3], "label": [
    ...     '[{"start": 0, "end": 8, "label": "LOC"}]',
    ...     '[{"start": 0, "end": 8, "label": "LOC"}]',
    ...     '[{"start": 4, "end": 8, "label": "PER"}]']})
    >>> agg = TokenVote(labels=["LOC", "PER"], texts={"a": "New York"}).fit(df)
    >>> agg.labels_["a"], round(float(agg.confidence_["a"]), 3)
    ('[{"start": 0, "end": 8, "label": "LOC"}]', 0.667)
    """

    def __init__(self, *, labels: Sequence[str], texts: Mapping[Any, str] | None = None) -> None:
        self.labels = list(labels)
        self.texts = texts

    def fit(
        self,
        answers: pd.DataFrame,
        *,
        known: Mapping[Any, str] | None = None,
        model_probas: Any = None,
    ) -> TokenVote:
        texts = self.texts or {}
        chosen: dict[Any, str] = {}
        sure: dict[Any, float] = {}
        shares: dict[Any, dict[str, float]] = {}
        for task, frame in answers.groupby("task", sort=True):
            given = [parse_spans(v) for v in frame["label"].astype(str)]
            cuts = [p for spans in given for s, e, _ in spans for p in (s, e)]
            pieces = tokens(texts.get(task), cuts)
            tags = [bio_tags(spans, pieces) for spans in given]
            winners: list[str] = []
            least = 1.0
            best = dict.fromkeys(self.labels, 0.0)
            for column in zip(*tags, strict=True) if pieces else []:
                counts = Counter(column)
                top = max(counts.values())
                # Sorted so that the choice among tied spans does not depend on who answered first.
                tag = "O" if counts["O"] == top else sorted(t for t, c in counts.items() if c == top)[0]
                winners.append(tag)
                least = min(least, top / len(column))
                for t, c in counts.items():
                    if t != "O" and t[2:] in best:
                        best[t[2:]] = max(best[t[2:]], c / len(column))
            chosen[task] = spans_json(chunk_tags(winners, pieces)[0])
            sure[task] = least
            shares[task] = best
        index = pd.Index(list(chosen), name="task")
        self.labels_ = pd.Series(list(chosen.values()), index=index, name="agg_label", dtype=object)
        self.confidence_ = pd.Series(list(sure.values()), index=index, dtype=float)
        self.probas_ = pd.DataFrame(list(shares.values()), index=index, columns=self.labels, dtype=float)
        self.probas_.columns.name = "label"
        return self


@TASK_TYPES.register("spans")
class Spans:
    """Labelled character-offset spans in the item's text (named entities, personal data, aspects).

    An answer is a list of ``{"start", "end", "label"}`` (a list, its JSON form, or a Parquet
    list of structs), stored as canonical JSON (:func:`spans_json`); ``[]`` is an answer (no
    span applies). :meth:`check_answer` checks the shape, ``0 <= start < end``, the labels and
    that no span is given twice; :meth:`check_against_text` checks ``end`` against the item's
    text (every boundary that knows the item calls it). Aggregation is the token vote
    (:class:`TokenVote`: the ``majority_vote`` method, per token), agreement the span F1
    between every two annotators of an item, a control answer scores its span F1 against the
    gold spans (partial credit), and exports carry the number of spans (``n_spans``).

    Examples
    --------
    >>> t = Spans()
    >>> t.check_answer('[{"start": 0, "end": 5, "label": "ORG"}]', ["PER"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    duolabel.core.tasks.AnswerError: got 'ORG', expected a list of spans ... one of 'PER'
    >>> t.answer_score('[{"start": 0, "end": 5, "label": "PER"}]', "[]")
    0.0
    """

    name: ClassVar[str] = "spans"
    widget: ClassVar[str] = "widgets/spans.html"
    default_aggregator: ClassVar[str] = "majority_vote"  # per token: TokenVote
    list_valued: ClassVar[bool] = True
    needs_texts: ClassVar[bool] = True  # answers point into the item's text: aggregation needs it

    def check_answer(self, value: Any, labels: Sequence[str]) -> str:
        names = ", ".join(repr(label) for label in labels)
        expected = f'a list of spans {{"start", "end", "label"}} with each label one of {names}'
        given: Any = value
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise AnswerError(value, f"{expected} ([] for none)")
            try:
                given = json.loads(text)
            except json.JSONDecodeError:
                raise AnswerError(value, f"{expected} (as JSON, which this is not)") from None
        elif hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1:  # a Parquet list cell
            given = value.tolist()
        if not isinstance(given, (list, tuple)):
            raise AnswerError(value, expected)
        spans: list[Span] = []
        for span in given:
            if not isinstance(span, Mapping) or set(span) != {"start", "end", "label"}:
                raise AnswerError(span, f'{expected} (each span exactly the keys "start", "end", "label")')
            start, end, label = span["start"], span["end"], span["label"]
            if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (start, end)):
                raise AnswerError(span, f"{expected} (start and end whole numbers)")
            if not 0 <= start < end:
                raise AnswerError(span, f"{expected} (0 <= start < end)")
            if not isinstance(label, str) or label not in labels:
                raise AnswerError(label, expected)
            spans.append((int(start), int(end), label))
        twice = [s for s, n in Counter(spans).items() if n > 1]
        if twice:
            raise AnswerError(
                value, f"{expected}, each at most once ({spans_json(twice[:1])[1:-1]} is twice)"
            )
        return spans_json(spans)

    def check_against_text(self, answer: str, text: str) -> None:
        """Raise :class:`AnswerError` unless every span of ``answer`` (as stored) lies in ``text``."""
        for start, end, label in parse_spans(answer):
            if end > len(text):
                raise AnswerError(
                    {"start": start, "end": end, "label": label},
                    f"a span inside the item's text (end <= {len(text)}, its length)",
                )

    def aggregator(self, method: str, *, labels: Sequence[str], **params: Any) -> TokenVote:
        # The vote is the one method built for spans: majority_vote, taken per token.
        if method != "majority_vote":
            raise ConfigError(
                f"aggregation.method {method!r} does not aggregate spans; use majority_vote "
                "(a vote per token) or leave it unset"
            )
        return TokenVote(labels=labels, texts=params.get("texts"))

    def predicted(self, probs: np.ndarray) -> np.ndarray:
        # Code paths that still ask for one label index get the most probable label.
        return np.asarray(probs).argmax(axis=1)

    def model_answer(self, probs: Sequence[float], labels: Sequence[str]) -> str:
        # A distribution over labels says nothing about where the spans are: no spans.
        return "[]"

    def model_confidence(self, probs: Sequence[float]) -> float:
        return 0.0

    def answer_score(self, answer: str, gold: str) -> float:
        """The credit for a control or exam ``answer`` against the ``gold`` spans: their span F1."""
        return span_f1(parse_spans(answer), parse_spans(gold))

    def routing_probs(self, probs: np.ndarray, answers: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """Per item, the calibrated chance that the model's whole span list is right (every
        column of a spans prediction holds it, :mod:`duolabel.labelers.span_labeler`) and,
        as the runner-up, the chance it is not, capped at the first: routing reads a row's top
        entry and its margin, as for a single-label distribution.

        Examples
        --------
        >>> probs = np.array([[0.9, 0.9], [0.3, 0.3]])
        >>> Spans().routing_probs(probs, ["[]", "[]"], ["PER", "LOC"]).round(2).tolist()
        [[0.9, 0.1], [0.3, 0.3]]
        """
        p = np.asarray(probs, dtype=float)
        if p.size == 0:
            return np.zeros((len(p), 2))
        whole = p[:, 0]
        return np.column_stack([whole, np.minimum(1.0 - whole, whole)])

    def routing_gold(self, answers: Sequence[str], gold: Sequence[str], labels: Sequence[str]) -> np.ndarray:
        """Column 0 (the model's list) where the model's span list equals the gold one, -1 otherwise.

        Examples
        --------
        >>> Spans().routing_gold(['[{"start": 0, "end": 5, "label": "PER"}]', "[]"], ["[]", "[]"], ["PER"])
        array([-1,  0])
        """
        return np.array(
            [
                0 if set(parse_spans(a)) == set(parse_spans(g)) else -1
                for a, g in zip(answers, gold, strict=True)
            ],
            dtype=int,
        )

    def agreement(self, answers: pd.DataFrame, labels: Sequence[str]) -> dict[str, float]:
        # Pooled over every two annotators of the same item: pairs where neither marked
        # anything add nothing (rather than a perfect 1 that would hide disagreement elsewhere).
        tp = fp = fn = 0
        for _, frame in answers.groupby("task"):
            given = [parse_spans(v) for v in frame["label"].astype(str)]
            for a, b in combinations(given, 2):
                t, p, n = span_scores(a, b)
                tp, fp, fn = tp + t, fp + p, fn + n
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
        return {"span F1 between annotators (pooled over pairs)": f1}

    def export_columns(self, label: str | None, labels: Sequence[str]) -> dict[str, Any]:
        if label is None:
            return {"n_spans": None}
        # A bare label (the sample the Parquet schema and the docs are built from) marks no span;
        # an int either way, so the column's type is known.
        return {"n_spans": len(json.loads(label)) if label.lstrip().startswith("[") else 0}
