"""Pairwise labelers: the embedding head on the real MiniLM, the LLM judge on the real Gemma
(in-process llama.cpp and the real llama_cpp.server on loopback), and in a project: labeled,
calibrated and routed, swap-inconsistent pairs going to people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from duolabel.core.pairwise import swapped_columns
from duolabel.errors import LabelerError
from duolabel.labelers.base import TextItem, Usage
from duolabel.labelers.embedding import EmbeddingLabeler
from duolabel.labelers.llm_pairwise import PairwiseLLMLabeler
from duolabel.labelers.pairwise import PairwiseEmbeddingLabeler, pair_of
from tests.conftest import shared_data

PAIR_LABELS = ["A", "B"]
INSTRUCTIONS = "Decide which response better does what the instruction asks."
DESCRIPTIONS = ["Response A is better", "Response B is better"]


def llmbar(n: int, *, max_chars: int | None = None, seed: int = 0) -> tuple[list[TextItem], list[str], dict]:
    """``n`` llmbar pairs (the shortest ones when ``max_chars`` is given), their gold and fields."""
    with (shared_data("llmbar") / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    if max_chars is not None:
        rows = [r for r in rows if len(r["text"]) + len(r["response_a"]) + len(r["response_b"]) <= max_chars]
    picked = np.random.default_rng(seed).choice(len(rows), size=n, replace=False)
    chosen = [rows[i] for i in picked]
    items = [TextItem(r["id"], r["text"], r["id"]) for r in chosen]
    fields = {r["id"]: {"response_a": r["response_a"], "response_b": r["response_b"]} for r in chosen}
    return items, [r["gold"] for r in chosen], fields


def lookup_from(fields: dict[str, dict[str, str]]):
    def lookup(items):
        return [pair_of(item, fields.get(item.id)) for item in items]

    return lookup


def swapped_lookup(fields: dict[str, dict[str, str]]):
    flipped = {k: {"response_a": v["response_b"], "response_b": v["response_a"]} for k, v in fields.items()}
    return lookup_from(flipped)


# -- the embedding head (real MiniLM) ------------------------------------------------------


@pytest.fixture(scope="module")
def encoder() -> EmbeddingLabeler:
    return EmbeddingLabeler(labels=PAIR_LABELS)


def test_embedding_head_is_swap_symmetric_with_honest_oof(encoder):
    items, gold, fields = llmbar(24, max_chars=1200, seed=1)
    head = PairwiseEmbeddingLabeler(encoder, lookup_from(fields), labels=PAIR_LABELS, cv_folds=3)
    head.fit(items[:18], gold[:18])
    assert head.oof_proba_.shape == (18, 2) and np.allclose(head.oof_proba_.sum(axis=1), 1)
    assert head.fit_info_["C"] in (0.1, 1.0, 10.0) and head.fit_info_["folds"] == 3
    probs, usage = head.predict_proba(items[18:])
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1) and usage.items == 6
    # The same pairs with A and B swapped: exactly the swapped probabilities.
    head.pairs = swapped_lookup(fields)
    flipped, _ = head.predict_proba(items[18:])
    np.testing.assert_allclose(flipped, swapped_columns(probs), atol=1e-12)
    version = head.version_
    head.fit(items[:18], ["A" if g == "B" else "B" for g in gold[:18]])
    assert head.version_ != version  # the answers are part of the version


def test_embedding_head_learns_which_response_answers(encoder):
    # A response that answers the prompt against an unrelated remark, in either position.
    topics = [
        "the capital of France",
        "how to boil an egg",
        "the speed of light",
        "why the sky is blue",
        "how to plant tomatoes",
        "the rules of chess",
        "how bees make honey",
        "the boiling point of water",
        "how to tie a tie",
        "the history of Rome",
        "how rainbows form",
        "how to bake bread",
    ]
    answers = [
        "Paris is the capital of France.",
        "Boil the egg for eight minutes in water.",
        "Light travels at about 300,000 km per second.",
        "Blue light scatters more in the air.",
        "Plant tomatoes in sun, water them often.",
        "Chess pieces move by fixed rules; checkmate wins.",
        "Bees turn nectar into honey by evaporating it.",
        "Water boils at 100 C at sea level.",
        "Cross the wide end over, loop it and pull it through.",
        "Rome grew from a city to an empire.",
        "Sunlight refracts in raindrops into colours.",
        "Mix flour, water, yeast; knead and bake.",
    ]
    remarks = [
        "My cat sleeps all day.",
        "I bought new shoes.",
        "The bus was late again.",
        "I prefer tea.",
        "Our team lost on Sunday.",
        "My phone is broken.",
        "The meeting moved to Monday.",
        "I painted the fence green.",
        "She sings in a choir.",
        "He collects old stamps.",
        "We went hiking last week.",
        "The printer jammed.",
    ]
    fields, items, gold = {}, [], []
    for i, (topic, answer, remark) in enumerate(zip(topics, answers, remarks, strict=True)):
        first = i % 2 == 0
        fields[f"q{i}"] = {
            "response_a": answer if first else remark,
            "response_b": remark if first else answer,
        }
        items.append(TextItem(f"q{i}", f"Tell me about {topic}.", f"q{i}"))
        gold.append("A" if first else "B")
    head = PairwiseEmbeddingLabeler(encoder, lookup_from(fields), labels=PAIR_LABELS, cv_folds=3)
    head.fit(items[:8], gold[:8])
    probs, _ = head.predict_proba(items[8:])
    assert [PAIR_LABELS[i] for i in probs.argmax(axis=1)] == gold[8:]


def test_a_pair_without_its_responses_is_named():
    with pytest.raises(LabelerError, match="item 'x' has no response_b"):
        pair_of(TextItem("x", "prompt"), {"response_a": "a"})


# -- the order logic (a fake backend: pure logic) ------------------------------------------


class PositionBiased:
    """A backend that reads the rendered pair: it prefers the response containing 'good',
    unless the pair's prompt says 'biased', then it always answers A (a position bias)."""

    labels = PAIR_LABELS
    version_ = "fake"

    def fit(self, items, labels, *, progress=None):
        self.fitted = [i.text for i in items]
        return self

    def predict_proba(self, items, *, progress=None):
        rows = []
        for item in items:
            a_part = item.text.split("# Output (a):\n")[1].split("\n\n# Output (b):")[0]
            if "biased" in item.text:
                rows.append([0.8, 0.2])
            else:
                rows.append([0.9, 0.1] if "good" in a_part else [0.3, 0.7])
        return np.array(rows), Usage(items=len(items))


