"""Agreement and annotator skill (core/quality.py) against published worked examples."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import duolabel.core.quality as quality
from duolabel.core.quality import (
    cohen_kappa,
    confusion_accuracy,
    control_accuracy,
    fleiss_kappa,
    item_disagreement,
    krippendorff_alpha,
)
from duolabel.errors import DuolabelError


def frame_from_counts(counts: list[list[int]], labels: list[str]) -> pd.DataFrame:
    rows = []
    for item, row in enumerate(counts):
        worker = 0
        for label, n in zip(labels, row, strict=True):
            for _ in range(n):
                rows.append((f"i{item}", f"w{worker}", label))
                worker += 1
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def test_doctests_run():
    assert doctest.testmod(quality, raise_on_error=False).failed == 0


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> 0.210
    counts = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    labels = ["a", "b", "c", "d", "e"]
    assert fleiss_kappa(frame_from_counts(counts, labels), labels) == pytest.approx(0.20993, abs=1e-4)


def test_fleiss_kappa_perfect_and_single_answer_items():
    df = pd.DataFrame({"task": list("aabbc"), "worker": [1, 2, 1, 2, 3], "label": list("xxyyx")})
    # item c has one answer and is left out; a and b agree fully
    assert fleiss_kappa(df, ["x", "y"]) == pytest.approx(1.0)
    with pytest.raises(DuolabelError, match="two or more answers"):
        fleiss_kappa(df[df["task"] == "c"], ["x", "y"])


def test_krippendorff_alpha_matches_krippendorffs_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", section C: nominal 0.743
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    rows = [
        (f"u{unit}", f"c{coder}", str(value))
        for coder, values in enumerate(data)
        for unit, value in enumerate(values)
        if value is not None
    ]
    df = pd.DataFrame(rows, columns=["task", "worker", "label"])
    labels = ["1", "2", "3", "4", "5"]
    assert krippendorff_alpha(df, labels) == pytest.approx(0.743, abs=1e-3)
    # the ordinal level weighs near misses less, so it sits above the nominal figure here
    assert krippendorff_alpha(df, labels, level="ordinal") == pytest.approx(0.815, abs=1e-3)
    # the ordinal level follows the order of the labels given
    scrambled = ["3", "1", "5", "2", "4"]
    assert krippendorff_alpha(df, scrambled, level="ordinal") != pytest.approx(0.815, abs=1e-3)
    with pytest.raises(DuolabelError, match="level"):
        krippendorff_alpha(df, labels, level="ratio")


def test_cohen_kappa_two_workers():
    df = pd.DataFrame({"task": list("aabbccdd"), "worker": ["p", "q"] * 4, "label": list("xxyyxyyy")})
    # observed 3/4; chance: p says x,y,x,y (1/2 x), q says x,y,y,y (1/4 x) -> 1/2*1/4+1/2*3/4 = 1/2
    assert cohen_kappa(df, ["x", "y"], "p", "q") == pytest.approx(0.5)
    with pytest.raises(DuolabelError, match="share no item"):
        cohen_kappa(df, ["x", "y"], "p", "nobody")


def test_item_disagreement():
    df = pd.DataFrame({"task": list("aaabbb"), "worker": [1, 2, 3] * 2, "label": list("xxxxyz")})
    table = item_disagreement(df, ["x", "y", "z"])
    assert table.loc["a", "agreement"] == 1.0 and table.loc["a", "entropy"] == 0.0
    assert table.loc["b", "entropy"] == pytest.approx(1.0)
    assert table.loc["b", "agreement"] == pytest.approx(1 / 3)


def test_control_accuracy_intervals():
    df = pd.DataFrame(
        {
            "task": [f"c{i}" for i in range(10)] + ["c0", "r1"],
            "worker": ["p"] * 10 + ["q", "q"],
            "label": ["x"] * 8 + ["y"] * 2 + ["y", "x"],
        }
    )
    known = {f"c{i}": "x" for i in range(10)}
    table = control_accuracy(df, ["x", "y"], known)
    assert table.loc["p", ["controls", "correct"]].tolist() == [10, 8]
    # Wilson interval of 8/10 at 95%: 0.490 to 0.943
    assert table.loc["p", "low"] == pytest.approx(0.4902, abs=1e-3)
    assert table.loc["p", "high"] == pytest.approx(0.9433, abs=1e-3)
    assert table.loc["q", "controls"] == 1  # the unknown item r1 does not count
    exact = control_accuracy(df, ["x", "y"], known, method="exact")
    # Clopper-Pearson is wider than Wilson
    assert exact.loc["p", "low"] < table.loc["p", "low"] and exact.loc["p", "high"] > table.loc["p", "high"]
    with pytest.raises(DuolabelError, match="'maybe' not among"):
        control_accuracy(df, ["x", "y"], {"c0": "maybe"})


def test_confusion_accuracy_from_posteriors():
    df = pd.DataFrame({"task": list("abcd"), "worker": ["p"] * 4, "label": list("xxyy")})
    post = pd.DataFrame({"x": [1.0, 1.0, 1.0, 0.0], "y": [0.0, 0.0, 0.0, 1.0]}, index=list("abcd"))
    table = confusion_accuracy(df, post)
    assert table.loc["p", "accuracy"] == pytest.approx(0.75)
    assert table.loc["p", "low"] < 0.75 < table.loc["p", "high"]


def test_a_label_outside_the_task_is_a_clear_error():
    df = pd.DataFrame({"task": ["a", "a"], "worker": [1, 2], "label": ["x", "postive"]})
    expected = r"row 1, task 'a', column 'label': 'postive' is not one of 'x', 'y'"
    with pytest.raises(DuolabelError, match=expected):
        fleiss_kappa(df, ["x", "y"])
    with pytest.raises(DuolabelError, match="missing column"):
        fleiss_kappa(df.rename(columns={"worker": "who"}), ["x", "y"])
    with pytest.raises(DuolabelError, match="more than once"):
        fleiss_kappa(pd.concat([df.iloc[:1], df.iloc[:1]]), ["x", "y"])


answers = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.integers(0, 7), st.sampled_from(["x", "y", "z"])),
    min_size=4,
    max_size=40,
    unique_by=lambda t: (t[0], t[1]),
)


@settings(max_examples=40, deadline=None)
@given(answers, st.randoms())
def test_agreement_ignores_worker_names_and_row_order(rows, rnd):
    df = pd.DataFrame(rows, columns=["task", "worker", "label"])
    if (df.groupby("task").size() < 2).all():
        return
    other = df.assign(worker=df["worker"].map(lambda w: f"n{(w * 5) % 13}")).sample(
        frac=1.0, random_state=rnd.randint(0, 1000)
    )
    labels = ["x", "y", "z"]
    if df["label"].nunique() > 1:
        a, b = krippendorff_alpha(df, labels), krippendorff_alpha(other, labels)
        assert np.isclose(a, b) or (np.isnan(a) and np.isnan(b))
    assert np.isclose(fleiss_kappa(df, labels), fleiss_kappa(other, labels))
    assert item_disagreement(df, labels).equals(item_disagreement(other, labels))


def test_confusion_accuracy_of_a_dawid_skene_fit_covers_the_true_skills():
    from duolabel.core.aggregation import DawidSkene

    rng = np.random.default_rng(0)
    skills = {"a": 0.9, "b": 0.75, "c": 0.6, "d": 0.5, "e": 0.85}
    truth = rng.integers(0, 3, 400)
    rows = []
    for task in range(400):
        for worker, skill in skills.items():
            label = truth[task] if rng.random() < skill else (truth[task] + rng.integers(1, 3)) % 3
            rows.append((f"t{task}", worker, "xyz"[label]))
    df = pd.DataFrame(rows, columns=["task", "worker", "label"])
    ds = DawidSkene(labels=list("xyz")).fit(df)
    table = confusion_accuracy(df, ds.probas_)
    assert all(table.loc[w, "low"] - 0.03 <= s <= table.loc[w, "high"] + 0.03 for w, s in skills.items())
    assert table["accuracy"].rank().to_dict() == pd.Series(skills).rank().to_dict()
    # the model's own skill estimate from its confusion matrices agrees
    assert np.allclose(ds.skills_.loc[table.index], table["accuracy"], atol=0.03)
