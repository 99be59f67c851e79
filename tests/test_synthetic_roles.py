"""Synthetic items are training data only (issue 16 item 2): they are never golden, control,
exam or audit items, never predicted, routed or calibrated, exported only when asked and
flagged; and they let a trainable labeler start with few golden items (item 3).

The items are written straight into the store (what ``duolabel generate`` keeps), so no LLM
runs here; the labeler is the real bundled MiniLM encoder with its logistic head.
"""

from __future__ import annotations

import csv
from datetime import datetime
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.errors import LabelerError
from duolabel.labelers.generation import Generated
from duolabel.ledger import ledger_run
from duolabel.people.assignments import gold_items
from duolabel.store import Audit, ExpertTask, FinalLabel, Item, Prediction, Route, Run
from duolabel.synthetic import _store_item
from duolabel.training_data import (
    fit_options,
    golden_items,
    human_labelled_items,
    synthetic_training_items,
)

pytestmark = pytest.mark.slow

BOOK = [
    "A moving novel about two sisters in wartime Paris.",
    "The poems in this collection are short and sharp.",
    "This cookbook has clear recipes for weeknight dinners.",
    "A thorough biography of a forgotten inventor.",
    "The sequel keeps the mystery going until the last chapter.",
    "An atlas with beautiful maps of the old world.",
    "The children's picture book rhymes well and reads aloud nicely.",
    "A history of the printing press told through letters.",
]
OTHER = [
    "The vacuum cleaner loses suction after ten minutes.",
    "These running shoes are light and grip wet roads.",
    "The desk lamp flickers when dimmed.",
    "A sturdy frying pan that heats evenly.",
    "The phone case cracked when it fell off the table.",
    "Comfortable wool gloves, a bit tight at the wrist.",
    "The coffee grinder is loud but consistent.",
    "A garden hose that does not kink.",
]
SYNTHETIC = {
    "book": ["A fantasy saga with dragons and a stubborn heroine.", "The essays on travel are witty.",
             "A field guide to the birds of the northern coast.", "The thriller's twist came far too late.",
             "A graphic novel drawn in soft watercolours.", "The textbook explains statistics gently."],
    "not_book": ["The blender's lid leaks at high speed.", "These headphones cancel noise on the train.",
                 "A kettle that boils quietly in two minutes.", "The yoga mat smells of rubber for weeks.",
                 "The umbrella turned inside out in light wind.", "A backpack with a padded laptop pocket."],
}  # fmt: skip


