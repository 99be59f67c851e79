"""The BIO span tagger on the real bundled MiniLM encoder and real CoNLL-2003 sentences."""

from __future__ import annotations

import numpy as np
import pytest

from duolabel.core.spans import Spans, bio_tags, span_scores, spans_json
from duolabel.errors import LabelerError
from duolabel.labelers.span_tagger import SpanTagger, decode
from tests.test_spans import NER, conll


def test_word_tags_and_decode_are_inverse_on_confident_tags():
    words = [(0, 3), (4, 8), (9, 14), (15, 20)]
    spans = [(0, 8, "LOC"), (15, 20, "PER")]
    tags = bio_tags(spans, words)
    classes = ["B-LOC", "B-PER", "I-LOC", "O"]
    probs = np.array([[1.0 if c == t else 0.0 for c in classes] for t in tags])
    assert decode(words, probs, classes) == (spans, [1.0, 1.0], 1.0)
    unseen = probs.copy()
    unseen[2] = np.nan  # a word past the encoder's reach: O, and the item has no confidence
    assert decode(words, unseen, classes)[0] == spans and decode(words, unseen, classes)[2] == 0.0


@pytest.mark.slow
def test_the_tagger_learns_entities_from_golden_sentences():
    items, _ = conll(90)
    texts = [i["text"] for i in items]
    gold = [[(s["start"], s["end"], s["label"]) for s in i["gold"]] for i in items]
    tagger = SpanTagger().fit(texts[:60], gold[:60])
    seen = tagger.predict(texts[:60])
    tp = sum(span_scores(p.spans, g)[0] for p, g in zip(seen, gold[:60], strict=True))
    assert tp > 0.8 * sum(map(len, gold[:60]))  # it fits what it learnt from
    unseen = tagger.predict(texts[60:])
    counts = np.sum([span_scores(p.spans, g) for p, g in zip(unseen, gold[60:], strict=True)], axis=0)
    tp, fp, fn = (int(c) for c in counts)
    assert 2 * tp / (2 * tp + fp + fn) > 0.1  # and finds some entities in sentences it never saw
    for text, prediction in zip(texts[60:], unseen, strict=True):
        answer = Spans().check_answer(spans_json(prediction.spans), NER)  # a valid answer
        Spans().check_against_text(answer, text)
        assert all(0 < c <= 1 for c in prediction.span_confidence)
        assert 0 <= prediction.confidence <= min(prediction.span_confidence, default=1.0)


def test_golden_items_without_any_span_are_refused():
    with pytest.raises(LabelerError, match="at least one span"):
        SpanTagger().fit(["nothing here", "nor here"], [[], []])
