"""The dataset-level guarantee certified from a sample in a project (issue 13 item 2,
``routing.dataset_source: sample``): a project without golden items routes by it, through the
real store (SQLite and PostgreSQL) with people's answers written as the web app writes them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.stages.route_sample import SAMPLE_RUN, sample_state
from duolabel.store import FinalLabel, Route, Run
from tests.test_pipeline import answer
from tests.test_predictions import cli

LABELS = ["book", "not_book"]
N_ITEMS, SAMPLE = 120, 50


def _truth() -> dict[str, str]:
    rng = np.random.default_rng(3)
    return {f"r{i}": LABELS[int(rng.integers(2))] for i in range(N_ITEMS)}


def _model() -> dict[str, tuple[str, float]]:
    """An outside model: its confident labels are right, its unsure ones often wrong."""
    rng = np.random.default_rng(4)
    answers = {}
    for item, gold in _truth().items():
        confidence = float(rng.choice([0.6, 0.7, 0.97, 0.99]))
        right = confidence > 0.9 or rng.random() < confidence
        answers[item] = (gold if right else LABELS[1 - LABELS.index(gold)], confidence)
    return answers


def _project(folder: Path, database_url: str | None) -> Path:
    """A project with regular items only (no golden or control item) and an outside model."""
    folder.mkdir()
    with (folder / "items.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([i, f"review {i}"] for i in _truth())
    with (folder / "gpt.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "label", "confidence"])
        writer.writerows([i, label, c] for i, (label, c) in _model().items())
    config: dict[str, object] = {
        "task": {"labels": [{"name": n, "description": f"about {n}"} for n in LABELS]},
        "data": [{"path": "items.csv"}],
        "labeler": [{"backend": "external", "name": "gpt"}],
        "routing": {
            "policy": "threshold",  # one answer per sampled item, as given below
            "mode": "target",
            "guarantee": "dataset",
            "dataset_source": "sample",
            "sample_size": SAMPLE,
            "sample_seed": 7,
            "target_accuracy": 0.9,
            "risk": 0.1,
            "overlap": 1,
            "people_exact": True,
        },
    }
    if database_url:
        config["database_url"] = database_url
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _routes(project: Project) -> dict[str, str]:
    with project.store.read() as session:
        return {r.item_id: r.decision for r in session.scalars(select(Route))}


def test_a_project_without_golden_items_routes_by_a_sample_certificate(tmp_path, database_url):
    truth = _truth()
    with Project.open(_project(tmp_path / "p", database_url)) as project:
        project.import_data()
        project.import_predictions(tmp_path / "p" / "gpt.csv", labeler="gpt")

        # First run: the sample goes to people, nothing else is routed or certified.
        first = project.route()
        state = sample_state(project)
        assert state is not None and len(state.items) == SAMPLE == len(set(state.items))
        assert state.missing == SAMPLE and state.population == N_ITEMS
        assert _routes(project) == dict.fromkeys(state.items, "humans")
        assert first.sample_certificate is None and first.decided == {"humans": SAMPLE}
        assert f"waiting for people's labels on {SAMPLE} of the {SAMPLE} sampled items" in first.message
        assert "waiting for people's labels" in project.status().routing

        # A re-run reads the recorded sample back: the same items, no second draw.
        project.route()
        assert sample_state(project).items == state.items
        with project.store.read() as session:
            assert len(session.scalars(select(Run).where(Run.kind == SAMPLE_RUN)).all()) == 1

        # Half of the answers in: still nothing certified, and the message counts what is missing.
        half = state.items[: SAMPLE // 2]
        answer(project, half, ["ann"], lambda item, _: truth[item])
        project.aggregate()
        # status counts the missing labels now, before routing runs again.
        assert f"on {SAMPLE - SAMPLE // 2} of the {SAMPLE} sampled items" in project.status().routing
        waiting = project.route()
        assert waiting.sample_certificate is None
        assert f"on {SAMPLE - SAMPLE // 2} of the {SAMPLE} sampled items" in waiting.message
        assert set(_routes(project).values()) == {"humans"} and len(_routes(project)) == SAMPLE

        # Every answer in: the certificate routes the rest by its threshold.
        answer(project, state.items[SAMPLE // 2 :], ["ann"], lambda item, _: truth[item])
        project.aggregate()
        done = project.route()
        cert = done.sample_certificate
        assert cert is not None and cert.certified and cert.sampled == SAMPLE
        routes = _routes(project)
        assert len(routes) == N_ITEMS and all(routes[i] == "humans" for i in state.items)
        scores = {i: c for i, (_, c) in _model().items()}
        accepted = [i for i, d in routes.items() if d == "accept"]
        assert accepted and all(scores[i] >= cert.threshold for i in accepted)
        assert all(
            scores[i] < cert.threshold for i, d in routes.items() if d == "humans" and i not in state.items
        )
        assert cert.extra == sum(scores[i] >= cert.threshold for i in state.items)
        with project.store.read() as session:
            final = {f.item_id: f for f in session.scalars(select(FinalLabel))}
            run = session.scalars(select(Run).where(Run.kind == "route").order_by(Run.id)).all()[-1]
        # The sampled items are delivered with people's labels.
        assert all(final[i].source == "humans" and final[i].label == truth[i] for i in state.items)
        assert run.config["procedure"] == "sample" and run.config["certificate_cost"] == cert.extra
        assert f"the certificate itself cost {cert.extra} human labels" in project.status().routing
        # The delivered data meets the target (the certificate's promise, here on the truth).
        delivered = [final[i].label == truth[i] for i in accepted + state.items]
        assert np.mean(delivered) >= 0.9


def test_the_sample_belongs_to_its_items_and_its_seed(tmp_path, database_url):
    folder = _project(tmp_path / "p", database_url)
    with Project.open(folder) as project:
        project.import_data()
        project.import_predictions(folder / "gpt.csv", labeler="gpt")
        first = project.route()
        drawn = sample_state(project).items
        assert project.route().policy_version == first.policy_version  # the same sample, read back
    code, output = cli("route", str(folder))
    assert code == 0 and f"waiting for people's labels on {SAMPLE} of the {SAMPLE}" in " ".join(
        output.split()
    )
    # Another seed is another draw, recorded next to the first: the same seed reads it back.
    config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
    config["routing"]["sample_seed"] = 8
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(folder) as project:
        project.route()
        other = sample_state(project).items
        assert len(other) == SAMPLE and other != drawn
        project.route()
        assert sample_state(project).items == other
        with project.store.read() as session:
            assert len(session.scalars(select(Run).where(Run.kind == SAMPLE_RUN)).all()) == 2


@pytest.mark.slow  # the report draws its plots
def test_with_golden_items_the_user_can_ask_for_the_sample_and_the_report_says_so(tmp_path, database_url):
    from duolabel.report import write_report
    from tests.test_predictions import _model as outside_model
    from tests.test_predictions import _truth as outside_truth
    from tests.test_predictions import make_project, predictions_file

    folder = make_project(tmp_path / "p", database_url)
    config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
    config["routing"] = {
        "policy": "threshold",
        "guarantee": "dataset",
        "dataset_source": "sample",
        "sample_share": 0.5,
        "overlap": 1,
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    truth = outside_truth()
    with Project.open(folder) as project:
        project.import_data()
        project.import_predictions(predictions_file(tmp_path / "gpt.csv", outside_model()), labeler="gpt")
        project.label()
        project.calibrate()
        project.route()
        state = sample_state(project)
        assert state is not None and len(state.items) == 20  # half of the 40 regular items
        answer(project, state.items, ["ann"], lambda item, _: truth[item])
        project.aggregate()
        result = project.route()
        assert result.sample_certificate is not None and result.point is None
        report = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
    # The report quotes the sample's certificate, not a golden-item point.
    assert "a random sample of 20 items labelled by people" in report
