"""The ``ray`` engine against a real local Ray cluster and the real MiniLM encoder: the same
predictions as the local loop, and a driver killed mid-run resumes without redoing or
re-paying a committed batch."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import func, select

from tests.conftest import EXAMPLE

N_ITEMS = 40
CHUNK = 8  # several batches from tens of items


@pytest.fixture(scope="module")
def ray_address():
    ray = pytest.importorskip("ray", reason="the ray engine needs: pip install 'duolabel[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def small_copy(folder: Path, n_items: int = N_ITEMS, per_label: int = 99, **labeler: object) -> Path:
    """The example project with its first ``n_items`` tickets, the first ``per_label``
    golden items of each label, and one labeler (embedding unless ``labeler`` names another
    backend)."""
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    with (EXAMPLE / "tickets.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[: n_items + 1]
    with (folder / "tickets.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    with (EXAMPLE / "golden.csv").open(newline="", encoding="utf-8") as handle:
        header, *golden = list(csv.reader(handle))
    with (folder / "golden.csv").open("w", newline="", encoding="utf-8") as handle:
        kept = [row for i, row in enumerate(golden) if [r[2] for r in golden[:i]].count(row[2]) < per_label]
        csv.writer(handle).writerows([header, *kept])
    config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
    config["labeler"] = [{"backend": "embedding", **labeler}]
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def predictions(project) -> dict[str, tuple[str, dict[str, float], bool]]:
    from duolabel.store import Prediction

    with project.store.read() as session:
        return {p.item_id: (p.label, p.probs, p.out_of_fold) for p in session.scalars(select(Prediction))}


def counts(project) -> tuple[int, int]:
    from duolabel.store import Embedding, Prediction

    with project.store.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Prediction)),
            session.scalar(select(func.count()).select_from(Embedding)),
        )


def test_a_missing_ray_names_the_extra(monkeypatch):
    from duolabel.config.labelers import EmbeddingLabelerConfig
    from duolabel.errors import SetupError
    from duolabel.labelers.engines import labeling_engine

    assert labeling_engine(EmbeddingLabelerConfig()) is None  # local: the stage's own loop
    engine = labeling_engine(EmbeddingLabelerConfig(engine="ray", ray_workers=3))
    assert engine is not None and engine.workers == 3
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(SetupError, match=r"pip install 'duolabel\[ray\]'"):
        list(engine.predict(object(), [([], None)]))


@pytest.mark.slow
def test_ray_predicts_what_the_local_loop_predicts(tmp_path, ray_address, monkeypatch):
    from duolabel import Project
    from duolabel.stages import label

    monkeypatch.setattr(label, "CHUNK", CHUNK)
    local = small_copy(tmp_path / "local")
    remote = small_copy(tmp_path / "ray", engine="ray", ray_workers=2)
    with Project.open(local) as project:
        project.import_data()
        [expected_run] = project.label()
        expected = predictions(project)
    with Project.open(remote) as project:
        project.import_data()
        [run] = project.label()
        got = predictions(project)
        assert counts(project) == (N_ITEMS + 60, N_ITEMS + 60)  # every vector stored by the driver
    assert run.model_version == expected_run.model_version
    assert run.predicted == expected_run.predicted == N_ITEMS  # the golden items' are out-of-fold
    assert got.keys() == expected.keys()
    for item, (label_, probs, oof) in expected.items():
        assert got[item][0] == label_ and got[item][2] == oof
        assert np.allclose([got[item][1][k] for k in probs], list(probs.values()), atol=1e-5)


KILLER = """
import os, signal, sys
sys.path.insert(0, {src!r})
from duolabel import Project
from duolabel.labelers import engines
from duolabel.stages import label

label.CHUNK = {chunk}
stored = engines._Shipper.store
seen = []

def store(self, new):
    stored(self, new)
    seen.append(1)
    if len(seen) == 3:  # the third batch's vectors are stored, its predictions are not
        os.kill(os.getpid(), signal.SIGKILL)

engines._Shipper.store = store
with Project.open({folder!r}) as project:
    project.label()
