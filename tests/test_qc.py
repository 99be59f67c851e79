"""Quality-control maths: the Wilson interval, agreement with the consensus, the rules."""

from __future__ import annotations

import doctest

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import duolabel.core.rules
import duolabel.people.accounts
import duolabel.people.experts
import duolabel.people.leases
from duolabel.core.rules import agreement_with_consensus, control_skills, wilson_interval

levels = st.floats(min_value=0.5, max_value=0.999)


@st.composite
def counts(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(min_value=1, max_value=500))
    return draw(st.integers(min_value=0, max_value=n)), n


# No deadline: the first example imports scipy, which can take longer than Hypothesis's
# 200 ms on a loaded machine; the property is about the interval, not the import.
@settings(deadline=None)
@given(counts(), levels)
def test_wilson_interval_holds_the_estimate_inside_zero_one(pair: tuple[int, int], level: float) -> None:
    correct, n = pair
    low, high = wilson_interval(correct, n, confidence=level)
    assert 0.0 <= low <= correct / n + 1e-12 and correct / n - 1e-12 <= high <= 1.0


@given(counts(), levels, levels)
def test_a_higher_level_gives_a_wider_interval(pair: tuple[int, int], a: float, b: float) -> None:
    lo_level, hi_level = sorted((a, b))
    narrow = wilson_interval(*pair, confidence=lo_level)
    wide = wilson_interval(*pair, confidence=hi_level)
    assert wide[0] <= narrow[0] + 1e-12 and wide[1] >= narrow[1] - 1e-12


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=2, max_value=10))
def test_more_answers_at_the_same_rate_narrow_the_interval(n: int, factor: int) -> None:
    correct = n // 2
    small = wilson_interval(correct, n)
    large = wilson_interval(correct * factor, n * factor)
    assert large[1] - large[0] < small[1] - small[0]


def test_wilson_known_values_and_bad_input() -> None:
    # 0 of 1 at 95%: the upper bound is z^2 / (1 + z^2) = 0.7934
    assert wilson_interval(0, 1, confidence=0.95)[1] == pytest.approx(0.7934, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="correct must be between 0 and n=3"):
        wilson_interval(4, 3)
    skills = control_skills(0, 0, confidence=0.9)
    assert skills["accuracy"] is None and (skills["low"], skills["high"]) == (0.0, 1.0)


answers = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from("abcde"), st.sampled_from("xyz")),
    min_size=1,
    max_size=60,
    unique_by=lambda row: (row[0], row[1]),
)


@given(answers, st.permutations("abcde"))
def test_agreement_does_not_change_when_workers_are_renamed(rows: list, names: list[str]) -> None:
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"])
    rename = dict(zip("abcde", names, strict=True))
    renamed = frame.assign(worker=frame["worker"].map(rename))
    before = agreement_with_consensus(frame)
    after = agreement_with_consensus(renamed).rename(index={v: k for k, v in rename.items()})
    pd.testing.assert_series_equal(before.sort_index(), after.sort_index())
    assert ((before.dropna() >= 0) & (before.dropna() <= 1)).all()


@given(answers)
def test_unanimity_is_full_agreement(rows: list) -> None:
    frame = pd.DataFrame(rows, columns=["task", "worker", "label"]).assign(label="x")
    values = agreement_with_consensus(frame).dropna()
    assert (values == 1.0).all()


@pytest.mark.parametrize(
    "module", [duolabel.core.rules, duolabel.people.leases, duolabel.people.experts, duolabel.people.accounts]
)
def test_the_docstring_examples_run(module: object) -> None:
    result = doctest.testmod(module, raise_on_error=False)
    assert result.failed == 0 and result.attempted >= 3