def test_both_orders_are_averaged_and_inconsistent_pairs_abstain():
    fields = {
        "x": {"response_a": "good", "response_b": "bad"},
        "y": {"response_a": "bad", "response_b": "good"},
        "z": {"response_a": "one", "response_b": "two"},
    }
    items = [TextItem("x", "fair"), TextItem("y", "fair"), TextItem("z", "biased")]
    judge = PairwiseLLMLabeler(PositionBiased(), lookup_from(fields))
    judge.fit(items[:1], ["A"])
    # the backend's few-shot examples: the pairs as shown
    assert judge.fitted == ["# Instruction:\nfair\n\n# Output (a):\ngood\n\n# Output (b):\nbad"]
    probs, usage = judge.predict_proba(items)
    # x as shown: [.9 .1]; swapped, A is "bad": [.3 .7], mapped back [.7 .3]; the mean [.8 .2].
    np.testing.assert_allclose(probs[:2], [[0.8, 0.2], [0.2, 0.8]])
    assert judge.swap_consistent_.tolist() == [True, True, False]
    assert np.isnan(probs[2]).all() and usage.extra["swap_inconsistent"] == 1
    shown, back = judge.orders_
    np.testing.assert_allclose(back[2], [0.2, 0.8])  # the bias, mapped back, points the other way
    keep = PairwiseLLMLabeler(PositionBiased(), lookup_from(fields), inconsistent="keep")
    np.testing.assert_allclose(keep.predict_proba(items)[0][2], [0.5, 0.5])
    judge.budget = 3.0  # set on the backend (the label stage's per-run budget)
    assert judge._model.budget == 3.0 and judge.version_ == "fake-pairjudge"


class Shifted:
    """A backend that knows which response is better but always leans to the first position:
    P(A) = sigmoid(quality(A) - quality(B) + 2), quality being the response's number."""

    labels = PAIR_LABELS
    version_ = "shifted"

    def fit(self, items, labels, *, progress=None):
        return self

    def predict_proba(self, items, *, progress=None):
        rows = []
        for item in items:
            a = float(item.text.split("# Output (a):\n")[1].split("\n")[0])
            b = float(item.text.split("# Output (b):\n")[1])
            p = 1 / (1 + np.exp(-(a - b + 2)))
            rows.append([p, 1 - p])
        return np.array(rows), Usage(items=len(items))


