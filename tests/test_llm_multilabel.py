"""Multi-label LLM labelers: one scored yes/no question per (item, label).

Against the real bundled Gemma 3 270M run in-process by llama.cpp, and the real llama.cpp
OpenAI-compatible server on loopback. Gemma 270M is a weak base model: these tests check the
questions and the scoring (P(yes) read as a fresh evaluation reads it), never accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from duolabel.config import PROJECT_FILE
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers.base import LabelingStopped, TextItem
from duolabel.labelers.llm_multilabel import PerLabelQuestions, question

EMOTIONS = ["joy", "anger", "fear"]
DESCRIPTIONS = ["happiness, delight", "annoyance, rage", "being scared or worried"]
GOLDEN = [
    TextItem("g1", "I am so happy for you, congratulations!", "g1"),
    TextItem("g2", "This makes me furious and a little scared.", "g2"),
    TextItem("g3", "The bus was late again today.", "g3"),
]
GOLD = ['["joy"]', '["anger", "fear"]', "[]"]
ITEMS = [
    TextItem("i1", "What a lovely surprise, thank you so much!", "i1"),
    TextItem("i2", "I am terrified of the exam tomorrow.", "i2"),
]


def test_the_question_names_the_label_its_description_and_the_task():
    asked = question("fear", "being scared  or\nworried", "Emotions.")
    assert (
        asked
        == 'Emotions. Does the label "fear" (being scared or worried) apply to the text? Answer yes or no.'
    )
    assert question("fear") == 'Does the label "fear" apply to the text? Answer yes or no.'


def test_fixed_demonstrations_are_refused_with_the_fix():
    from duolabel.labelers.openai import OpenAILabeler

    with pytest.raises(SetupError, match="remove the labeler's prompt"):
        PerLabelQuestions.build(OpenAILabeler, labels=EMOTIONS, model="m", demos=[("d", "text", "joy")])


@pytest.mark.slow
def test_llama_scores_yes_against_no_per_label_as_a_fresh_evaluation_does():
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel.labelers.llama import LlamaLabeler
    from tests.test_labeler_llama import fresh_log_likelihoods

    asker = PerLabelQuestions.build(
        LlamaLabeler, labels=EMOTIONS, descriptions=DESCRIPTIONS, instructions="Emotions in comments.",
        n_ctx=1024, few_shot=2, n_threads=1,
    )  # fmt: skip
    with pytest.raises(LabelerError, match="not fitted yet"):
        asker.predict_proba(ITEMS)
    with pytest.raises(LabelerError, match=r"training labels \['love'\] are not among"):
        asker.fit(GOLDEN, ['["love"]', "[]", "[]"])
    asker.fit(GOLDEN, GOLD)
    try:
        probs, usage = asker.predict_proba(ITEMS + GOLDEN)
        assert probs.shape == (5, 3) and ((probs > 0) & (probs < 1)).all()
        assert not np.allclose(probs.sum(axis=1), 1.0)  # one probability per label, not a distribution
        assert usage.items == 5 and usage.extra["questions"] == 15 and usage.extra["abstained"] == 0
        llm = asker.inner._load()
        for j, label in enumerate(EMOTIONS):
            prompts = asker.prompts(ITEMS + GOLDEN, label)
            for i, prompt in enumerate(prompts):
                assert prompt is not None and f'Does the label "{label}"' in prompt
                # golden items are never their own example; the examples answer this label
                text = (ITEMS + GOLDEN)[i].text
                assert prompt.count(text) == 1 and prompt.endswith(f"Text: {text}\nLabel:")
                assert "Label: yes" in prompt or "Label: no" in prompt
                yes, no = np.exp(fresh_log_likelihoods(llm, [" yes", " no"], prompt))
                assert probs[i, j] == pytest.approx(yes / (yes + no), abs=1e-4)
        # the questions differ per label: another label set is another version
        other = PerLabelQuestions.build(LlamaLabeler, labels=EMOTIONS[:2], n_ctx=1024, few_shot=2)
        other.inner = asker.inner  # the same loaded model
        assert other.fit(GOLDEN, ['["joy"]', '["anger"]', "[]"]).version_ != asker.version_
    finally:
        asker.close()


def emotion_project(folder: Path, labeler: dict[str, Any], **sections: Any) -> Path:
    folder.mkdir(parents=True)
    (folder / "golden.jsonl").write_text(
        "".join(
            json.dumps({"id": i.id, "text": i.text, "gold": json.loads(g)}) + "\n"
            for i, g in zip(GOLDEN, GOLD, strict=True)
        )
    )
    settings = {
        "task": {"type": "multi_label", "labels": [{"name": n} for n in EMOTIONS]},
        "labeler": [labeler],
        "data": [{"path": "golden.jsonl", "role": "golden", "gold_column": "gold"}],
        **sections,
    }
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings))
    return folder


def test_a_multi_label_project_wraps_its_llm_labelers(tmp_path: Path):
    from duolabel.labelers import build_labeler
    from duolabel.labelers.openai import OpenAILabeler
    from duolabel.project import Project

    folder = emotion_project(
        tmp_path / "p", {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    )
    with Project.open(folder) as project:
        built = build_labeler(project, project.config.labeler[0])
        assert isinstance(built, PerLabelQuestions) and isinstance(built.inner, OpenAILabeler)
        assert built.labels == EMOTIONS and built.inner.labels == ["yes", "no"]


@pytest.mark.slow
def test_the_openai_labeler_asks_each_question_of_a_real_server(llm_server, tmp_path: Path):
    from duolabel.labelers.openai import OpenAILabeler
    from tests.llm_server import MODEL_ALIAS
    from tests.test_labeler_openai import CountingCache

    cache = CountingCache()
    asker = PerLabelQuestions.build(
        OpenAILabeler, labels=EMOTIONS[:2], descriptions=DESCRIPTIONS[:2], model=MODEL_ALIAS,
        base_url=llm_server.base_url, few_shot=1, cache=cache, concurrency=2, timeout=120,
    )  # fmt: skip
    asker.fit(GOLDEN, ['["joy"]', '["anger"]', "[]"])
    probs, usage = asker.predict_proba(ITEMS)
    assert probs.shape == (2, 2) and np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    assert cache.puts == 4 and usage.cached == 0 and usage.input_tokens > 0
    assert usage.extra["sampled"] == 0  # read from the top log-probabilities, not sampled
    again, usage2 = asker.predict_proba(ITEMS)
    np.testing.assert_array_equal(again, probs)
    assert usage2.cached == 4 and cache.puts == 4
    # A budget reached mid-way keeps whole items only (every question of the first chunk or none).
    asker.inner.cache = CountingCache()
    asker.budget = 1e-9
    asker.inner.price_output_per_million = 1e6
    with pytest.raises(LabelingStopped) as stopped:
        asker.predict_proba(ITEMS)
    assert stopped.value.partial[0].shape == (0, 2)


@pytest.mark.slow
def test_a_multi_label_project_labels_with_the_llama_labeler(tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from sqlalchemy import select

    from duolabel.core.tasks import MultiLabel
    from duolabel.project import Project
    from duolabel.store import Prediction

    folder = emotion_project(
        tmp_path / "p",
        {"backend": "llama", "few_shot": 1, "n_ctx": 1024, "n_threads": 1},
        calibration={"min_golden_per_label": 1},  # three golden comments: one per label
    )
    (folder / "items.jsonl").write_text(
        "".join(json.dumps({"id": i.id, "text": i.text}) + "\n" for i in ITEMS)
    )
    with Project.open(folder) as project:
        project.import_data()
        project.import_file(folder / "items.jsonl")
        [result] = project.label()
        assert result.predicted == 5 and result.abstained == 0 and result.usage["questions"] == 15
        with project.store.read() as session:
            predictions = list(session.scalars(select(Prediction)))
    assert len(predictions) == 5
    for pred in predictions:
        assert set(pred.probs) == set(EMOTIONS) and all(0 < p < 1 for p in pred.probs.values())
        assert pred.label == MultiLabel().model_answer([pred.probs[c] for c in EMOTIONS], EMOTIONS)
