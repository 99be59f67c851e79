"""The ``openai`` labeler against a real OpenAI-compatible server: llama_cpp.server on loopback.

No HTTP layer is mocked: the server is the real ``llama_cpp.server`` serving the bundled
Gemma 3 270M GGUF (a weak labeler; these tests check the path, not the quality). A second,
private server runs without log-probabilities (``--logits_all False``) for the vote-share
fallback and is killed with SIGKILL mid-run. The answer-to-label mapping is tested as pure
functions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import TextItem, TrainableLabeler
from duolabel.labelers.cache import MemoryResponseCache
from duolabel.labelers.openai import LabelingStopped, OpenAILabeler, logprob_distribution, match_label
from tests.llm_server import MODEL_ALIAS, LlamaServer, free_port, gguf_path, llm_missing

pytestmark = pytest.mark.slow

LABELS = ["billing", "shipping", "account"]
DESCRIPTIONS = ["payments, charges, refunds", "parcels and delivery", "logging in and passwords"]
GOLDEN = [
    TextItem("g1", "I was charged twice for one order", "hg1"),
    TextItem("g2", "My parcel has not arrived yet", "hg2"),
    TextItem("g3", "I cannot log in to my account", "hg3"),
]
GOLD = ["billing", "shipping", "account"]
ITEMS = [
    TextItem(f"t{k}", text, f"h{k}")
    for k, text in enumerate(
        [
            "Please refund the payment you took yesterday",
            "Where is my package? The tracking page is empty",
            "How do I reset my password?",
            "The invoice shows the wrong amount",
            "The courier left the box at the wrong address",
            "My login code never arrives",
        ]
    )
]


class CountingCache(MemoryResponseCache):
    """A memory cache that counts what was written and found."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0
        self.hits = 0

    def get(self, key: str) -> dict[str, Any] | None:
        found = super().get(key)
        self.hits += found is not None
        return found

    def put(self, key: str, response: dict[str, Any]) -> None:
        self.puts += 1
        super().put(key, response)


def labeler(base_url: str, **options: Any) -> OpenAILabeler:
    settings: dict[str, Any] = {
        "labels": LABELS,
        "descriptions": DESCRIPTIONS,
        "instructions": "Sort customer support tickets by topic.",
        "model": MODEL_ALIAS,
        "base_url": base_url,
        "few_shot": 2,
        "answer_tokens": 1,  # llama.cpp's Python server spends about 1 s per token on top tokens
        "samples": 2,
        "timeout": 30.0,
        "max_retries": 1,
        "backoff": 0.05,
        **options,
    }
    return OpenAILabeler(**settings).fit(GOLDEN, GOLD)


def assert_rows(probs: np.ndarray, n: int) -> int:
    """Every row is a distribution or an abstention (all NaN); returns the abstentions."""
    assert probs.shape == (n, len(LABELS))
    abstained = np.isnan(probs).all(axis=1)
    assert not np.isnan(probs[~abstained]).any()
    rows = probs[~abstained]
    assert (rows >= 0).all() and (rows <= 1).all()
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-9)
    return int(abstained.sum())


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text and text
    return text


@pytest.fixture(scope="module")
def server(llm_server):
    return llm_server


@pytest.fixture(scope="module")
def bare_server() -> Iterator[LlamaServer]:
    """A private server that gives no log-probabilities, for the fallback and for killing."""
    if why := llm_missing():
        pytest.skip(why)
    srv = LlamaServer(gguf_path(), args=["--logits_all", "False"]).start()
    try:
        yield srv
    finally:
        srv.close()


# -- answers to labels: pure functions -------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("billing", 0),
        (" Billing.\n\nText: more", 0),
        ("**SHIPPING**", 1),
        ("'account'", 2),
        ("ship", 1),  # a unique prefix
        ("Label: account", 2),
        ("billing, 0.8", 0),
        ("\n\n  shipping  ", 1),
    ],
)
def test_unambiguous_answers_map_to_their_label(answer: str, expected: int) -> None:
    assert match_label(answer, LABELS) == expected


@pytest.mark.parametrize("answer", ["refund", "", "   \n", "the parcel is late", "b i l l"])
def test_unknown_answers_are_abstentions(answer: str) -> None:
    assert match_label(answer, LABELS) is None