def test_per_order_calibration_takes_out_a_position_bias():
    rng = np.random.default_rng(0)
    values = rng.uniform(-2, 2, size=(40, 2))
    fields = {
        f"p{i}": {"response_a": f"{a:.2f}", "response_b": f"{b:.2f}"} for i, (a, b) in enumerate(values)
    }
    items = [TextItem(f"p{i}", "which number is larger?", f"h{i}") for i in range(40)]
    gold = ["A" if a > b else "B" for a, b in values]
    raw = PairwiseLLMLabeler(Shifted(), lookup_from(fields), per_order=False).fit(items[:30], gold[:30])
    raw.predict_proba(items[30:])
    assert raw.swap_consistent_.mean() < 0.9 and raw.version_ == "shifted-pairjudge"
    judge = PairwiseLLMLabeler(Shifted(), lookup_from(fields)).fit(items[:30], gold[:30])
    assert judge.calibrators_ is not None and judge.version_ == "shifted-pairjudgec"
    probs, usage = judge.predict_proba(items[30:])
    assert judge.swap_consistent_.all() and usage.extra["swap_inconsistent"] == 0
    assert [PAIR_LABELS[i] for i in probs.argmax(axis=1)] == gold[30:]
    # The golden pairs: out of fold, and not scored again when predicted.
    assert judge.oof_proba_.shape == (30, 2)
    golden, _ = judge.predict_proba(items[:30])
    np.testing.assert_allclose(
        judge.raw_orders_[0], Shifted().predict_proba(_rendered(fields, items[:30]))[0]
    )
    assert not np.isnan(golden).all()


def _rendered(fields, items):
    from duolabel.labelers.llm_pairwise import _as_items

    return _as_items(lookup_from(fields)(items))


def test_pair_prompt_lays_out_rules_blocks_and_question():
    from duolabel.labelers.llama import LlamaLabeler
    from duolabel.labelers.llm_pairwise import pair_prompt

    fields = {
        "x": {"response_a": "hi\nthere", "response_b": "bye"},
        "y": {"response_a": "1", "response_b": "2"},
    }
    items = [TextItem("x", "Say hi"), TextItem("y", "Count")]
    backend = LlamaLabeler(labels=["A", "B", "tie"], instructions=INSTRUCTIONS, few_shot=1)
    PairwiseLLMLabeler(backend, lookup_from(fields))
    assert backend.layout is pair_prompt  # the wrapped backend lays out pair prompts
    shown = _rendered(fields, items)
    text = backend.prompt(shown[0].text, [(shown[1].text, "B")], order=[2, 0, 1]).text
    _check_pair_prompt(text, items[0], fields, shots=1)
    assert "hi\nthere" in text  # line breaks of a response kept
    question = "# Which is better, Output (a) or Output (b)? Answer tie if they are equally good, A if"
    assert text.count(question) == 2 and "\nLabel: B\n\n# Instruction:\nSay hi" in text


# -- the real Gemma ----------------------------------------------------------------------


def _check_pair_prompt(prompt: str | None, item: TextItem, fields, *, shots: int) -> None:
    """The judge's own prompt: rules and instructions, the pair's blocks, the question."""
    assert prompt is not None
    from duolabel.labelers.llm_pairwise import JUDGE_RULES

    pair = fields[item.id]
    assert prompt.startswith(JUDGE_RULES) and INSTRUCTIONS in prompt.split("\n\n")[0]
    block = (
        f"# Instruction:\n{item.text.strip()}\n\n# Output (a):\n{pair['response_a'].strip()}"
        f"\n\n# Output (b):\n{pair['response_b'].strip()}\n\n# Which is better"
    )
    assert block in prompt and prompt.endswith("Label:")
    assert prompt.count("# Output (a):") == shots + 1 and "Text:" not in prompt


def _check_judge(judge: PairwiseLLMLabeler, items, fields, *, all_answered: bool = True) -> None:
    probs, usage = judge.predict_proba(items)
    shown, back = judge.orders_
    assert shown.shape == back.shape == (len(items), 2)
    answered = ~(np.isnan(shown).any(axis=1) | np.isnan(back).any(axis=1))
    # llama scores every label; a server's top tokens may hold none of them (an abstention).
    assert answered.all() if all_answered else answered.any()
    np.testing.assert_allclose(shown[answered].sum(axis=1), 1)
    consistent = judge.swap_consistent_
    assert (answered & (shown.argmax(axis=1) == back.argmax(axis=1))).tolist() == consistent.tolist()
    np.testing.assert_allclose(probs[consistent], ((shown + back) / 2)[consistent])
    assert np.isnan(probs[~consistent]).all()
    assert usage.extra["swap_inconsistent"] == int((answered & ~consistent).sum())
    # The swapped pairs: the two orders trade places (the same prompts, scored the same).
    judge.pairs = swapped_lookup(fields)
    judge.predict_proba(items)
    shown2, back2 = judge.orders_
    np.testing.assert_allclose(shown2, swapped_columns(back), atol=1e-6)
    np.testing.assert_allclose(back2, swapped_columns(shown), atol=1e-6)


def test_llama_judge_scores_both_orders_with_the_real_gemma():
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel.labelers.llama import LlamaLabeler

    items, gold, fields = llmbar(5, max_chars=700, seed=2)
    backend = LlamaLabeler(
        labels=PAIR_LABELS,
        descriptions=DESCRIPTIONS,
        instructions=INSTRUCTIONS,
        n_ctx=1024,
        few_shot=1,
        n_threads=1,
    )
    judge = PairwiseLLMLabeler(backend, lookup_from(fields)).fit(items[:2], gold[:2])
    try:
        _check_pair_prompt(backend.prompts(_rendered(fields, items[2:3]))[0], items[2], fields, shots=1)
        _check_judge(judge, items[2:], fields)
    finally:
        backend.close()


