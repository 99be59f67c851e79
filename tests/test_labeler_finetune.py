"""The fine-tuned labelers (``finetune``, ``setfit``) against the real bundled encoder, on
the example project's golden tickets: honest probabilities by cross-fitting and by a
held-out fold, saved models reloaded per version, and a project run end to end."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.errors import LabelerError, SetupError
from duolabel.labelers import TextItem
from duolabel.labelers.base import TrainableLabeler
from duolabel.labelers.finetune import FineTuneLabeler, SetFitLabeler
from duolabel.labelers.tuning import TunedLabeler, _Meter, check_training_labels
from duolabel.store import Item, Prediction, Run
from tests.conftest import EXAMPLE
from tests.test_pipeline import cli

# Small and quick: one epoch, short texts, one thread (the machine is shared).
QUICK = {"max_length": 64, "threads": 1}


def golden(per_label: int | None = None) -> tuple[list[TextItem], list[str], list[str]]:
    with (EXAMPLE / "golden.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = sorted({r["label"] for r in rows})
    if per_label is not None:
        rows = [r for label in labels for r in [r for r in rows if r["label"] == label][:per_label]]
    return [TextItem(r["id"], r["text"], r["id"]) for r in rows], [r["label"] for r in rows], labels


def tickets(n: int) -> list[TextItem]:
    with (EXAMPLE / "tickets.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:n]
    return [TextItem(r["id"], r["text"], r["id"]) for r in rows]


# -- pure logic ---------------------------------------------------------------------


def test_training_labels_are_checked():
    assert check_training_labels(["a", "b"], ["a", "b", "b"], minimum=1) == {"a": 1, "b": 2}
    with pytest.raises(LabelerError, match="not among the project's labels"):
        check_training_labels(["a", "b"], ["a", "c"])
    with pytest.raises(LabelerError, match=r"'a'.*at least 2"):
        check_training_labels(["a", "b"], ["a", "b", "b"], minimum=2)


def test_the_meter_fills_the_callers_bar_exactly_once():
    shown: list[int] = []
    meter = _Meter(shown.append, total=10, planned=100)
    meter(25)
    meter(0.5)
    meter(200)  # early stopping plans too much, a refit too little: never past the total
    meter.finish()
    assert shown == [2, 8] and sum(shown) == 10
    quiet = _Meter(None, total=5, planned=0)
    quiet(3)
    quiet.finish()


def test_early_stopping_scores_accuracy_first_and_log_loss_on_ties():
    y = np.array([0, 1, 1, 0])
    sure_one_wrong = np.array([[0.99, 0.01], [0.01, 0.99], [0.7, 0.3], [0.99, 0.01]])  # 3 of 4, log-loss 0.31
    right_unsure = np.array([[0.6, 0.4], [0.4, 0.6], [0.4, 0.6], [0.6, 0.4]])  # 4 of 4, log-loss 0.51
    right_timid = np.array([[0.51, 0.49], [0.49, 0.51], [0.49, 0.51], [0.51, 0.49]])  # 4 of 4, 0.67
    by_accuracy = FineTuneLabeler(labels=["a", "b"])
    assert by_accuracy._score(right_unsure, y) > by_accuracy._score(sure_one_wrong, y)
    assert by_accuracy._score(right_unsure, y) > by_accuracy._score(right_timid, y)  # a tie: log-loss
    by_loss = FineTuneLabeler(labels=["a", "b"], select_on="log_loss")
    scores = [by_loss._score(p, y) for p in (sure_one_wrong, right_unsure, right_timid)]
    assert scores == sorted(scores, reverse=True)


def test_cross_validated_epochs_pool_every_folds_out_of_fold_probabilities():
    labeler = FineTuneLabeler(labels=["a", "b"], choose_epochs="cross_fit")
    y = np.array([0, 1, 0, 1])
    folds = [(np.array([2, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([2, 3]))]
    right, wrong = np.array([[0.8, 0.2], [0.2, 0.8]]), np.array([[0.2, 0.8], [0.8, 0.2]])
    # Fold 1 stopped after 2 epochs; for epoch 3 it counts with its last epoch.
    histories = [[wrong, right], [right, wrong, right]]
    epochs, oof = labeler._pooled_epochs(folds, histories, y)
    assert epochs == 3
    np.testing.assert_array_equal(oof, np.vstack([right, right]))
    # Equal pooled scores go to the fewer epochs.
    epochs, oof = labeler._pooled_epochs(folds, [[right, right], [right, right]], y)
    assert epochs == 1
    with pytest.raises(SetupError, match="choose_epochs"):
        FineTuneLabeler(labels=["a", "b"], choose_epochs="holdout")


def test_setup_and_label_errors_are_clear(tmp_path):
    items, gold, labels = golden(per_label=2)
    with pytest.raises(SetupError, match="not a sentence-transformers model folder"):
        FineTuneLabeler(labels=labels, model_path=tmp_path / "nowhere").fit(items, gold)
    with pytest.raises(LabelerError, match="at least 2"):
        SetFitLabeler(labels=labels).fit(items[1:], gold[1:])
    with pytest.raises(LabelerError, match="not trained yet"):
        FineTuneLabeler(labels=labels).predict_proba(items)


def test_small_sets_are_cross_fitted_and_large_ones_hold_a_fold_out():
    labeler = TunedLabeler(labels=["a", "b"], cross_fit_max_items=20, cv_folds=5, calibration_fraction=0.15)
    y = np.array([0, 1] * 10)
    mode, folds = labeler._folds(y, {"a": 10, "b": 10})
    assert mode == "cross_fit" and len(folds) == 5
    assert sorted(np.concatenate([held for _, held in folds]).tolist()) == list(range(20))
    y = np.array([0, 1] * 50)
    mode, folds = labeler._folds(y, {"a": 50, "b": 50})
    ((train, held),) = folds
    assert mode == "held_out" and len(held) == 15 and not set(train) & set(held)
    assert set(y[held]) == {0, 1}


# -- the real encoder ---------------------------------------------------------------


@pytest.mark.slow
def test_finetune_cross_fits_small_sets_and_rows_sum_to_one():
    items, gold, labels = golden(per_label=6)
    labeler = FineTuneLabeler(labels=labels, max_epochs=1, cv_folds=2, **QUICK).fit(items, gold)
    assert isinstance(labeler, TrainableLabeler)
    assert labeler.fit_info_["mode"] == "cross_fit"
    oof = labeler.oof_proba_
    assert oof.shape == (30, 5) and np.allclose(oof.sum(axis=1), 1.0)
    assert labeler.fit_usage_.extra["cross_fitted"] == 1.0
    assert labeler.fit_usage_.extra["honest_items"] == 30
    seen: list[int] = []
    probs, usage = labeler.predict_proba(tickets(20), progress=seen.append)
    assert probs.shape == (20, 5) and np.allclose(probs.sum(axis=1), 1.0)
    assert sum(seen) == 20 and usage.items == 20
    # The out-of-fold rows come from models that never saw the item: they differ from
    # the final model's in-sample predictions.
    in_sample, _ = labeler.predict_proba(items)
    assert not np.allclose(in_sample, oof, atol=1e-3)


def test_only_the_newest_saved_versions_are_kept(tmp_path):
    import os

    def saved(name: str, age: int) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "meta.json").write_text("{}", encoding="utf-8")
        os.utime(tmp_path / name / "meta.json", (1_000_000 - age, 1_000_000 - age))

    for age, version in enumerate(["new", "b", "c", "d", "e"]):
        saved(f"finetune-{version}", age)
    saved("setfit-x", 100)  # another backend's models are not this one's to prune
    (tmp_path / "finetune-half").mkdir()  # no meta.json: never a complete model, left alone
    FineTuneLabeler(labels=["a", "b"], model_dir=tmp_path)._prune(tmp_path / "finetune-new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["finetune-b", "finetune-c", "finetune-half", "finetune-new", "setfit-x"]


@pytest.mark.slow
def test_finetune_holds_out_a_fold_and_reloads_the_saved_model(tmp_path, monkeypatch):
    items, gold, labels = golden()
    options = {"labels": labels, "max_epochs": 1, "cross_fit_max_items": 0, "model_dir": tmp_path, **QUICK}
    shown: list[int] = []
    first = FineTuneLabeler(**options).fit(items, gold, progress=shown.append)
    assert sum(shown) == len(items)
    oof = first.oof_proba_
    honest = ~np.isnan(oof).any(axis=1)
    assert first.fit_info_["mode"] == "held_out" and honest.sum() == 9  # 15% of 60
    assert np.isnan(oof[~honest]).all() and np.allclose(oof[honest].sum(axis=1), 1.0)
    assert (tmp_path / f"finetune-{first.version_}" / "meta.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left

    def no_training(*args, **kwargs):
        raise AssertionError("a saved version must be loaded, not trained again")

    monkeypatch.setattr(FineTuneLabeler, "_train", no_training)
    again = FineTuneLabeler(**options).fit(items, gold)
    assert again.version_ == first.version_ and again.fit_usage_.extra["model_loaded"] == 1.0
    np.testing.assert_array_equal(again.oof_proba_, oof)
    sample = tickets(12)
    np.testing.assert_allclose(again.predict_proba(sample)[0], first.predict_proba(sample)[0], atol=1e-6)
    # Another training set is another version: it trains (and here meets the guard).
    with pytest.raises(AssertionError, match="must be loaded"):
        FineTuneLabeler(**options).fit(items[:-1], gold[:-1])


@pytest.mark.slow
def test_a_refit_keeps_the_fold_probabilities_of_the_model_trained_without_them():
    items, gold, labels = golden()
    options = {"labels": labels, "max_epochs": 1, "cross_fit_max_items": 0, **QUICK}
    first = FineTuneLabeler(**options).fit(items, gold)
    refit = FineTuneLabeler(**options, refit=True).fit(items, gold)
    assert refit.fit_info_["mode"] == "held_out" and refit.version_ != first.version_
    honest = ~np.isnan(refit.oof_proba_).any(axis=1)
    assert honest.sum() == 9 and np.array_equal(honest, ~np.isnan(first.oof_proba_).any(axis=1))
    held = [item for item, keep in zip(items, honest, strict=True) if keep]
    # The fold's rows are the predictions of the model trained without the fold (the
    # final model without refit), not of the refit model, which has seen those items.
    np.testing.assert_allclose(refit.oof_proba_[honest], first.oof_proba_[honest], atol=1e-5)
    np.testing.assert_allclose(first.predict_proba(held)[0], refit.oof_proba_[honest], atol=1e-5)
    assert not np.allclose(refit.predict_proba(held)[0], refit.oof_proba_[honest], atol=1e-3)


@pytest.mark.slow
def test_an_ensemble_predicts_with_the_fold_models_and_the_final_one_and_reloads_them(tmp_path, monkeypatch):
    items, gold, labels = golden(per_label=6)
    # Epochs chosen on a validation fold: that model is one more member.
    options = {
        "labels": labels,
        "max_epochs": 1,
        "cv_folds": 2,
        "choose_epochs": "validation_fold",
        "model_dir": tmp_path,
        **QUICK,
    }
    single = FineTuneLabeler(**options).fit(items, gold)
    assert single.fit_info_["members"] == 0 and single.members_ == []
    shown: list[int] = []
    both = FineTuneLabeler(**options, ensemble=True).fit(items, gold, progress=shown.append)
    # The model that chose the epochs and the 2 fold models vote with the final one.
    assert both.fit_info_["members"] == 3 and len(both.members_) == 3
    assert both.version_ != single.version_
    # Same folds, same seeds: the same honest probabilities, whatever predicts later.
    np.testing.assert_allclose(both.oof_proba_, single.oof_proba_, atol=1e-5)
    sample = tickets(12)
    seen: list[int] = []
    probs, usage = both.predict_proba(sample, progress=seen.append)
    assert sum(seen) == 12 and usage.items == 12
    texts = [item.text for item in sample]
    parts = [both._predict(model, texts, None) for model in [*both.members_, both.model_]]
    np.testing.assert_allclose(probs, np.mean(parts, axis=0), atol=1e-6)
    np.testing.assert_allclose(single.predict_proba(sample)[0], parts[-1], atol=1e-5)
    assert not np.allclose(probs, parts[-1], atol=1e-3)
    # Saved with its members, and loaded with them instead of training.
    assert len(list((tmp_path / f"finetune-{both.version_}").glob("member-*"))) == 3
    monkeypatch.setattr(FineTuneLabeler, "_train", None)
    again = FineTuneLabeler(**options, ensemble=True).fit(items, gold)
    assert len(again.members_) == 3
    np.testing.assert_allclose(again.predict_proba(sample)[0], probs, atol=1e-6)


@pytest.mark.slow
def test_cross_validated_epochs_train_no_extra_model_and_keep_every_row_honest(monkeypatch):
    items, gold, labels = golden(per_label=6)
    options = {"labels": labels, "max_epochs": 2, "cv_folds": 2, **QUICK}
    trained: list[int | None] = []
    train = FineTuneLabeler._train

    def counted(self, *args, **kwargs):
        trained.append(kwargs["epochs"])
        return train(self, *args, **kwargs)

    monkeypatch.setattr(FineTuneLabeler, "_train", counted)
    shown: list[int] = []
    labeler = FineTuneLabeler(**options).fit(items, gold, progress=shown.append)
    # The 2 fold models stop early on their own folds, the final one trains for the pooled
    # choice: no model trained only to choose the epochs.
    assert trained[:2] == [None, None] and len(trained) == 3 and trained[2] in (1, 2)
    assert labeler.fit_info_["mode"] == "cross_fit" and labeler.fit_info_["epochs"] == trained[2]
    assert labeler.fit_usage_.extra["honest_items"] == 30 and sum(shown) == 30
    assert np.allclose(labeler.oof_proba_.sum(axis=1), 1.0)
    by_fold = FineTuneLabeler(**options, choose_epochs="validation_fold").fit(items, gold)
    assert by_fold.version_ != labeler.version_


@pytest.mark.slow
def test_setfit_trains_saves_and_reloads(tmp_path, monkeypatch):
    items, gold, labels = golden(per_label=4)
    options = {"labels": labels, "pairs_per_item": 2, "cv_folds": 2, "model_dir": tmp_path, **QUICK}
    # As an ensemble: the 2 fold models (SetFit chooses no epochs) vote with the final one.
    first = SetFitLabeler(**options, ensemble=True).fit(items, gold)
    assert first.fit_info_["mode"] == "cross_fit" and len(first.members_) == 2
    assert np.allclose(first.oof_proba_.sum(axis=1), 1.0)
    sample = tickets(10)
    probs, _ = first.predict_proba(sample)
    assert probs.shape == (10, 5) and np.allclose(probs.sum(axis=1), 1.0)
    monkeypatch.setattr(SetFitLabeler, "_train", None)  # loading never trains
    again = SetFitLabeler(**options, ensemble=True).fit(items, gold)
    assert len(again.members_) == 2
    np.testing.assert_allclose(again.predict_proba(sample)[0], probs, atol=1e-6)


@pytest.mark.slow
def test_a_finetune_project_labels_and_calibrates_on_honest_rows_only(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(EXAMPLE / "golden.csv", folder / "golden.csv")
    with (folder / "tickets.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        writer.writerows([item.id, item.text] for item in tickets(20))
    config = yaml.safe_load((EXAMPLE / "duolabel.yaml").read_text(encoding="utf-8"))
    golden_source = {"path": "golden.csv", "role": "golden", "gold_column": "label"}
    config["data"] = [golden_source, {"path": "tickets.csv"}]
    config.pop("export", None)
    # A held-out calibration fold (cross_fit_max_items: 0), so most golden items have no
    # out-of-fold prediction: they must not reach calibration.
    config["labeler"] = [{"backend": "finetune", "max_epochs": 1, "cross_fit_max_items": 0, **QUICK}]
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(folder) as project:
        project.import_data()

    result = cli("label", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project, project.store.read() as session:
        rows = session.execute(
            select(Prediction.out_of_fold, Prediction.abstained, Item.role).join(
                Item, Item.id == Prediction.item_id
            )
        ).all()
        run = session.scalars(select(Run).where(Run.kind == "label")).one()
    assert len(rows) == 80 and not any(r.abstained for r in rows)
    assert sum(r.out_of_fold for r in rows) == 9
    assert all(r.role == "golden" for r in rows if r.out_of_fold)
    assert run.config["fit"]["mode"] == "held_out" and run.usage["honest_items"] == 9
    assert run.usage["cross_fitted"] == 0 and run.usage["model_loaded"] == 0
    (saved,) = (folder / "models").iterdir()
    assert saved.name == f"finetune-{run.config['model_version']}"

    result = cli("calibrate", str(folder))
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project, project.store.read() as session:
        calibration = session.scalars(select(Run).where(Run.kind == "calibrate")).one()
        calibrated = session.scalar(select(Prediction.calibrated).where(Prediction.item_id == "g001"))
    assert calibration.usage["finetune"]["items"] == 80 and calibrated

    again = cli("label", str(folder))  # a re-run loads the model and has nothing left to do
    assert again.returncode == 0, again.stderr
    assert "0 items labelled, 80 already done" in again.stdout