def test_ambiguous_answers_are_abstentions() -> None:
    labels = ["not_spam", "not_sure", "spam"]
    assert match_label("not", labels) is None  # the start of two labels
    assert match_label("Not spam", labels) == 0  # case, spacing and "_" do not matter
    assert match_label("spam", labels) == 2  # equal to one label, the start of none other
    assert match_label("Spam!", ["spam", "SPAM"]) is None  # two labels read alike


def test_top_tokens_give_a_distribution_over_the_labels() -> None:
    positions = [
        [("\n", -0.1), ("**", -3.0)],  # markup first: skipped
        [(" ship", np.log(0.3)), (" Billing", np.log(0.2)), (" billing", np.log(0.2)), (" the", np.log(0.3))],
    ]
    probs = logprob_distribution(positions, LABELS)
    np.testing.assert_allclose(probs, [0.4 / 0.7, 0.3 / 0.7, 0.0])
    # A token that starts two labels is split between them.
    split = logprob_distribution([[(" not", 0.0)]], ["not_spam", "not_sure", "spam"])
    np.testing.assert_allclose(split, [0.5, 0.5, 0.0])
    # An answer that begins with some other word is no label: abstain, do not guess.
    assert logprob_distribution([[(" The", -0.1), (" refund", -2.0)], [(" billing", -0.1)]], LABELS) is None
    assert logprob_distribution([], LABELS) is None


def test_it_is_a_trainable_labeler_whose_version_follows_its_inputs() -> None:
    lab = labeler("http://127.0.0.1:9/v1")  # fit sends nothing
    assert isinstance(lab, TrainableLabeler) and lab.name == "openai"
    same = labeler("http://127.0.0.1:9/v1").version_
    other_gold = labeler("http://127.0.0.1:9/v1").fit(GOLDEN, ["billing", "billing", "account"])
    other_model = labeler("http://127.0.0.1:9/v1", model="another")
    assert lab.version_ == same and len({lab.version_, other_gold.version_, other_model.version_}) == 3


def test_a_missing_openai_key_is_a_setup_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DUOLABEL_TEST_NO_KEY", raising=False)
    lab = OpenAILabeler(labels=LABELS, model="gpt-4o-mini", api_key_env="DUOLABEL_TEST_NO_KEY")
    with pytest.raises(SetupError, match="set DUOLABEL_TEST_NO_KEY"):
        lab.predict_proba(ITEMS[:1])


# -- against the real server ------------------------------------------------------


def test_logprobs_give_probability_rows_and_the_cache_answers_again(server: LlamaServer) -> None:
    cache = CountingCache()
    lab = labeler(server.base_url, cache=cache, concurrency=2, price_input_per_million=2.0)
    result: dict[str, Any] = {}
    # predict_proba runs its own event loop: it works from a plain thread.
    worker = threading.Thread(target=lambda: result.update(out=lab.predict_proba(ITEMS[:3])))
    worker.start()
    worker.join(timeout=120)
    probs, usage = result["out"]
    abstained = assert_rows(probs, 3)
    assert usage.items == 3 and usage.cached == 0 and cache.puts == 3
    assert usage.extra["abstained"] == abstained and usage.extra["sampled"] == 0  # logprobs were given
    assert usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.extra["cost"] == pytest.approx(usage.input_tokens * 2.0 / 1e6)

    again, usage2 = lab.predict_proba(ITEMS[:3])
    np.testing.assert_array_equal(again, probs)
    assert usage2.cached == 3 and usage2.input_tokens == 0 and usage2.extra["cost"] == 0.0
    assert cache.puts == 3

    async def from_async_code() -> tuple[np.ndarray, Any]:
        return lab.predict_proba(ITEMS[:3])  # inside a running loop: it runs its own in a thread

    inside, usage3 = asyncio.run(from_async_code())
    np.testing.assert_array_equal(inside, probs)
    assert usage3.cached == 3


def test_budget_stops_with_the_answers_kept(server: LlamaServer) -> None:
    cache = CountingCache()
    # A price of one per output token: the first answer alone reaches the budget.
    lab = labeler(server.base_url, cache=cache, concurrency=1, budget=0.5, price_output_per_million=1e6)
    with pytest.raises(LabelingStopped) as stopped:
        lab.predict_proba(ITEMS[:3])
    assert isinstance(stopped.value, LabelerError)
    assert "budget of 0.5" in one_line(stopped.value)
    probs, usage = stopped.value.partial
    assert stopped.value.done == 1 and probs.shape == (1, len(LABELS))
    assert usage.extra["cost"] >= 0.5 and cache.puts == 1

    lab.budget = None
    full, usage = lab.predict_proba(ITEMS[:3])
    assert usage.cached == 1 and cache.puts == 3
    np.testing.assert_array_equal(full[:1], probs)


