"""The ``openai`` labeler over a fleet: two real llama_cpp.server processes on loopback.

One server is killed with SIGKILL mid-run: every item is still labelled, by the other, and
each answered request is counted (and cached) once. The policy itself is tested with fakes
in test_fleet.py; the key and request-shaping checks here need no server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from duolabel.labelers.base import TextItem
from duolabel.labelers.cache import MemoryResponseCache, cache_key
from duolabel.labelers.openai import LabelingStopped, OpenAILabeler
from tests.llm_server import MODEL_ALIAS, LlamaServer, free_port, gguf_path, llm_missing
from tests.test_labeler_openai import ITEMS as TICKETS
from tests.test_labeler_openai import LABELS, CountingCache, assert_rows, labeler, one_line

# Twelve tickets: the six of test_labeler_openai, numbered apart.
ITEMS = [TextItem(f"f{k}", f"{TICKETS[k % 6].text} (ticket {k})", f"hf{k}") for k in range(12)]


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[LlamaServer, LlamaServer]]:
    if why := llm_missing():
        pytest.skip(why)
    first = LlamaServer(gguf_path())
    second = LlamaServer(gguf_path())
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.close()
        second.close()


@pytest.mark.slow
def test_a_server_killed_mid_run_loses_no_item_and_no_request_is_counted_twice(
    pair: tuple[LlamaServer, LlamaServer],
) -> None:
    first, second = pair
    cache = CountingCache()
    lab = labeler([first.base_url, second.base_url], cache=cache, concurrency=1, cooldown=60.0)
    done = 0

    def kill_second_after_four(n: int) -> None:
        nonlocal done
        done += n
        if done == 4:
            second.kill()  # SIGKILL: its request in flight is lost, and retried on the first

    try:
        probs, usage = lab.predict_proba(ITEMS, progress=kill_second_after_four)
    finally:
        second.start()
    assert_rows(probs, len(ITEMS))
    servers = {s.url: s for s in lab.fleet_.servers}
    answered = [servers[first.base_url].answered, servers[second.base_url].answered]
    assert answered[1] >= 1 and answered[0] > answered[1]  # both served; the survivor the rest
    # Each item cost one request (log-probabilities), counted and cached once, on one server.
    assert usage.items == len(ITEMS) and cache.puts == len(ITEMS)
    assert usage.extra["requests"] == sum(answered) == len(ITEMS)
    assert servers[second.base_url].last_error  # its failures were seen, and retried elsewhere

    # The same labeler again: every answer is cached, no server is asked.
    again, usage = lab.predict_proba(ITEMS)
    np.testing.assert_array_equal(again, probs)
    assert usage.cached == len(ITEMS) and usage.extra["requests"] == 0


@pytest.mark.slow
def test_shaped_requests_ask_for_one_top_token_per_label_and_cache_prompt_changes_no_answer(
    pair: tuple[LlamaServer, LlamaServer],
) -> None:
    first, _ = pair
    cache = MemoryResponseCache()
    plain = labeler(first.base_url, cache=cache, top_logprobs=5)
    probs, _ = plain.predict_proba(ITEMS[:2])
    answers = list(cache._data.values())
    assert answers and all(len(top) <= len(LABELS) for a in answers for top in a["positions"])
    # llama.cpp's cache_prompt reuses the shared prefix; the Python server ignores it: the same answers.
    cached_prefix, usage = labeler(first.base_url, cache_prompt=True).predict_proba(ITEMS[:2])
    np.testing.assert_allclose(cached_prefix, probs, atol=1e-6)
    assert usage.extra["requests"] == 2


def test_every_server_down_stops_cleanly_naming_each() -> None:
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]  # nothing listens there
    lab = labeler(urls, max_retries=1, backoff=0.01, cooldown=60.0)
    with pytest.raises(LabelingStopped) as stopped:
        lab.predict_proba(ITEMS[:3])
    text = one_line(stopped.value)
    assert text.startswith("no server of labeler.base_url is answering") and "tried 3 times" in text
    assert all(url in text for url in urls)
    assert stopped.value.partial[0].shape == (0, len(LABELS)) and stopped.value.done == 0


def _legacy_key(url: str | None, prompt: str, top: int) -> str:
    """How a one-server key was made before fleets and shaping (a copy, on purpose)."""
    params = {"max_tokens": 1, "temperature": 0.0, "logprobs": top}
    return cache_key(model=MODEL_ALIAS, base_url=url, endpoint="completions", prompt=prompt, params=params)


def test_a_one_server_key_is_unchanged_and_a_fleet_keys_by_its_first_server() -> None:
    five = ["a", "b", "c", "d", "e"]  # as many labels as top tokens: shaping changes nothing
    url = "http://127.0.0.1:9/v1"
    keys: dict[Any, str] = {}
    for base_url in (url, [url], [url, "http://127.0.0.1:10/v1"]):
        lab = OpenAILabeler(labels=five, model=MODEL_ALIAS, base_url=base_url, answer_tokens=1)
        keys[str(base_url)] = lab._key("P", "logprobs")
    assert set(keys.values()) == {_legacy_key(url, "P", 5)}
    openai_default = OpenAILabeler(labels=five, model=MODEL_ALIAS, answer_tokens=1)
    assert openai_default._key("P", "logprobs") == _legacy_key(None, "P", 5)


def test_an_answer_cached_before_shaping_is_still_used() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # down: only the cache can answer
    cache = MemoryResponseCache()
    lab = labeler(url, cache=cache, top_logprobs=5)  # three labels: now asks for three
    prompt = lab._prompt(ITEMS[0].text, lab.selector_.select([ITEMS[0]])[0])
    positions = [[[" shipping", -0.2], [" billing", -2.0], [" account", -3.0], [" the", -4.0]]]
    answer = {"texts": [" shipping"], "positions": positions, "input_tokens": 9, "output_tokens": 1}
    cache.put(_legacy_key(url, prompt, 5), answer)
    probs, usage = lab.predict_proba(ITEMS[:1])
    assert usage.cached == 1 and usage.extra["requests"] == 0 and np.argmax(probs[0]) == 1
