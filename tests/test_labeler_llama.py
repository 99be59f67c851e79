"""The llama labeler against the real bundled Gemma 3 270M GGUF, run by llama.cpp (no mocks).

The model is a weak base model: these tests check the scoring machinery (shapes, the
label likelihoods themselves, KV-cache reuse, prompt fitting, errors), never its accuracy.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import Labeler, TextItem, TrainableLabeler
from tests.conftest import shared_data

pytestmark = pytest.mark.slow

llama_cpp = pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
from duolabel.labelers.llama import LlamaLabeler, default_model_path  # noqa: E402

BOOK_LABELS = ["book", "not_book"]  # " not_book" is three Gemma tokens
INSTRUCTIONS = "Decide whether the Amazon review is about a book."
DESCRIPTIONS = ["the product is a book", "any other product"]

# Two labels of two and three tokens, and one ("positive") whose tokens begin another's.
TONES = ["very negative", "positive", "positive but flawed"]
# What is scored after "Label:" for each: a label that begins another one ends with the
# line break that follows it in the examples, or it would take the longer label's share.
TONE_TEXT = {
    "very negative": " very negative",
    "positive": " positive\n\n",
    "positive but flawed": " positive but flawed",
}
TONE_GOLDEN = [
    TextItem("t1", "Broke on the first day and support never answered.", "t1"),
    TextItem("t2", "Best purchase this year, I tell all my friends about it.", "t2"),
    TextItem("t3", "Nice design, but the battery dies within an hour.", "t3"),
]
TONE_GOLD = ["very negative", "positive", "positive but flawed"]
TONE_ITEMS = [
    TextItem("r1", "The kettle leaks and the lid does not close.", "r1"),
    TextItem("r2", "Wonderful little lamp, warm light, I love it.", "r2"),
    TextItem("r3", "It works, but the cable is far too short.", "r3"),
]


def amazon(n: int, seed: int = 3) -> tuple[list[TextItem], list[str]]:
    """``n`` amazon_isbook items, texts cut to 200 characters to keep the prompts short."""
    with (shared_data("amazon_isbook") / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    picked = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    items = [TextItem(rows[i]["id"], rows[i]["text"][:200], str(i)) for i in picked]
    return items, [rows[i]["gold"] for i in picked]


@pytest.fixture(scope="module")
def book_data() -> tuple[list[TextItem], list[str], list[TextItem]]:
    items, gold = amazon(7)
    return items[:4], gold[:4], items[4:]


@pytest.fixture(scope="module")
def book_labeler(book_data) -> LlamaLabeler:
    golden, gold, _items = book_data
    labeler = LlamaLabeler(
        labels=BOOK_LABELS, descriptions=DESCRIPTIONS, instructions=INSTRUCTIONS, n_ctx=1024, few_shot=2
    )
    return labeler.fit(golden, gold)


@pytest.fixture(scope="module")
def reference_llm():
    with contextlib.redirect_stderr(io.StringIO()):
        return llama_cpp.Llama(
            model_path=str(default_model_path()), n_ctx=1024, logits_all=False, verbose=False, n_threads=1
        )


def fresh_log_likelihoods(llm, label_texts: list[str], prompt: str) -> np.ndarray:
    """Each label text's summed token log-probabilities, each evaluated from an empty cache.

    No prefix reuse and no roll-back: the prompt in one batch, then the label's tokens one
    by one, reading the full next-token distribution after each. (Evaluating the label
    tokens in the prompt's batch would take llama.cpp's multi-row kernels, whose rounding
    differs by up to 0.2 nats on this model.)
    """
    prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True)
    out = []
    for text in label_texts:
        label_tokens = llm.tokenize(text.encode(), add_bos=False)
        llm.reset()
        llm.eval(prompt_tokens)
        total = 0.0
        for j, token in enumerate(label_tokens):
            if j:
                llm.eval([label_tokens[j - 1]])
            logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
            logits = np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).astype(np.float64)
            total += logits[token] - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
        out.append(total)
    return np.array(out)


def test_rows_are_distributions_over_multi_token_labels(book_labeler, book_data):
    _golden, _gold, items = book_data
    assert isinstance(book_labeler, Labeler) and isinstance(book_labeler, TrainableLabeler)
    probs, usage = book_labeler.predict_proba(items)
    assert probs.shape == (len(items), 2)
    assert np.isfinite(probs).all() and (probs >= 0).all()
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert usage.items == len(items) and usage.seconds > 0
    assert usage.input_tokens > 0 and usage.output_tokens == 0
    assert usage.extra["abstained"] == 0
    # " not_book" is scored token by token after the prompt: two extra tokens per item.
    assert usage.extra["label_tokens"] == 2 * len(items)


def test_golden_items_are_not_their_own_examples(book_labeler, book_data):
    golden, _gold, _items = book_data
    for item, prompt in zip(golden, book_labeler.prompts(golden), strict=True):
        text = " ".join(item.text.split())
        assert prompt is not None and prompt.count(text) == 1  # only as the item, at the end
        assert prompt.endswith(f"Text: {text}\nLabel:")
    probs, _usage = book_labeler.predict_proba(golden)
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_scores_equal_a_fresh_evaluation_of_every_label(reference_llm):
    labeler = LlamaLabeler(labels=TONES, n_ctx=1024, few_shot=2, instructions="Rate the review's tone.")
    labeler.fit(TONE_GOLDEN, TONE_GOLD)
    items = TONE_ITEMS + TONE_GOLDEN
    probs, usage = labeler.predict_proba(items)
    # The shared instruction prefix was read from the cache, not evaluated again.
    assert usage.input_tokens < usage.extra["prompt_tokens"]
    # The second item reused the first one's prompt prefix, and each label rolled the cache
    # back to the end of the prompt or to the token it shares with another label.
    [prompt] = labeler.prompts(items[1:2])
    expected = np.exp(fresh_log_likelihoods(reference_llm, [TONE_TEXT[t] for t in TONES], prompt))
    np.testing.assert_allclose(probs[1], expected / expected.sum(), atol=1e-4)
    # Whichever item came before (whatever was reused from the cache), the numbers are the same.
    reversed_probs, _ = labeler.predict_proba(items[::-1])
    np.testing.assert_allclose(reversed_probs[::-1], probs, atol=1e-9)


def test_label_orders_are_averaged(book_labeler, book_data):
    golden, gold, items = book_data
    shuffled = LlamaLabeler(
        labels=BOOK_LABELS,
        descriptions=DESCRIPTIONS,
        instructions=INSTRUCTIONS,
        n_ctx=1024,
        few_shot=2,
        permutations=2,
    ).fit(golden, gold)
    assert shuffled.version_ != book_labeler.version_
    probs, _usage = shuffled.predict_proba(items)
    assert np.isfinite(probs).all() and np.allclose(probs.sum(axis=1), 1.0)
    assert np.abs(probs - book_labeler.predict_proba(items)[0]).max() > 1e-4


def test_a_prompt_too_long_drops_examples_then_abstains(book_data):
    golden, gold, items = book_data
    labeler = LlamaLabeler(labels=BOOK_LABELS, n_ctx=160, few_shot=2).fit(golden, gold)
    long_item = TextItem("long", "This cookbook has recipes for every day. " * 60, "long")
    medium = TextItem("medium", "A slow novel about a lighthouse keeper and his dog. " * 5, "medium")
    probs, usage = labeler.predict_proba([items[0], long_item, medium])
    assert np.isnan(probs[1]).all()
    assert np.isfinite(probs[[0, 2]]).all() and np.allclose(probs[[0, 2]].sum(axis=1), 1.0)
    assert usage.extra["abstained"] == 1
    assert usage.extra["examples_dropped"] >= 1
    assert labeler.prompts([long_item]) == [None]


def test_zero_shot_and_refused_labels(book_data):
    _golden, _gold, items = book_data
    labeler = LlamaLabeler(labels=BOOK_LABELS, n_ctx=512, few_shot=0).fit([], [])
    probs, _usage = labeler.predict_proba(items[:1])
    assert np.allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(LabelerError, match="not among the project's labels"):
        labeler.fit(items[:1], ["novel"])
    with pytest.raises(LabelerError, match="call fit"):
        LlamaLabeler(labels=BOOK_LABELS).predict_proba(items[:1])


def test_version_follows_the_golden_set_and_the_prompt(book_labeler, book_data):
    golden, gold, _items = book_data
    same = LlamaLabeler(
        labels=BOOK_LABELS, descriptions=DESCRIPTIONS, instructions=INSTRUCTIONS, n_ctx=1024, few_shot=2
    )
    assert same.fit(golden, gold).version_ == book_labeler.version_
    assert same.fit(golden[1:], gold[1:]).version_ != book_labeler.version_
    reworded = LlamaLabeler(labels=BOOK_LABELS, instructions="Is it a book?", n_ctx=1024, few_shot=2)
    assert reworded.fit(golden, gold).version_ != book_labeler.version_


def test_a_missing_or_foreign_model_file_is_a_setup_error(tmp_path, book_data):
    golden, gold, _items = book_data
    missing = tmp_path / "nope.gguf"
    with pytest.raises(SetupError, match="nope.gguf does not exist"):
        LlamaLabeler(labels=BOOK_LABELS, model_path=missing).fit(golden, gold)
    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    with pytest.raises(SetupError, match="model.gguf is not a GGUF model file"):
        LlamaLabeler(labels=BOOK_LABELS, model_path=text).fit(golden, gold)