def test_the_budget_counts_the_machines_time_as_the_ledger_does(server: LlamaServer) -> None:
    # Tokens are free here; the machine's time is priced so that one request's wait (well
    # over 10 ms) passes the budget: the run stops after it, as the ledger would count it.
    lab = labeler(server.base_url, concurrency=1, budget=1.0, price_compute_hour=3600 * 100.0)
    with pytest.raises(LabelingStopped) as stopped:
        lab.predict_proba(ITEMS[:3])
    assert "budget of 1" in one_line(stopped.value)
    probs, usage = stopped.value.partial
    assert stopped.value.done == 1 and usage.extra["cost"] == 0.0


def test_a_server_that_is_down_fails_fast_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    lab = labeler(url, max_retries=2, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(LabelingStopped) as failed:
        lab.predict_proba(ITEMS[:3])
    assert time.monotonic() - started < 10
    text = one_line(failed.value)
    assert f"the server at {url} is not answering" in text and "tried 3 times" in text
    assert failed.value.partial[0].shape == (0, len(LABELS))


def test_a_hung_server_times_out(bare_server: LlamaServer) -> None:
    lab = labeler(bare_server.base_url, timeout=1.0, max_retries=1)
    bare_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(LabelingStopped) as stopped:
            lab.predict_proba(ITEMS[:1])
        assert time.monotonic() - started < 10
    finally:
        bare_server.resume()
    text = one_line(stopped.value)
    assert f"the server at {bare_server.base_url} is not answering" in text and "timed out" in text


def test_chat_endpoint_gives_logprobs(server: LlamaServer) -> None:
    lab = labeler(server.base_url, endpoint="chat")
    probs, usage = lab.predict_proba(ITEMS[:1])
    assert usage.extra["abstained"] == assert_rows(probs, 1)
    assert usage.extra["sampled"] == 0  # llama_cpp.server returns top_logprobs on chat too


def test_verbalized_confidence(server: LlamaServer) -> None:
    lab = labeler(server.base_url, verbalized=True)
    probs, usage = lab.predict_proba(ITEMS[:2])
    # The base 270M model rarely states a confidence: those items are abstentions.
    assert usage.extra["abstained"] == assert_rows(probs, 2)
    assert usage.output_tokens > 0


def test_no_logprobs_falls_back_to_vote_share(bare_server: LlamaServer) -> None:
    lab = labeler(bare_server.base_url, samples=3)  # asks for logprobs; this server refuses them
    probs, usage = lab.predict_proba(ITEMS[:2])
    abstained = assert_rows(probs, 2)
    assert usage.extra["sampled"] == 2 and usage.extra["abstained"] == abstained
    answered = probs[~np.isnan(probs).all(axis=1)]
    # A share of at most 3 votes is a multiple of 1/3 or 1/2 (answers that are no label do not vote).
    assert np.allclose(answered * 6, np.round(answered * 6))


def test_a_server_killed_mid_run_keeps_what_was_answered(bare_server: LlamaServer) -> None:
    cache = CountingCache()
    lab = labeler(bare_server.base_url, cache=cache, concurrency=1)
    done = 0

    def kill_after_two(n: int) -> None:
        nonlocal done
        done += n
        if done == 2:
            bare_server.kill()

    try:
        with pytest.raises(LabelingStopped) as stopped:
            lab.predict_proba(ITEMS[:4], progress=kill_after_two)
        text = one_line(stopped.value)
        assert f"the server at {bare_server.base_url} is not answering" in text
        probs, usage = stopped.value.partial
        assert stopped.value.done == 2 and usage.items == 2 and cache.puts == 2
        assert_rows(probs, 2)

        # The server is still down: the answered items come from the cache, no request is sent.
        cached, usage = lab.predict_proba(ITEMS[:2])
        assert usage.cached == 2 and usage.input_tokens == 0
        np.testing.assert_array_equal(cached, probs)
    finally:
        bare_server.start()

    # Back up on the same address: the run completes and pays only for the rest.
    full, usage = lab.predict_proba(ITEMS[:4])
    assert_rows(full, 4)
    assert usage.cached == 2 and usage.items == 4 and cache.puts == 4
    np.testing.assert_array_equal(full[:2], probs)
