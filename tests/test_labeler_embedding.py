"""The embedding labeler against the real all-MiniLM-L6-v2 encoder, on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from duolabel.errors import LabelerError
from duolabel.labelers import EmbeddingLabeler, TextItem
from duolabel.labelers.base import Labeler, TrainableLabeler
from duolabel.labelers.embedding import MemoryEmbeddingCache
from tests.conftest import shared_data

pytestmark = pytest.mark.slow

# Stated floor: with 150 golden items the head should be right on at least 90% of the
# other amazon_isbook items (about 96% was seen when the project started).
ACCURACY_FLOOR = 0.90


def amazon_split(n_golden: int = 150, seed: int = 7):
    with (shared_data("amazon_isbook") / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    items = [TextItem(rows[i]["id"], rows[i]["text"], str(i)) for i in order]
    gold = [rows[i]["gold"] for i in order]
    return items[:n_golden], gold[:n_golden], items[n_golden:], gold[n_golden:]


@pytest.fixture(scope="module")
def fitted():
    train, train_gold, test, test_gold = amazon_split()
    labeler = EmbeddingLabeler(labels=["book", "not_book"], cache=MemoryEmbeddingCache())
    labeler.fit(train, train_gold)
    return labeler, train, train_gold, test, test_gold


def test_interfaces_are_met(fitted):
    labeler = fitted[0]
    assert isinstance(labeler, Labeler) and isinstance(labeler, TrainableLabeler)


def test_accuracy_above_the_floor_with_150_golden_items(fitted):
    labeler, _train, _gold, test, test_gold = fitted
    probs, usage = labeler.predict_proba(test)
    assert probs.shape == (len(test), 2)
    assert np.allclose(probs.sum(axis=1), 1.0)
    predicted = np.array(labeler.labels)[probs.argmax(axis=1)]
    accuracy = float((predicted == np.array(test_gold)).mean())
    assert accuracy >= ACCURACY_FLOOR, accuracy
    assert usage.items == len(test) and usage.seconds > 0


def test_out_of_fold_probabilities_are_honest(fitted):
    labeler, train, train_gold, _test, _test_gold = fitted
    oof = labeler.oof_proba_
    assert oof.shape == (len(train), 2) and np.allclose(oof.sum(axis=1), 1.0)
    in_sample = labeler.head_.predict_proba(labeler.encode(train)[0])
    # Out-of-fold scores differ from in-sample ones (the point of cross-fitting).
    assert not np.allclose(oof, in_sample)


def test_version_depends_on_the_training_set(fitted):
    labeler, train, train_gold, _test, _ = fitted
    again = EmbeddingLabeler(labels=["book", "not_book"], cache=labeler.cache)
    assert again.fit(train, train_gold).version_ == labeler.version_
    assert again.fit(train[1:], train_gold[1:]).version_ != labeler.version_


def test_a_label_without_examples_is_refused(fitted):
    labeler, train, _gold, _test, _ = fitted
    with pytest.raises(LabelerError, match="no training examples for label"):
        EmbeddingLabeler(labels=["book", "not_book"], cache=labeler.cache).fit(train[:3], ["book"] * 3)


def test_embeddings_are_cached_in_the_store(tmp_path):
    from duolabel.labelers.embedding import StoreEmbeddingCache
    from duolabel.store import Item, open_store

    store = open_store(None, tmp_path)
    items = [TextItem("a", "a paperback novel", "h1"), TextItem("b", "a toaster", "h2")]
    with store.write() as session:
        for n, item in enumerate(items):
            session.add(Item(id=item.id, seq=n, text=item.text, fields={}, content_hash=item.content_hash))
    labeler = EmbeddingLabeler(labels=["book", "not_book"], cache=StoreEmbeddingCache(store, "minilm"))
    first, usage = labeler.encode(items)
    assert usage.cached == 0
    second, usage = labeler.encode(items)
    assert usage.cached == 2 and np.allclose(first, second)
    changed = [TextItem("a", "a kettle", "h3"), items[1]]
    _vectors, usage = labeler.encode(changed)
    assert usage.cached == 1  # new content under the same id is encoded again
    store.close()
