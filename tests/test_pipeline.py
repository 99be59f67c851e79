"""The whole loop on real models: the bundled example, a SIGKILLed run that resumes."""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from duolabel import Project
from duolabel.store import Annotation, Annotator, FinalLabel, Prediction, Route, Run
from tests.conftest import shared_data

pytestmark = pytest.mark.slow


def cli(*args: str, **kwargs) -> subprocess.Popen | subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from duolabel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def answer(project: Project, item_ids: list[str], workers: list[str], label_for) -> None:
    """What the web app writes when people answer (the app has its own tests)."""
    with project.store.write() as session:
        people = []
        for name in workers:
            person = session.scalar(select(Annotator).where(Annotator.name == name))
            if person is None:
                person = Annotator(name=name, password_hash="-")
                session.add(person)
                session.flush()
            people.append(person)
        for item_id in item_ids:
            for person in people:
                session.add(
                    Annotation(item_id=item_id, annotator_id=person.id, label=label_for(item_id, person.name))
                )


def test_example_runs_end_to_end_and_people_close_the_loop(example_copy: Path):
    result = cli("run", str(example_copy))
    assert result.returncode == 0, result.stderr
    assert "Project status" in result.stdout and "wait for people" in result.stdout
    assert "duolabel serve" in result.stdout
    labels_csv = example_copy / "out" / "labels.csv"
    with labels_csv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert {"label", "source", "confidence", "human_votes", "annotators", "model_probability"} <= set(rows[0])
    assert {r["source"] for r in rows} == {"model", "expert"}
    assert all(float(r["confidence"]) >= 0.9 for r in rows if r["source"] == "model")

    with Project.open(example_copy) as project:
        status = project.status()
        assert status.items == 360 and status.golden == 60 and status.predicted == 360
        assert status.accepted + status.routed_to_people == 300
        assert status.waiting_for_people == status.routed_to_people > 0
        with project.store.read() as session:
            routes = session.scalars(select(Route).where(Route.decision == "humans")).all()
            queued = [r.item_id for r in routes]
            model = dict(
                session.execute(
                    select(Prediction.item_id, Prediction.label).where(Prediction.item_id.in_(queued[:3]))
                ).all()
            )
        # The default policy (dynamic) asks one person per routed item first.
        assert {r.overlap for r in routes} == {1}
        # Two people who agree with the model settle an item. One person against the model
        # never does (0.9 × its share of the rest is below 0.95 of the whole): one more is asked.
        answer(project, queued[:2], ["ann", "bo"], lambda item, who: model[item])
        other = {
            queued[2]: next(label for label in project.config.task.label_names if label != model[queued[2]])
        }
        answer(project, [queued[2]], ["cy"], lambda item, who: other[item])
        result = project.aggregate()
        assert (result.finalized, result.waiting) == (2, len(queued) - 2)
        with project.store.read() as session:
            final = session.get(FinalLabel, queued[0])
            asked = session.get(Route, queued[2])
        assert (final.label, final.n_votes) == (model[queued[0]], 2) and final.source in ("humans", "fused")
        assert final.annotators == ["ann", "bo"]
        assert (asked.decision, asked.overlap) == ("humans", 2)
        assert project.status().cost.human_answers == 5

    # The next run retrains on the two human labels (a new model version), keeps them.
    again = cli("run", str(example_copy))
    assert again.returncode == 0, again.stderr
    with Project.open(example_copy) as project, project.store.read() as session:
        runs = list(session.scalars(select(Run).where(Run.kind == "label", Run.status == "done")))
        assert [r.config["human_labelled"] for r in runs] == [0, 2]
        assert session.scalar(select(func.count()).select_from(Prediction)) == 720
        assert session.get(FinalLabel, queued[0]).source in ("humans", "fused")
    third = cli("run", str(example_copy))  # nothing new: nothing is labelled again
    assert third.returncode == 0, third.stderr
    with Project.open(example_copy) as project, project.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 720
    with labels_csv.open(encoding="utf-8") as handle:
        human_rows = [r for r in csv.DictReader(handle) if r["source"] in ("humans", "fused")]
    assert len(human_rows) == 2 and human_rows[0]["human_votes"] == "2"


def write_emotion_project(folder: Path, n_golden: int, n_items: int) -> None:
    with (shared_data("emotion") / "items.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in itertools.islice(handle, n_golden + n_items)]
    folder.mkdir()
    with (folder / "golden.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(
            json.dumps({"id": r["id"], "text": r["text"], "label": r["gold"]}) + "\n" for r in rows[:n_golden]
        )
    with (folder / "items.jsonl").open("w", encoding="utf-8") as out:
        out.writelines(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows[n_golden:])
    labels = json.loads((shared_data("emotion") / "labels.json").read_text())["labels"]
    config = {
        "task": {"labels": [{"name": name} for name in labels]},
        "data": [{"path": "golden.jsonl", "role": "golden", "gold_column": "label"}, {"path": "items.jsonl"}],
        "routing": {"threshold": 0.8, "overlap": 2},
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return conn.execute(sql).fetchone()[0]


def test_a_killed_run_resumes_without_duplicates_or_lost_answers(tmp_path: Path):
    folder = tmp_path / "emotion"
    write_emotion_project(folder, n_golden=180, n_items=4000)
    db = folder / "duolabel.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from duolabel.cli import main; main()", "run", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 300
    answered = False
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            assert proc.poll() is None, "the run finished before it could be killed"
            if not db.exists():
                continue
            try:
                done = count(db, "select count(*) from predictions where out_of_fold = 0")
            except sqlite3.OperationalError:
                continue  # tables not created yet
            if done >= 512 and not answered:
                # A person answers while the job is running (as through the web app).
                with sqlite3.connect(db, timeout=30) as conn:
                    conn.execute(
                        "insert into annotators"
                        " (name, name_key, role, password_hash, status, skills, created_at)"
                        " values ('ann', 'ann', 'annotator', '-', 'active', '{}', CURRENT_TIMESTAMP)"
                    )
                    conn.execute(
                        "insert into annotations (item_id, annotator_id, label, created_at) values "
                        "('emotion-train-00190', 1, 'joy', CURRENT_TIMESTAMP)"
                    )
                answered = True
            if answered and done >= 1024:
                break
        else:
            pytest.fail("labeling never reached 1024 items")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    killed_at = count(db, "select count(*) from predictions")
    assert killed_at < 4180, "the run had already finished"

    result = cli("run", str(folder))
    assert result.returncode == 0, result.stderr
    assert count(db, "select count(*) from predictions") == 4180
    assert (
        count(
            db,
            "select count(*) from (select item_id from predictions group by item_id, model_version"
            " having count(*) > 1)",
        )
        == 0
    )
    assert count(db, "select count(*) from annotations") == 1
    assert count(db, "select count(*) from runs where kind = 'label' and status = 'interrupted'") == 1
    assert count(db, "select count(*) from items") == 4180
