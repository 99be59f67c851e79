"""The LLM judge of synthetic items and the log-probability filter (issue 16 item 2), against
the real bundled Gemma 3 270M run by llama.cpp (weak: these check the mechanism: what is
stored, flagged, dropped and counted, never whether the judge is right)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from duolabel.store import Run, SyntheticItem
from duolabel.synthetic import synthetic_status, synthetic_summary
from tests.test_synthetic import LABELS, _project

pytestmark = pytest.mark.slow


def _stored(project) -> list[tuple[str, str | None]]:
    with project.store.read() as session:
        return [tuple(r) for r in session.execute(select(SyntheticItem.label, SyntheticItem.judged_label))]


def _run(project) -> Run:
    with project.store.read() as session:
        return session.scalars(select(Run).where(Run.kind == "generate").order_by(Run.id.desc())).first()


def test_the_judge_labels_every_kept_item_flags_disagreements_and_costs_its_calls(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path, judge=True) as project:
        result = project.generate(per_label=2, mode="zero-shot")
        stored = _stored(project)
        assert len(stored) == 4 and sorted({label for label, _ in stored}) == LABELS
        assert all(judged in LABELS for _, judged in stored)  # none of these short items abstains
        flagged = sum(1 for label, judged in stored if judged != label)
        assert result.figures["judged"] == 4 and result.figures["judge_inconsistent"] == flagged
        assert result.figures["judge_rejection_rate"] == round(flagged / 4, 4)
        run = _run(project)
        assert run.usage["judged"] == 4 and run.config["figures"]["judged"] == 4
        assert synthetic_summary(project)["judge_flagged"] == flagged
        assert ("labelled otherwise by the LLM judge" in synthetic_status(project)) is (flagged > 0)


def test_drop_inconsistent_keeps_only_items_the_judge_agrees_with(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path, drop_inconsistent=True) as project:
        result = project.generate(per_label=2, mode="zero-shot")
        stored = _stored(project)
        assert all(judged == label for label, judged in stored)
        assert result.rejected.get("inconsistent", 0) == result.figures["judge_inconsistent"]
        assert result.figures["judged"] == len(stored) + result.figures["judge_inconsistent"]


def test_min_logprob_drops_items_generated_with_a_lower_log_probability(tmp_path):
    pytest.importorskip("llama_cpp")
    with _project(tmp_path, min_logprob=-1e-6) as project:  # no sampled text is that certain
        result = project.generate(per_label=1, mode="zero-shot")
        assert result.kept == {} and result.rejected["low_logprob"] > 0
    (tmp_path / "lenient").mkdir()
    with _project(tmp_path / "lenient", min_logprob=-50.0) as project:
        result = project.generate(per_label=1, mode="zero-shot")
        assert result.kept == {"book": 1, "not_book": 1} and "low_logprob" not in result.rejected
