"""The whole-list calibration (core.wholelist) on synthetic data where the truth is known."""

from __future__ import annotations

import numpy as np

from duolabel.core.multilabel import whole_answer_chances
from duolabel.core.tasks import MultiLabel
from duolabel.core.wholelist import WholeListCalibrator, with_list_chance


def _dependent(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two labels, every item carries exactly one (fully dependent); each label's probability is
    calibrated on its own, so the per-label product is wrong for the list as a whole."""
    rng = np.random.default_rng(seed)
    first = rng.random(n) < 0.5
    Y = np.column_stack([first, ~first]).astype(int)
    # A calibrated marginal: P(label 0) = q, and the truth drawn from q.
    q = rng.uniform(0.05, 0.95, n)
    Y[:, 0] = rng.random(n) < q
    Y[:, 1] = 1 - Y[:, 0]
    probs = np.column_stack([q, 1 - q])
    return probs, Y, q


def _lists(probs: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    chosen = probs >= 0.5
    raw = whole_answer_chances(probs, chosen)[:, 0]
    return raw, (chosen == Y.astype(bool)).all(axis=1).astype(int), ~chosen.any(axis=1)


def test_dependent_labels_the_product_is_off_and_the_calibrated_chance_is_not() -> None:
    probs, Y, q = _dependent(4000, 0)
    raw, right, empty = _lists(probs, Y)
    truth = np.maximum(q, 1 - q)  # exactly one label: the list is right with the larger marginal
    honest = WholeListCalibrator().cross_validated(raw, right, empty)
    # The product p * p understates the truth (p); the calibrated chance tracks it.
    assert np.abs(raw - truth).mean() > 0.15
    assert np.abs(honest - truth).mean() < 0.05


def test_an_empty_list_gets_its_measured_rate() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    empty = rng.random(n) < 0.3
    raw = np.where(empty, rng.uniform(0.25, 0.35, n), rng.uniform(0.1, 1.0, n))
    # Every item has a gold label: the empty list is never right; non-empty lists are calibrated.
    right = np.where(empty, 0, rng.random(n) < raw).astype(int)
    cal = WholeListCalibrator().fit(raw, right, empty)
    assert cal.transform(np.array([0.3]), np.array([True]))[0] < 0.02
    # Pooled with the non-empty lists it would be near 0.3 x (share of non-empty) instead.
    non_empty = cal.transform(np.array([0.3, 0.8]), np.array([False, False]))
    assert abs(non_empty[0] - 0.3) < 0.1 and abs(non_empty[1] - 0.8) < 0.1


def test_a_small_group_falls_back_on_all_items() -> None:
    raw = np.linspace(0.1, 0.9, 50)
    right = (raw > 0.5).astype(int)
    empty = np.zeros(50, dtype=bool)
    empty[:3] = True  # three empty lists: too few for a regression of their own
    cal = WholeListCalibrator(min_group=20).fit(raw, right, empty)
    assert set(cal.groups_) == {False}
    assert cal.transform(np.array([0.1]), np.array([True]))[0] == 0.0


def test_cross_validated_is_out_of_fold() -> None:
    # Labels of pure noise: in-sample isotonic fits the noise, out-of-fold stays near the base rate.
    rng = np.random.default_rng(2)
    raw, right = rng.random(500), (rng.random(500) < 0.4).astype(int)
    empty = np.zeros(500, dtype=bool)
    in_sample = WholeListCalibrator().fit(raw, right, empty).transform(raw, empty)
    honest = WholeListCalibrator().cross_validated(raw, right, empty)
    brier = lambda p: float(((p - right) ** 2).mean())  # noqa: E731
    assert brier(honest) > brier(in_sample)
    assert abs(honest.mean() - 0.4) < 0.05


def test_with_list_chance_replaces_the_answer_and_caps_the_runner_up() -> None:
    rows = np.array([[0.3, 0.25], [0.6, 0.2]])
    out = with_list_chance(rows, [0.1, None])
    assert out.tolist() == [[0.1, 0.1], [0.6, 0.2]]
    assert rows.tolist() == [[0.3, 0.25], [0.6, 0.2]]  # the input is left alone


def refit_chances(
    golden: list[tuple[dict, str, str]], others: list[tuple[dict, str]], labels: list[str], kind: MultiLabel
) -> np.ndarray:
    """The whole-list chances the calibrate stage should store for ``others`` ((calibrated
    probabilities, stored list)), refitted from the golden items' (calibrated, stored list, gold)."""
    from duolabel.core.probs import as_matrix

    def product(rows: list) -> tuple[np.ndarray, np.ndarray]:
        probs = as_matrix([r[0] for r in rows], labels)
        answers = [r[1] for r in rows]
        return kind.routing_probs(probs, answers, labels)[:, 0], np.array([a == "[]" for a in answers])

    chances, empty = product(golden)
    right = np.array([r[1] == r[2] for r in golden], dtype=int)
    return WholeListCalibrator().fit(chances, right, empty).transform(*product(others))
