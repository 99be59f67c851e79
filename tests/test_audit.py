"""Audits and monitoring on the real example: draws into the experts' queue, expert answers
through the real queue functions, estimates, alarms and automatic tightening."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

from duolabel import Project
from duolabel.core.audit import band_of, weighted_estimate
from duolabel.people.accounts import add_annotator
from duolabel.people.experts import expert_queue_counts, next_expert_task, submit_expert_answer
from duolabel.pipeline import plan as plan_routing
from duolabel.stages.audit import (
    alarms,
    apply_expert_answers,
    audit_estimates,
    draw_audit,
    effective_routing,
    tighten,
)
from duolabel.store import Audit, FinalLabel, Run
from tests.test_pipeline import cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def routed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import EXAMPLE

    folder = tmp_path_factory.mktemp("audit") / "support_tickets"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    assert cli("run", str(folder)).returncode == 0
    return folder


@pytest.fixture
def example(routed_example: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "support_tickets"
    shutil.copytree(routed_example, folder)
    return folder


def answer_audits(project: Project, expert: str, decide) -> int:
    """The expert answers every open audit task: ``decide(shipped_label)`` gives the answer."""
    person = add_annotator(project.store, expert, "a long enough password", role="expert")
    labels = project.config.task.label_names
    answered = 0
    while (task := next_expert_task(project.store, person.id, lease_minutes=5, reason="audit")) is not None:
        with project.store.read() as session:
            shipped = session.scalar(select(Audit.label).where(Audit.item_id == task.item.id))
        submit_expert_answer(
            project.store, person.id, task.assignment_id, decide(shipped), labels=labels, seconds=3
        )
        answered += 1
    return answered


def test_draw_is_stratified_and_never_audits_an_item_twice(example: Path):
    with Project.open(example) as project:
        drawn = draw_audit(project, rate=0.1, seed=1)
        assert drawn.drawn > 0
        assert all(name.split()[0] == "model" for name in drawn.strata)  # no people yet: model labels only
        assert all(n >= 1 for n in drawn.strata.values())
        assert expert_queue_counts(project.store)["audit"] == drawn.drawn
        with project.store.read() as session:
            weights = session.scalars(select(Audit.weight)).all()
            shipped = session.scalar(
                select(func.count()).select_from(FinalLabel).where(FinalLabel.source == "model")
            )
        assert sum(weights) == pytest.approx(shipped)  # the sample stands for every shipped label
        again = draw_audit(project, rate=1.0, seed=2)
        with project.store.read() as session:
            items = session.scalars(select(Audit.item_id)).all()
        assert len(items) == len(set(items)) == shipped
        assert again.drawn == shipped - drawn.drawn


def test_expert_answers_give_estimates_correct_labels_and_raise_alarms(example: Path):
    config = yaml.safe_load((example / "duolabel.yaml").read_text(encoding="utf-8"))
    config["audit"] = {"auto_tighten": True, "tighten_step": 0.03}
    (example / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(example) as project:
        labels = project.config.task.label_names
        draw_audit(project, rate=0.5, seed=0)
        # An expert who disagrees with most shipped model labels: the audit must say so.
        flip = iter(range(10_000))

        def mostly_wrong(shipped: str) -> str:
            return shipped if next(flip) % 5 == 0 else next(lab for lab in labels if lab != shipped)

        answered = answer_audits(project, "erin", mostly_wrong)
        assert answered > 10
        estimates = {e.source: e for e in audit_estimates(project)}
        model = estimates["model"]
        assert model.audited == answered and model.agreed == pytest.approx(answered / 5, abs=1)
        assert model.low <= model.accuracy <= model.high < 0.5
        # The experts' answers become the final labels; the audit keeps what was shipped.
        changed = apply_expert_answers(project)
        assert changed == answered
        with project.store.read() as session:
            experts = session.scalar(
                select(func.count()).select_from(FinalLabel).where(FinalLabel.source == "expert")
            )
        assert experts == 60 + answered  # golden items plus the audited ones
        assert audit_estimates(project)[0].accuracy == pytest.approx(model.accuracy)
        # Far below the 0.9 target: an alarm, and the next batch's routing target goes up.
        found = alarms(project)
        assert [a.kind for a in found] == ["model labels"]
        before = plan_routing(project).point
        assert tighten(project, found) is True
        assert tighten(project, found) is False  # one step per alarm
        assert effective_routing(project).target_accuracy == pytest.approx(0.93)
        with project.store.read() as session:
            assert session.scalar(select(func.count()).select_from(Run).where(Run.kind == "tighten")) == 1
        after = plan_routing(project).point
        assert after.certificate.target == pytest.approx(0.93)
        assert after.model_share <= before.model_share
    result = cli("status", str(example))
    assert "alarm:" in result.stdout and "audited model labels" in result.stdout


def test_controls_alarm_when_people_fall_below_the_bar(example: Path):
    from duolabel.store import Annotation, Annotator, Item

    with Project.open(example) as project:
        assert not alarms(project)
        with project.store.write() as session:
            golden = session.execute(select(Item.id, Item.gold_label).where(Item.role == "golden")).all()
            person = Annotator(name="careless", password_hash="-")
            session.add(person)
            session.flush()
            labels = project.config.task.label_names
            for item_id, gold in golden[:40]:
                wrong = next(lab for lab in labels if lab != gold)
                session.add(Annotation(item_id=item_id, annotator_id=person.id, label=wrong, kind="control"))
        assert [a.kind for a in alarms(project)] == ["controls"]


def test_audit_command_draws_and_reports(example: Path):
    result = cli("audit", str(example), "--rate", "0.2", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Drew" in result.stdout and "No audit has been answered yet" in result.stdout
    result = cli("audit", str(example), "--report")
    assert result.returncode == 0 and "Drew" not in result.stdout


def test_weighted_estimate_and_bands():
    est = weighted_estimate("model", np.array([10.0, 10.0, 1.0]), np.array([1.0, 1.0, 0.0]), 0.9)
    assert est.accuracy == pytest.approx(20 / 21)
    assert est.low < est.accuracy < est.high <= 1
    assert band_of(0.8, [0.8, 0.95]) == "0.8-0.95" and band_of(1.0, [0.8, 0.95]) == "0.95-1"
