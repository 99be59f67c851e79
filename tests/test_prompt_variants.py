"""Prompt-variant disagreement (issue 13 item 4): the pure measure, and the real bundled
Gemma scoring two paraphrases in a project whose calibrate reports the signal's AUROC."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from duolabel.core.evidence import ERROR_SIGNALS, error_ranking
from duolabel.core.prompt_variants import (
    PARAPHRASES,
    PROMPT_DISAGREEMENT,
    variant_disagreement,
    variant_instructions,
)


def amazon_golden_project(tmp_path, labeler):
    """tests/test_labelers_in_project.py's small project with 20 amazon_isbook golden items
    (zero-shot Gemma errs on some of them)."""
    from tests.test_labeler_llama import amazon
    from tests.test_labelers_in_project import small_project

    folder = small_project(tmp_path / "p", labeler)
    shots, answers = amazon(20)
    with (folder / "golden.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows([item.id, item.text, label] for item, label in zip(shots, answers, strict=True))
    return folder


def test_disagreement_is_zero_for_agreeing_prompts_whatever_their_uncertainty():
    flat = np.full((3, 1, 4), 0.25)
    assert variant_disagreement(flat).tolist() == [0.0]


def test_disagreement_grows_as_prompts_move_apart_and_is_bounded_by_log_prompts():
    near = np.array([[[0.6, 0.4]], [[0.5, 0.5]]])
    far = np.array([[[0.9, 0.1]], [[0.1, 0.9]]])
    opposite = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    values = [float(variant_disagreement(d)[0]) for d in (near, far, opposite)]
    assert 0 < values[0] < values[1] < values[2] == pytest.approx(math.log(2))
    three = np.eye(3)[:, None, :]  # three prompts, each sure of a different label
    assert variant_disagreement(three)[0] == pytest.approx(math.log(3))


def test_an_abstaining_prompt_makes_the_item_unmeasured():
    dists = np.array([[[0.5, 0.5], [0.9, 0.1]], [[np.nan, np.nan], [0.8, 0.2]]])
    out = variant_disagreement(dists)
    assert np.isnan(out[0]) and out[1] > 0


def test_variants_are_fixed_distinct_and_never_the_main_instruction():
    main = "Decide whether the product reviewed is a book."
    two = variant_instructions(main, 2)
    assert two == variant_instructions(main, 2) and len(set(two)) == 2
    assert main not in variant_instructions(main, 10)
    assert all(main in v for v in two)
    assert len(variant_instructions(main, 10)) == len(PARAPHRASES) - 1
    assert variant_instructions(main, 0) == []
    assert all(variant_instructions("", 1))  # no instruction: a generic one is paraphrased


def test_error_ranking_reports_the_signal_high_means_wrong_and_skips_unmeasured_items():
    assert ERROR_SIGNALS[PROMPT_DISAGREEMENT][1] == +1
    wrong = np.array([True, False, False, True, False])
    spread = np.array([0.5, 0.1, 0.0, np.nan, 0.2])
    ranking = error_ranking({PROMPT_DISAGREEMENT: spread}, wrong)
    assert ranking == {PROMPT_DISAGREEMENT: 1.0}  # the NaN item is left out, not ranked
    assert math.isnan(error_ranking({PROMPT_DISAGREEMENT: np.full(5, np.nan)}, wrong)[PROMPT_DISAGREEMENT])


@pytest.mark.slow
def test_gemma_scores_two_paraphrases_stores_the_feature_and_calibrate_reports_it(tmp_path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from sqlalchemy import select

    from duolabel import Project
    from duolabel.labelers import TextItem
    from duolabel.labelers.llama import LlamaLabeler
    from duolabel.store import Prediction, Run
    from tests.test_labelers_in_project import REVIEWS

    # The labeler alone: the main distribution is unchanged by the variants, which cost prompts.
    golden = [TextItem(f"g{i}", t) for i, t in enumerate(REVIEWS["book"] + REVIEWS["not_book"])]
    gold = ["book"] * 3 + ["not_book"] * 3
    items = [TextItem("a", "The plot twists kept me reading."), TextItem("b", "The kettle leaks.")]
    common = dict(
        labels=["book", "not_book"], instructions="Is the review about a book?", few_shot=2, n_ctx=1024
    )
    plain = LlamaLabeler(**common).fit(golden, gold)
    varied = LlamaLabeler(**common, prompt_variants=2).fit(golden, gold)
    p0, u0 = plain.predict_proba(items)
    p2, u2 = varied.predict_proba(items)
    plain.close()
    varied.close()
    np.testing.assert_allclose(p2, p0, atol=1e-9)
    assert plain.item_features_ == {} and "variant_prompts" not in u0.extra
    assert u2.extra["variant_prompts"] == 2 * len(items) and u2.input_tokens > u0.input_tokens
    assert set(varied.item_features_) == {"a", "b"}
    assert all(f[PROMPT_DISAGREEMENT] >= 0 for f in varied.item_features_.values())
    assert varied.version_ != plain.version_  # turning variants on relabels

    # In a project (20 amazon_isbook golden items, zero-shot, so the weak model errs on some):
    # stored per prediction, counted in the ledger, reported by calibrate.
    folder = amazon_golden_project(
        tmp_path, {"backend": "llama", "few_shot": 0, "n_ctx": 1024, "prompt_variants": 2}
    )
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
        with project.store.read() as session:
            preds = session.scalars(select(Prediction)).all()
            [run] = session.scalars(select(Run).where(Run.kind == "label")).all()
        ranking = project.error_ranking()
    assert len(preds) == 26
    values = [p.features[PROMPT_DISAGREEMENT] for p in preds]
    assert all(v >= 0 for v in values) and len(set(values)) > 1
    assert run.usage["variant_prompts"] == 2 * 26
    # The golden items hold both right and wrong answers: a real AUROC, not NaN.
    assert 0.0 <= ranking[PROMPT_DISAGREEMENT] <= 1.0 and 0.0 <= ranking["confidence"] <= 1.0
    print(
        "gemma AUROC prompt_disagreement:", ranking[PROMPT_DISAGREEMENT], "confidence:", ranking["confidence"]
    )


@pytest.mark.slow
def test_openai_labeler_asks_the_variants_of_the_real_server_and_keeps_the_main_answer(llm_server):
    from duolabel.labelers import TextItem
    from duolabel.labelers.openai import OpenAILabeler
    from tests.llm_server import MODEL_ALIAS
    from tests.test_labelers_in_project import REVIEWS

    # Two examples in each prompt: zero-shot, the weak base model often answers no label at all.
    golden = [TextItem(f"g{i}", t) for i, t in enumerate(REVIEWS["book"] + REVIEWS["not_book"])]
    gold = ["book"] * 3 + ["not_book"] * 3
    items = [TextItem("a", "A gripping novel, I read it in one night."), TextItem("b", "The kettle leaks.")]
    common = dict(
        labels=["book", "not_book"],
        instructions="Is the review about a book?",
        model=MODEL_ALIAS,
        base_url=llm_server.base_url,
        few_shot=2,
        answer_tokens=2,
    )
    p0, u0 = OpenAILabeler(**common).fit(golden, gold).predict_proba(items)
    varied = OpenAILabeler(**common, prompt_variants=2).fit(golden, gold)
    p2, u2 = varied.predict_proba(items)
    assert not np.isnan(p0).any()
    # The same main prompts: the same answers. Not the same digits: the server's logits shift with
    # how requests are batched and what its prompt cache holds (up to ~0.2 nats, ENVIRONMENT.md).
    assert (p2.argmax(axis=1) == p0.argmax(axis=1)).all()
    np.testing.assert_allclose(p2, p0, atol=0.1)
    assert u2.extra["variant_prompts"] == 4 and "variant_prompts" not in u0.extra
    assert u2.input_tokens > u0.input_tokens  # the ledger pays for the paraphrases
    assert set(varied.item_features_) == {"a", "b"}
    assert all(f[PROMPT_DISAGREEMENT] >= 0 for f in varied.item_features_.values())
