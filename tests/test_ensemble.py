"""Several labelers on one project: per-labeler calibration, the ensemble, abstentions."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

from duolabel import Project
from duolabel.errors import ProjectError
from duolabel.store import Prediction, Route

pytestmark = pytest.mark.slow


def test_two_labelers_make_a_weighted_ensemble_that_routes(example_copy):
    config = yaml.safe_load((example_copy / "duolabel.yaml").read_text())
    config["labeler"] = [{"name": "wide"}, {"name": "tight", "regularization": 0.05, "weight": 2.0}]
    config["calibration"] = {"method": "auto"}
    (example_copy / "duolabel.yaml").write_text(yaml.safe_dump(config))
    with Project.open(example_copy) as project:
        project.import_data()
        with pytest.raises(ProjectError, match="no such labeler"):
            project.label(labeler="nope")
        first = project.label(labeler="wide")
        assert [r.labeler for r in first] == ["wide"]
        with pytest.raises(ProjectError, match="nothing to calibrate yet for tight"):
            project.calibrate()
        summary = project.run()
        assert [r.labeler for r in summary.label] == ["wide", "tight"]
        assert summary.label[0].predicted == 0  # done by the first call, not redone
        assert [r.labeler for r in summary.calibration] == ["wide", "tight", "ensemble"]
        ensemble_version = summary.calibration[-1].model_version
        with project.store.read() as session:
            preds = {
                p.labeler: p for p in session.scalars(select(Prediction).where(Prediction.item_id == "t0001"))
            }
            routed_versions = set(session.scalars(select(Route.policy_version)))
            n_ensemble = session.scalar(
                select(func.count()).select_from(Prediction).where(Prediction.labeler == "ensemble")
            )
        assert n_ensemble == 360 and len(routed_versions) == 1
        wide, tight, ens = preds["wide"], preds["tight"], preds["ensemble"]
        assert ens.model_version == ensemble_version
        labels = project.config.task.label_names
        expected = (
            np.array([wide.calibrated[k] for k in labels])
            + 2 * np.array([tight.calibrated[k] for k in labels])
        ) / 3
        assert np.allclose([ens.calibrated[k] for k in labels], expected)
        assert 0.0 <= ens.features["disagreement"] <= 1.0 and ens.features["members"] == 2
        assert wide.features["max_prob"] == pytest.approx(wide.confidence)
        assert 0.0 <= wide.features["margin"] <= wide.features["max_prob"] and wide.features["entropy"] >= 0
        assert project.status().model_version == ensemble_version


def test_an_abstention_goes_to_people(example_copy):
    with Project.open(example_copy) as project:
        project.run()
        with project.store.write() as session:
            pred = session.scalar(select(Prediction).where(Prediction.item_id == "t0002"))
            pred.abstained, pred.probs, pred.calibrated, pred.confidence, pred.label = (
                True,
                {},
                None,
                None,
                "",
            )
            session.query(Route).filter(Route.item_id == "t0002").delete()
        project.route()
        with project.store.read() as session:
            assert session.get(Route, "t0002").decision == "humans"
