"""Co-pilot suggestions come from the model that routed the item, never from the learning
loop's stop-set predictions (``version + STOP_SET_SUFFIX``) of a later model."""

from __future__ import annotations

from pathlib import Path

from duolabel.store import Prediction, Run
from duolabel.training_data import STOP_SET_SUFFIX
from duolabel.web.actions import suggestion
from tests.web_fixtures import add_routed_items, make_project


def test_the_suggestion_skips_a_later_models_stop_set_prediction(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    (item,) = add_routed_items(project, 1, overlap=1)
    with project.store.write() as session:
        run = Run(kind="label")
        session.add(run)
        session.flush()
        for version, label in (("v1", "billing"), ("v2" + STOP_SET_SUFFIX, "shipping")):
            session.add(
                Prediction(
                    item_id=item,
                    labeler="embedding",
                    model_version=version,
                    run_id=run.id,
                    probs={label: 1.0},
                    label=label,
                    raw_confidence=1.0,
                )
            )
    assert suggestion(project, item) == "billing"
    project.close()
