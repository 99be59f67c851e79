"""The batch loop on the real example: a batch that waits for people holds back the next, and
their answers retrain the labeler before the next batch is labelled."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.pipeline import batch_reports, run_project
from duolabel.store import FinalLabel, Item, Prediction, Route, Run
from duolabel.training_data import STOP_SET_SUFFIX
from tests.test_pipeline import answer, cli

pytestmark = pytest.mark.slow


def split_in_two_batches(folder: Path) -> None:
    with (folder / "tickets.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name, part in (("first.csv", rows[:150]), ("second.csv", rows[150:])):
        with (folder / name).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(part)
    config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
    config["data"] = [config["data"][0], {"path": "first.csv"}, {"path": "second.csv"}]
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def test_batches_wait_for_people_and_retrain_the_model(example_copy: Path):
    split_in_two_batches(example_copy)
    with Project.open(example_copy) as project:
        summary = run_project(project)
        assert summary.waiting_batch == "first"
        apart = Prediction.model_version.endswith(STOP_SET_SUFFIX)
        with project.store.read() as session:
            labelled = set(session.scalars(select(Prediction.item_id).where(~apart)))
            second = set(session.scalars(select(Item.id).where(Item.batch == "second")))
            assert not labelled & second  # the second batch waits for the first
            # ... but the model predicted its stop-set items apart (every regular item is in the
            # default stop set of 500), and nothing routed them.
            assert set(session.scalars(select(Prediction.item_id).where(apart))) == second
            assert not set(session.scalars(select(Route.item_id))) & second
            waiting = list(session.scalars(select(Route.item_id).where(Route.decision == "humans")))
            accepted = dict(
                session.execute(
                    select(FinalLabel.item_id, FinalLabel.model_version).where(FinalLabel.source == "model")
                ).all()
            )
            first_version = summary.batches[0].model_version
        assert waiting and accepted
        # People answer the first batch (three each, agreeing with the model).
        with project.store.read() as session:
            model_label = dict(session.execute(select(Prediction.item_id, Prediction.label)).all())
        answer(project, waiting, ["ann", "bob", "cy"], lambda item, _: model_label[item])
        summary = run_project(project)
        reports = batch_reports(project)
        assert [r.batch for r in reports] == ["first", "second"]
        assert reports[0].waiting == 0 and reports[1].items == 150
        assert reports[1].accepted + reports[1].to_people == 150
        # The second batch was labelled by a model retrained on the people's labels.
        assert reports[1].model_version != first_version
        with project.store.read() as session:
            label_runs = session.scalars(select(Run).where(Run.kind == "label", Run.status == "done")).all()
        assert label_runs[-1].config["human_labelled"] == len(waiting)
        # Both versions were compared on the whole stop set; the first batch's accepted labels
        # stayed those of the first model.
        learning = project.learning()
        assert learning.stop_set == 300 and learning.compared == 300 and len(learning.payoff.kappas) == 1
        with project.store.read() as session:
            still = dict(
                session.execute(
                    select(FinalLabel.item_id, FinalLabel.model_version).where(
                        FinalLabel.item_id.in_(list(accepted))
                    )
                ).all()
            )
        assert still == accepted
        # Once people finish the second batch too, a run has nothing left to label.
        with project.store.read() as session:
            model_label = dict(session.execute(select(Prediction.item_id, Prediction.label)).all())
            waiting = list(session.scalars(select(Route.item_id).where(Route.decision == "humans")))
        answer(
            project,
            [i for i in waiting if i in second],
            ["ann", "bob", "cy"],
            lambda item, _: model_label[item],
        )
    result = cli("run", str(example_copy))
    assert result.returncode == 0, result.stderr
    assert "Every batch is finished" in result.stdout
    result = cli("status", str(example_copy))
    assert result.returncode == 0 and "Batches" in result.stdout and "second" in result.stdout