def _project(tmp_path, golden_per_label: int, labeler: list | None = None, **synthetic) -> Project:
    folder = tmp_path / "proj"
    folder.mkdir()
    config = {
        "task": {"labels": [{"name": "book"}, {"name": "not_book"}]},
        "routing": {"threshold": 0.6},
        "synthetic": synthetic,
        **({"labeler": labeler} if labeler else {}),
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    project = Project.open(folder)
    n = golden_per_label
    golden = [(f"g-b{i}", BOOK[i], "book") for i in range(n)] + [
        (f"g-o{i}", OTHER[i], "not_book") for i in range(n)
    ]
    project.add_items(pd.DataFrame(golden, columns=["id", "text", "gold"]), role="golden", gold_column="gold")
    control = [("c-b", BOOK[n], "book"), ("c-o", OTHER[n], "not_book")]
    project.add_items(
        pd.DataFrame(control, columns=["id", "text", "gold"]), role="control", gold_column="gold"
    )
    regular = [(f"r-b{i}", t) for i, t in enumerate(BOOK[n + 1 :])] + [
        (f"r-o{i}", t) for i, t in enumerate(OTHER[n + 1 :])
    ]
    project.add_items(pd.DataFrame(regular, columns=["id", "text"]))
    with ledger_run(project.store, "generate", {"mode": "zero-shot"}) as run:
        for label, texts in SYNTHETIC.items():
            for text in texts:
                _store_item(project, run.id, f"synthetic-{label}-{text[:12]}", Generated(text), label=label,
                            mode="zero-shot", leaf=None)  # fmt: skip
    return project


def _synthetic_ids(project: Project) -> set[str]:
    with project.store.read() as session:
        return set(session.scalars(select(Item.id).where(Item.role == "synthetic")))


def test_synthetic_items_never_reach_gold_control_prediction_routing_audit_or_a_plain_export(tmp_path):
    from duolabel.people.exam import exam_items
    from duolabel.stages.audit import draw_audit

    with _project(tmp_path, golden_per_label=3) as project:
        synthetic = _synthetic_ids(project)
        assert len(synthetic) == 12
        # The queries that choose what trains, checks people and is labelled.
        assert not synthetic & {item.id for item in golden_items(project)[0]}
        assert not synthetic & {item.id for item in human_labelled_items(project)[0]}
        with project.store.read() as session:
            assert not synthetic & set(session.scalars(gold_items()))
        # The labeler learns from them, but predicts and calibrates none of them.
        result = project.label()[0]
        with project.store.read() as session:
            run = session.scalars(select(Run).where(Run.kind == "label")).one()
            predicted = set(session.scalars(select(Prediction.item_id)))
        assert run.config["synthetic"] == 12 and run.config["golden"] == 6
        assert result.predicted > 0 and not synthetic & predicted
        project.calibrate()
        project.route()
        project.aggregate()
        project.suggest_golden(3)
        draw_audit(project, rate=1.0, seed=1)
        with project.store.read() as session:
            for table in (Route, FinalLabel, Audit, ExpertTask):
                assert not synthetic & set(session.scalars(select(table.item_id))), table.__tablename__
            annotator = SimpleNamespace(id=1, created_at=datetime(2026, 1, 1))
            assert not synthetic & set(exam_items(session, annotator, 1, project.config.quality))
        assert not synthetic & {
            item.id for item in fit_options(project, SimpleNamespace(uses_unlabeled=True))["unlabeled"]
        }
        # Exported only when asked for, flagged, with the label they were generated for.
        plain, flagged = tmp_path / "plain.csv", tmp_path / "flagged.csv"
        project.export(plain, include_pending=True)
        project.export(flagged, include_pending=True, include_synthetic=True)
        with plain.open() as handle:
            plain_rows = list(csv.DictReader(handle))
        assert "synthetic" not in plain_rows[0] and not synthetic & {r["id"] for r in plain_rows}
        with flagged.open() as handle:
            rows = {r["id"]: r for r in csv.DictReader(handle)}
        assert synthetic <= set(rows)
        assert all(rows[i]["synthetic"] == "True" and rows[i]["source"] == "synthetic" for i in synthetic)
        assert {rows[i]["label"] for i in synthetic} == {"book", "not_book"}
        assert all(r["synthetic"] == "False" for i, r in rows.items() if i not in synthetic)
        status = project.status()
        assert status.items == 16 and "12 synthetic training items" in status.synthetic
        from duolabel.report import write_report

        html = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
        assert "Synthetic training items" in html and "<p>12 items generated" in html


def test_cold_start_trains_on_synthetic_items_with_one_golden_item_per_label(tmp_path):
    with _project(tmp_path, golden_per_label=1, weight=0.5) as project:
        result = project.label()[0]
        assert result.predicted == 14  # the 12 regular items and the 2 controls (co-pilot suggestions)
        with project.store.read() as session:
            run = session.scalars(select(Run).where(Run.kind == "label")).one()
            rows = session.execute(
                select(Prediction.item_id, Prediction.label).where(Prediction.item_id.like("r-%"))
            ).all()
        assert run.config["synthetic"] == 12 and run.config["synthetic_weight"] == 0.5
        # Trained on synthetic books and not-books, it tells the real ones apart.
        right = sum((r.item_id.startswith("r-b")) == (r.label == "book") for r in rows)
        assert right / len(rows) >= 0.75
        # Calibration stays on golden items only, and there are too few of them.
        with pytest.raises(LabelerError, match="too few golden items"):
            project.calibrate()


def test_share_caps_the_synthetic_items_and_zero_turns_them_off(tmp_path):
    with _project(tmp_path, golden_per_label=3, share=0.5) as project:
        items, labels = synthetic_training_items(project, 6)
        assert len(items) == 6 and labels.count("book") == 3  # half of 12 training items, balanced
    cfg = yaml.safe_load((tmp_path / "proj" / "duolabel.yaml").read_text())
    cfg["synthetic"] = {"share": 0.0}
    (tmp_path / "proj" / "duolabel.yaml").write_text(yaml.safe_dump(cfg))
    with Project.open(tmp_path / "proj") as project:
        assert synthetic_training_items(project, 6) == ([], [])
        project.label()
        with project.store.read() as session:
            run = session.scalars(select(Run).where(Run.kind == "label")).one()
        assert "synthetic" not in run.config


def test_an_ensemble_imported_predictions_and_the_dashboard_leave_synthetic_items_out(tmp_path):
    from duolabel.web.dashboard import batches_table

    labelers = [{"name": "wide"}, {"name": "tight", "regularization": 0.05}]
    with _project(tmp_path, golden_per_label=3, labeler=labelers) as project:
        synthetic = _synthetic_ids(project)
        project.label()
        assert [r.labeler for r in project.calibrate()] == ["wide", "tight", "ensemble"]
        assert "synthetic" not in set(batches_table(project)["batch"])
        with project.store.read() as session:
            assert not synthetic & set(session.scalars(select(Prediction.item_id)))
    cfg = yaml.safe_load((tmp_path / "proj" / "duolabel.yaml").read_text())
    cfg["labeler"] = [*labelers, {"backend": "external", "name": "outside"}]
    (tmp_path / "proj" / "duolabel.yaml").write_text(yaml.safe_dump(cfg))
    with Project.open(tmp_path / "proj") as project:
        frame = pd.DataFrame(
            [{"id": i, "p_book": 0.5, "p_not_book": 0.5} for i in sorted(synthetic)]
            + [{"id": "r-b0", "p_book": 0.9, "p_not_book": 0.1}]
        )
        project.import_predictions(frame, labeler="outside")
        with project.store.read() as session:
            imported = set(
                session.scalars(select(Prediction.item_id).where(Prediction.labeler.like("%outside")))
            )
        assert imported == {"r-b0"}