@pytest.mark.slow
def test_openai_judge_against_the_real_llama_cpp_server(llm_server):
    from duolabel.labelers.cache import MemoryResponseCache
    from duolabel.labelers.openai import OpenAILabeler
    from tests.llm_server import MODEL_ALIAS

    items, gold, fields = llmbar(3, max_chars=500, seed=3)
    backend = OpenAILabeler(
        labels=PAIR_LABELS, descriptions=DESCRIPTIONS, instructions=INSTRUCTIONS, model=MODEL_ALIAS,
        base_url=llm_server.base_url, answer_tokens=1, samples=2, top_logprobs=20, timeout=60.0,
        max_retries=1, cache=MemoryResponseCache(),
    )  # fmt: skip
    # One golden pair shown: zero-shot, this Gemma continues the pair prompt's "Label:" with a
    # line break (A and B only third and later among its top tokens, and just two are read).
    judge = PairwiseLLMLabeler(backend, lookup_from(fields)).fit(items[:1], gold[:1])
    shot = [(_rendered(fields, items[:1])[0].text, gold[0])]
    prompt = backend._prompt(_rendered(fields, items[1:2])[0].text, shot)
    _check_pair_prompt(prompt, items[1], fields, shots=1)
    _check_judge(judge, items[1:], fields, all_answered=False)


# -- in a project: labeled, calibrated, routed -------------------------------------------


def _pair_project(
    tmp_path: Path, labeler: dict[str, Any], n_golden: int, n_regular: int, max_chars: int, **sections: Any
):
    import yaml

    from duolabel.config import PROJECT_FILE
    from duolabel.project import Project

    items, gold, fields = llmbar(n_golden + n_regular, max_chars=max_chars, seed=5)
    rows = [{"id": i.id, "text": i.text, **fields[i.id], "gold": g} for i, g in zip(items, gold, strict=True)]
    folder = tmp_path / "pairs"
    folder.mkdir()
    settings = {
        "task": {
            "type": "pairwise",
            "instructions": INSTRUCTIONS,
            "labels": [{"name": n, "description": d} for n, d in zip(PAIR_LABELS, DESCRIPTIONS, strict=True)],
        },
        "labeler": [labeler],
        **sections,
    }
    (folder / PROJECT_FILE).write_text(yaml.safe_dump(settings), encoding="utf-8")
    golden, regular = folder / "golden.jsonl", folder / "regular.jsonl"
    golden.write_text("".join(json.dumps(r) + "\n" for r in rows[:n_golden]), encoding="utf-8")
    regular.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "gold"}) + "\n" for r in rows[n_golden:]),
        encoding="utf-8",
    )
    project = Project.open(folder)
    project.import_file(golden, role="golden", gold_column="gold")
    project.import_file(regular)
    return project


def _routes(project) -> dict[str, tuple[str, bool]]:
    from sqlalchemy import select

    from duolabel.store import Prediction, Route

    with project.store.read() as session:
        decisions = dict(session.execute(select(Route.item_id, Route.decision)).all())
        abstained = dict(session.execute(select(Prediction.item_id, Prediction.abstained)).all())
    return {item: (decision, abstained[item]) for item, decision in decisions.items()}


@pytest.mark.slow
def test_embedding_pairs_are_labeled_calibrated_and_routed(tmp_path: Path):
    with _pair_project(tmp_path, {"backend": "embedding"}, 30, 10, max_chars=1500) as project:
        project.label()
        project.calibrate()
        project.route()
        routes = _routes(project)
        assert len(routes) == 10 and not any(abstained for _, abstained in routes.values())


@pytest.mark.slow
def test_swap_inconsistent_pairs_go_to_people_whatever_the_threshold(tmp_path: Path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    llama = {"backend": "llama", "n_ctx": 1024, "few_shot": 0, "n_threads": 1}
    # The threshold routing at its most accepting: only an abstention still goes to people.
    routing = {"policy": "threshold", "mode": "fixed", "threshold": 0.0}
    with _pair_project(tmp_path, llama, 24, 8, max_chars=600, routing=routing) as project:
        project.label()
        project.calibrate()
        project.route()
        routes = _routes(project)
    assert len(routes) == 8
    inconsistent = [item for item, (_, abstained) in routes.items() if abstained]
    assert inconsistent, "the base Gemma is swap-inconsistent on some llmbar pairs"
    assert all(routes[item][0] == "humans" for item in inconsistent)
    assert any(decision == "accept" for decision, abstained in routes.values() if not abstained)
