"""LLM span extraction: entities placed in the text by their words, never by the model's offsets;
what cannot be placed is an abstention. Placement is pure; one test runs the bundled Gemma model."""

from __future__ import annotations

import pytest

from duolabel.core.spans import Spans, spans_json
from duolabel.labelers.llm_spans import extract_spans, extraction_prompt, place_entities
from tests.test_spans import NER, conll

TEXT = "EU rejects German call to boycott British lamb . German officials disagree ."


def test_each_mention_is_placed_at_its_own_occurrence():
    reply = (
        'Sure: [{"text": "German", "label": "MISC"}, {"text": "EU", "label": "ORG"}, '
        '{"text": "German", "label": "MISC"}, {"text": "British", "label": "MISC"}] done'
    )
    found = place_entities(reply, TEXT, NER)
    assert not found.abstained and found.left_out == []
    assert found.spans == [(0, 2, "ORG"), (11, 17, "MISC"), (34, 41, "MISC"), (49, 55, "MISC")]
    assert [TEXT[s:e] for s, e, _ in found.spans] == ["EU", "German", "British", "German"]


@pytest.mark.parametrize(
    ("reply", "left_out"),
    [
        ('[{"text": "France", "label": "LOC"}]', "'France' is not in the text"),
        ('[{"text": "German", "label": "NORP"}]', "label 'NORP' is not one of LOC, MISC, ORG, PER"),
        ('[{"text": "  ", "label": "LOC"}]', "an empty entity text"),
        ('["EU"]', "is not a {text, label} object"),
        ('[{"text": "EU", "label": "ORG"}, {"text": "EU", "label": "ORG"}]', "'EU': no more mentions"),
    ],
)
def test_what_cannot_be_placed_is_left_out_and_said(reply: str, left_out: str):
    found = place_entities(reply, TEXT, NER)
    assert not found.abstained and any(left_out in why for why in found.left_out), found.left_out


def test_a_reply_without_a_json_list_abstains_on_the_item():
    for reply in ("", "no entities here", '{"text": "EU"}', "[unclosed", '[{"text": "E'):
        assert place_entities(reply, TEXT, NER).abstained
    assert place_entities("[]", TEXT, NER).spans == [] and not place_entities("[]", TEXT, NER).abstained


def test_the_prompt_names_the_labels_and_ends_where_the_model_writes():
    prompt = extraction_prompt(TEXT, NER, "Mark named entities.")
    assert prompt.startswith("Mark named entities.\n") and "LOC, MISC, ORG, PER" in prompt
    assert prompt.endswith(f"Text: {TEXT}\nEntities: [")


@pytest.mark.slow
def test_the_bundled_gemma_extracts_valid_spans_or_abstains():
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel.labelers.generation import LlamaGenerator
    from duolabel.labelers.llama import LlamaLabeler

    items, _ = conll(8)
    texts = [i["text"] for i in items]
    generator = LlamaGenerator(LlamaLabeler(labels=NER, n_ctx=1024))
    found = extract_spans(generator, texts, NER, max_tokens=60)
    assert len(found) == len(texts)
    for text, extraction in zip(texts, found, strict=True):
        assert not (extraction.abstained and extraction.spans)
        answer = Spans().check_answer(spans_json(extraction.spans), NER)  # whatever it wrote
        Spans().check_against_text(answer, text)
        for start, end, _ in extraction.spans:  # each span is words the model wrote, found in the text
            assert text[start:end] in extraction.reply
    assert any(len(x.reply) > 1 for x in found)  # the model did write after the opened list


def test_whole_objects_of_a_list_cut_short_are_kept():
    reply = '[{"text": "EU", "label": "ORG"}, {"text": "British", "label": "MISC"}, {"text": "Ger'
    found = place_entities(reply, TEXT, NER)
    assert found.spans == [(0, 2, "ORG"), (34, 41, "MISC")] and not found.abstained
