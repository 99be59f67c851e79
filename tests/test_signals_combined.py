"""Prompt-variant disagreement as an input of the meta-router (issue 13 item 4): a project
without variants routes exactly as before, fit and score agree on the columns, unmeasured
items are filled, and the real bundled Gemma's project scores with the feature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from duolabel.core.policies import FEATURES, MetaRouter, feature_matrix, optional_columns
from duolabel.core.prompt_variants import PROMPT_DISAGREEMENT


def problem(n: int = 120) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(7)
    probs = rng.dirichlet([1, 1, 1], size=n)
    wrong = rng.random(n) > probs.max(axis=1)
    features = {
        "disagreement": rng.random(n),
        "log_length": rng.normal(4, 1, n),
        "neighbourhood_accuracy": rng.random(n),
    }
    return probs, features, wrong


def head(features: dict[str, np.ndarray], stop: int, start: int = 0) -> dict[str, np.ndarray]:
    return {name: values[start:stop] for name, values in features.items()}


def test_without_variants_the_scores_and_decisions_are_those_of_before():
    # Figures from the meta-router before prompt_disagreement became an input (same problem).
    probs, features, wrong = problem()
    for extra in ({}, {PROMPT_DISAGREEMENT: np.full(120, np.nan)}):  # absent, or never measured
        given = {**features, **extra}
        router = MetaRouter(threshold=0.5).fit(probs[:80], head(given, 80), wrong[:80])
        scores = router.score(probs[80:], head(given, 120, 80))
        assert router.columns_ == FEATURES
        np.testing.assert_allclose(
            scores[:5],
            [0.389892362717, 0.636059456347, 0.710067026722, 0.547652468921, 0.730467500949],
            atol=1e-9,
        )
        assert scores.sum() == pytest.approx(25.11143585263231, abs=1e-9)
        kinds = "".join(d.kind[0] for d in router.decide(probs[80:], head(given, 120, 80)))
        assert kinds == "haaaaaaaaaaahhhaahaaahaahaaahaahaaahahaa"
        cross = MetaRouter().cross_fit_scores(probs[:80], head(given, 80), wrong[:80])
        assert cross.sum() == pytest.approx(47.70247774351124, abs=1e-9)


def test_a_router_fitted_with_prompt_disagreement_scores_with_it():
    probs, features, wrong = problem()
    rng = np.random.default_rng(1)
    # A signal that tells errors apart, so the router must lean on it.
    features[PROMPT_DISAGREEMENT] = np.where(wrong, 0.5, 0.1) + rng.normal(0, 0.05, len(wrong))
    router = MetaRouter().fit(probs[:80], head(features, 80), wrong[:80])
    assert router.columns_ == (*FEATURES, PROMPT_DISAGREEMENT)
    weight = router.model_[-1].coef_[0][-1]
    assert weight > 1.0  # high disagreement: more likely wrong
    items = head(features, 120, 80)
    scores = router.score(probs[80:], items)
    moved = router.score(probs[80:], {**items, PROMPT_DISAGREEMENT: items[PROMPT_DISAGREEMENT] + 0.3})
    assert np.all(moved < scores)
    # Items without the feature (absent or NaN) get the golden items' mean, not a column less.
    mean = float(features[PROMPT_DISAGREEMENT][:80].mean())
    absent = {k: v for k, v in items.items() if k != PROMPT_DISAGREEMENT}
    filled = router.score(probs[80:], {**absent, PROMPT_DISAGREEMENT: np.full(40, mean)})
    np.testing.assert_allclose(router.score(probs[80:], absent), filled)
    np.testing.assert_allclose(
        router.score(probs[80:], {**absent, PROMPT_DISAGREEMENT: np.full(40, np.nan)}), filled
    )
    # It ranks the held-out errors better than the router without it.
    golden = {k: v for k, v in head(features, 80).items() if k != PROMPT_DISAGREEMENT}
    plain = MetaRouter().fit(probs[:80], golden, wrong[:80]).score(probs[80:], absent)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(wrong[80:], -scores) > roc_auc_score(wrong[80:], -plain)


def test_a_router_fitted_without_it_ignores_it_at_scoring_time():
    probs, features, wrong = problem()
    router = MetaRouter().fit(probs[:80], head(features, 80), wrong[:80])
    items = head(features, 120, 80)
    with_it = router.score(probs[80:], {**items, PROMPT_DISAGREEMENT: np.linspace(0, 1, 40)})
    np.testing.assert_array_equal(with_it, router.score(probs[80:], items))


def test_partly_measured_golden_items_are_filled_and_cross_fitted():
    probs, features, wrong = problem()
    values = np.where(wrong, 0.6, 0.1)
    values[::3] = np.nan  # a prompt abstained on these items
    features[PROMPT_DISAGREEMENT] = values
    assert optional_columns(features) == (PROMPT_DISAGREEMENT,)
    x = feature_matrix(probs, features, optional_columns(features))
    assert x.shape == (120, len(FEATURES) + 1) and np.isfinite(x).all()
    assert np.allclose(x[::3, -1], np.nanmean(values))
    cross = MetaRouter().cross_fit_scores(probs, features, wrong)
    assert np.isfinite(cross).all()
    router = MetaRouter().fit(probs, features, wrong)
    assert router.fill_[PROMPT_DISAGREEMENT] == pytest.approx(np.nanmean(values))


GEMMA = {"backend": "llama", "few_shot": 0, "n_ctx": 1024, "n_threads": 1}


def gemma_project(tmp_path: Path, labeler: dict | list) -> Path:
    """tests/test_labelers_in_project.py's small project with 20 amazon_isbook golden items
    (zero-shot Gemma errs on some of them) and the meta-router at a fixed threshold."""
    from tests.test_prompt_variants import amazon_golden_project

    folder = amazon_golden_project(tmp_path, labeler)
    text = (folder / "duolabel.yaml").read_text(encoding="utf-8")
    (folder / "duolabel.yaml").write_text(
        text + "\nrouting:\n  policy: meta\n  mode: fixed\n", encoding="utf-8"
    )
    return folder


@pytest.mark.slow
def test_gemma_project_with_prompt_variants_routes_on_the_feature(tmp_path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel import Project
    from duolabel.stages.route import _item_features, plan_routing
    from duolabel.store import Item, Prediction

    # 20 amazon_isbook golden items, zero-shot, so the weak model errs on some of them.
    folder = gemma_project(tmp_path, {**GEMMA, "prompt_variants": 2})
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
        ctx = project
        plan = plan_routing(ctx)
        router = plan.policy
        assert isinstance(router, MetaRouter)
        assert PROMPT_DISAGREEMENT in plan.evidence.features
        assert router.columns_ == (*FEATURES, PROMPT_DISAGREEMENT)
        assert router.model_ is not None and router.model_[-1].coef_[0][-1] != 0.0
        # The items' scores move with their prompt disagreement.
        with project.store.read() as session:
            from sqlalchemy import select

            preds = list(
                session.scalars(
                    select(Prediction).join(Item, Item.id == Prediction.item_id).where(Item.role != "golden")
                )
            )
        assert preds and all(PROMPT_DISAGREEMENT in (p.features or {}) for p in preds)
        features = _item_features(ctx, plan, preds)
        probs = np.array([[p.calibrated[name] for name in ctx.config.task.label_names] for p in preds])
        scores = router.score(probs, features)
        shifted = router.score(probs, {**features, PROMPT_DISAGREEMENT: features[PROMPT_DISAGREEMENT] + 0.5})
        assert not np.allclose(scores, shifted)
        result = project.route()
        assert sum(result.decided.values()) == len(preds) == 6


@pytest.mark.slow
def test_an_ensemble_with_gemma_carries_its_prompt_disagreement_to_routing(tmp_path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from sqlalchemy import select

    from duolabel import Project
    from duolabel.labelers import ENSEMBLE
    from duolabel.stages.route import plan_routing
    from duolabel.store import Prediction

    folder = gemma_project(tmp_path, [{"backend": "embedding"}, {**GEMMA, "prompt_variants": 1}])
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
        with project.store.read() as session:
            preds = session.scalars(select(Prediction)).all()
        member = {p.item_id: p.features[PROMPT_DISAGREEMENT] for p in preds if p.labeler == "llama"}
        fused = {
            p.item_id: (p.features or {}).get(PROMPT_DISAGREEMENT) for p in preds if p.labeler == ENSEMBLE
        }
        assert len(member) == 26 and fused == pytest.approx(member)  # one member measured it
        plan = plan_routing(project)
        assert plan.policy.columns_ == (*FEATURES, PROMPT_DISAGREEMENT)  # type: ignore[attr-defined]