"""


@pytest.mark.slow
def test_a_killed_ray_run_resumes_without_redoing_a_batch(tmp_path, ray_address, monkeypatch):
    from duolabel import Project
    from duolabel.stages import label
    from duolabel.store import Run

    folder = small_copy(tmp_path / "proj", engine="ray", ray_workers=1, ray_address=ray_address)
    with Project.open(folder) as project:
        project.import_data()
        assert counts(project) == (0, 0)
    script = KILLER.format(src=str(Path(__file__).parents[1] / "src"), chunk=CHUNK, folder=str(folder))
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    monkeypatch.setattr(label, "CHUNK", CHUNK)
    with Project.open(folder) as project:
        kept, vectors = counts(project)
        golden = 60
        # The golden items' out-of-fold predictions and two regular batches were committed; the
        # third batch's vectors were stored, its predictions were not.
        assert kept == golden + 2 * CHUNK and vectors == golden + 3 * CHUNK
        [resumed] = project.label()
        assert resumed.already_done == kept and resumed.predicted == N_ITEMS - 2 * CHUNK
        # Nothing encoded twice: the golden items' vectors (fitting) and the third batch's
        # were read back, not recomputed.
        assert resumed.usage["cached"] == golden + CHUNK
        assert counts(project) == (golden + N_ITEMS, golden + N_ITEMS)
        with project.store.read() as session:
            runs = session.scalars(select(Run).where(Run.kind == "label").order_by(Run.id)).all()
        # The ledger holds what each run kept: fitting on the golden items, then two batches
        # (the killed run), the three batches left (the resumed one); no item predicted twice.
        assert [r.usage["items"] for r in runs] == [golden + 2 * CHUNK, golden + N_ITEMS - 2 * CHUNK]


@pytest.mark.slow
def test_llama_scores_on_ray_as_it_does_locally(tmp_path, ray_address, monkeypatch):
    """The llama labeler travels without its llama.cpp model (each worker loads its own)
    and with its few-shot encoder's store cache swapped for the worker's."""
    from tests.llm_server import llm_missing

    if why := llm_missing():
        pytest.skip(why)
    from duolabel import Project
    from duolabel.stages import label

    monkeypatch.setattr(label, "CHUNK", 4)
    runs = {}
    for engine in ("local", "ray"):
        folder = small_copy(
            tmp_path / engine, 8, per_label=3, backend="llama", few_shot=2, engine=engine, ray_workers=1
        )
        with Project.open(folder) as project:
            project.import_data()
            [runs[engine]] = project.label()
            runs[engine].probs = predictions(project)
            runs[engine].vectors = counts(project)[1]
    assert runs["ray"].model_version == runs["local"].model_version
    assert runs["ray"].predicted == runs["local"].predicted > 0
    # The few-shot encoder's vectors computed on the worker reached the store.
    assert runs["ray"].vectors == runs["local"].vectors > 0
    local, remote = runs["local"].probs, runs["ray"].probs
    assert local.keys() == remote.keys()
    for item, (label_, probs, _) in local.items():
        assert remote[item][0] == label_
        assert np.allclose([remote[item][1][k] for k in probs], list(probs.values()), atol=1e-4)


@pytest.mark.slow
def test_a_finetuned_labeler_predicts_on_ray_as_it_does_locally(tmp_path, ray_address, monkeypatch):
    """The fine-tuned encoder travels pickled with the labeler (its base is reloaded)."""
    from duolabel import Project
    from duolabel.stages import label

    monkeypatch.setattr(label, "CHUNK", 4)
    found = {}
    for engine in ("local", "ray"):
        folder = small_copy(
            tmp_path / engine,
            8,
            per_label=3,
            backend="finetune",
            max_epochs=1,
            cross_fit_max_items=0,
            engine=engine,
            ray_workers=1,
        )
        with Project.open(folder) as project:
            project.import_data()
            [run] = project.label()
            found[engine] = (run.model_version, predictions(project))
    assert found["ray"][0] == found["local"][0]
    local, remote = found["local"][1], found["ray"][1]
    assert local.keys() == remote.keys() and len(local) == 8 + 15
    for item, (label_, probs, _) in local.items():
        assert remote[item][0] == label_
        assert np.allclose([remote[item][1][k] for k in probs], list(probs.values()), atol=1e-4)
