"""The ``openai`` backend in a spans project, against the real llama.cpp server on loopback: the
extraction lands on the text's offsets or abstains, replies are cached, the budget stops a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duolabel.core.spans import Spans, parse_spans
from duolabel.labelers import LabelingStopped, TextItem, build_labeler
from duolabel.labelers.span_labeler import LLMSpanLabeler
from duolabel.labelers.span_openai import CachedGenerator
from tests.llm_server import MODEL_ALIAS
from tests.test_spans import NER, conll, spans_project

KIND = Spans()


# Enough for the small model to close a list of one or two entities (it pads each entity with
# fields of its own; with 40 tokens the llama-cpp-python 0.3.36 server closed no list on the 4
# items below), still quick on a shared machine.
ANSWER_TOKENS = 80


def _project(folder: Path, server, **labeler):
    # A long timeout: the test machine's cores are shared, and a slow reply is not what is tested.
    entry = {
        "backend": "openai",
        "model": MODEL_ALIAS,
        "base_url": server.base_url,
        "timeout": 300,
        **labeler,
    }
    return spans_project(folder, labeler=[entry], costs={"llm_input_per_million": 1000.0})


def _items(n: int) -> list[TextItem]:
    items, _ = conll(n)
    return [TextItem(i["id"], i["text"]) for i in items]


@pytest.mark.slow
def test_openai_extraction_lands_on_the_text_or_abstains_and_is_cached(tmp_path: Path, llm_server):
    items = _items(4)
    with _project(tmp_path / "p", llm_server) as project:
        model = build_labeler(project, project.config.labeler[0])
        model.max_tokens = ANSWER_TOKENS
        assert isinstance(model, LLMSpanLabeler) and isinstance(model.generator, CachedGenerator)
        model.fit([], [])
        probs, usage = model.predict_proba(items)
        assert probs.shape == (len(items), len(NER)) and model.generator.requests == len(items)
        assert usage.extra["cost"] > 0  # prompt tokens at the project's price
        for item, row in zip(items, probs, strict=True):
            if np.isnan(row).all():  # no JSON list in the reply: an abstention, no answer kept
                assert item.id not in model.answers_
                continue
            assert 0 < row[0] <= 1 and len(set(row)) == 1
            spans = parse_spans(model.answers_[item.id])
            KIND.check_against_text(KIND.check_answer(model.answers_[item.id], NER), item.text)
            assert all(item.text[s:e].strip() == item.text[s:e] != "" for s, e, _ in spans)
        assert any(not np.isnan(row).all() for row in probs)  # the model did answer some
        # A second call sends nothing: every reply comes from the project's response cache.
        again = build_labeler(project, project.config.labeler[0]).fit([], [])
        again.max_tokens = ANSWER_TOKENS
        probs2, usage2 = again.predict_proba(items)
        assert again.generator.requests == 0 and usage2.extra["cached"] == len(items)
        np.testing.assert_array_equal(probs, probs2)
        assert again.answers_ == model.answers_


@pytest.mark.slow
def test_a_reply_cut_before_its_list_closes_is_an_abstention(tmp_path: Path, llm_server):
    """Two tokens after the opened list cannot hold a whole entity: each item abstains (or, when
    the model closes the list at once, has no span); nothing is guessed."""
    items = _items(4)
    with _project(tmp_path / "p", llm_server) as project:
        model = build_labeler(project, project.config.labeler[0])
        model.max_tokens = 2
        probs, _ = model.fit([], []).predict_proba(items)
        for item, row in zip(items, probs, strict=True):
            assert np.isnan(row).all() or parse_spans(model.answers_[item.id]) == []
        assert np.isnan(probs).all(axis=1).any()


@pytest.mark.slow
def test_the_budget_stops_the_run_and_keeps_what_was_answered(tmp_path: Path, llm_server):
    items = _items(4)
    # At 1000 per million prompt tokens, one prompt (~60 tokens) passes a budget of 0.01.
    with _project(tmp_path / "p", llm_server, budget=0.01) as project:
        model = build_labeler(project, project.config.labeler[0]).fit([], [])
        model.max_tokens = 8
        with pytest.raises(LabelingStopped, match="budget of 0.01 was reached") as stopped:
            model.predict_proba(items)
        probs, usage = stopped.value.partial
        assert len(probs) == 1 and usage.items == 1 and model.generator.requests == 1
        # Run again: the answered item comes from the cache, one more is paid for.
        model2 = build_labeler(project, project.config.labeler[0]).fit([], [])
        model2.max_tokens = 8
        with pytest.raises(LabelingStopped) as stopped2:
            model2.predict_proba(items)
        assert stopped2.value.done == 2 and model2.generator.cached == 1
