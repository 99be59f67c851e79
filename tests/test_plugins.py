"""A third-party package adds a labeler, a calibrator, a policy and an aggregator through entry
points, and a real project uses them without any change to duolabel (issue 10, item 5).

The package is written to ``tmp_path`` with a ``toy_plugin-0.1.dist-info`` folder beside it, so
``importlib.metadata`` finds its entry points once that folder is on ``PYTHONPATH``. The checks
run in a fresh interpreter: the registries read entry points once, lazily, so this test process
(whose registries may already be read) would not see the plug-in.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

import duolabel
from tests.conftest import EXAMPLE

PLUGIN = '''
"""A toy duolabel plug-in: keyword labeler, label smoothing, margin policy, smoothed vote."""

import numpy as np
import pandas as pd
from pydantic import Field

from duolabel.config import LabelerSettings
from duolabel.core.policies import ThresholdPolicy
from duolabel.labelers import Usage

USED = set()  # which toy parts the project called, for the test to check


class ToySettings(LabelerSettings):
    keywords: dict[str, list[str]] = Field({}, description="Words that point to each label.")


class KeywordLabeler:
    """Counts each label's keywords in the text, with add-one smoothing."""

    def __init__(self, labels, keywords):
        self.labels = list(labels)
        self.keywords = keywords

    def fit(self, items, labels, *, progress=None):
        USED.add("labeler")
        self.version_ = "toy-keywords-1"
        if progress is not None:
            progress(len(items))
        return self

    def predict_proba(self, items, *, progress=None):
        counts = np.ones((len(items), len(self.labels)))
        for i, item in enumerate(items):
            text = item.text.lower()
            for j, label in enumerate(self.labels):
                counts[i, j] += 3 * sum(word in text for word in self.keywords.get(label, []))
        return counts / counts.sum(axis=1, keepdims=True), Usage(items=len(items))


def make_labeler(ctx, cfg):
    return KeywordLabeler(ctx.config.task.label_names, cfg.keywords)


make_labeler.config = ToySettings


class LabelSmoothing:
    """Mixes in the uniform distribution as much as the top label is wrong on the golden items."""

    def fit(self, probs, gold):
        USED.add("calibrator")
        self.epsilon_ = float((probs.argmax(axis=1) != gold).mean())
        return self

    def transform(self, probs):
        return (1 - self.epsilon_) * probs + self.epsilon_ / probs.shape[1]


class MarginPolicy(ThresholdPolicy):
    """Scores an item by the margin between its two most likely labels."""

    def score(self, probs, features=None):
        USED.add("policy")
        top = np.sort(probs, axis=1)
        return top[:, -1] - top[:, -2] if len(probs) else np.zeros(0)


class SmoothedVote:
    """Plurality vote whose posterior is (votes + 1) / (answers + labels)."""

    def __init__(self, *, labels):
        self.labels = list(labels)

    def fit(self, answers, *, known=None, model_probas=None):
        USED.add("aggregator")
        known = dict(known or {})
        tasks = sorted(set(answers["task"]) | set(known), key=str)
        counts = pd.crosstab(answers["task"], answers["label"]).reindex(
            index=tasks, columns=self.labels, fill_value=0
        )
        probas = (counts + 1).div(counts.sum(axis=1) + len(self.labels), axis=0).astype(float)
        for task, label in known.items():
            probas.loc[task] = [float(name == label) for name in self.labels]
        self.probas_ = probas
        self.labels_ = probas.idxmax(axis=1)
        return self
'''

ENTRY_POINTS = """
[duolabel.labelers]
toy = toy_plugin:make_labeler

[duolabel.calibrators]
toy = toy_plugin:LabelSmoothing

[duolabel.policies]
toy = toy_plugin:MarginPolicy

[duolabel.aggregators]
toy = toy_plugin:SmoothedVote
"""

KEYWORDS = {
    "billing": ["charge", "refund", "invoice", "bill", "paid", "payment", "price"],
    "shipping": ["ship", "deliver", "track", "package", "arrive", "courier"],
    "account": ["password", "login", "log in", "account", "email", "2fa"],
    "product": ["size", "broken", "defect", "instructions", "fit", "color"],
    "technical": ["error", "crash", "app", "page", "button", "load"],
}

CHECK = """
from sqlalchemy import select

import toy_plugin
from duolabel import ConfigError, Project
from duolabel.config import parse_config
from duolabel.store import Annotation, Annotator, FinalLabel, Route

with Project.open(FOLDER) as project:
    settings = project.config.labeler[0]
    assert type(settings) is toy_plugin.ToySettings and settings.keywords["billing"][0] == "charge"
    assert project.config.labeler[0].model_dump()["keywords"] == settings.keywords
    project.import_data()
    [labelled] = project.label()
    assert labelled.labeler == "toy" and labelled.model_version == "toy-keywords-1"
    project.calibrate()
    routed = project.route()
    assert routed.decided["accept"] > 0 and routed.decided["humans"] > 0, routed.decided
    with project.store.read() as session:
        queued = list(session.scalars(select(Route.item_id).where(Route.decision == "humans")))
    with project.store.write() as session:
        people = [Annotator(name=name, password_hash="-") for name in ("ann", "bo", "cy")]
        session.add_all(people)
        session.flush()
        for item_id in queued[:2]:
            for person in people:
                label = "shipping" if person.name == "cy" else "billing"
                session.add(Annotation(item_id=item_id, annotator_id=person.id, label=label))
    result = project.aggregate()
    assert (result.finalized, result.waiting) == (2, len(queued) - 2)
    with project.store.read() as session:
        final = session.get(FinalLabel, queued[0])
    # the toy aggregator's posterior: (2 votes + 1) / (3 answers + 5 labels)
    assert (final.label, final.source) == ("billing", "humans") and abs(final.confidence - 3 / 8) < 1e-9
assert toy_plugin.USED == {"labeler", "calibrator", "policy", "aggregator"}, toy_plugin.USED

base = {"task": {"labels": [{"name": "a"}, {"name": "b"}]}}
for bad, expected in [
    ({"labeler": {"backend": "toy", "keyword": {}}}, "allowed here: name, weight, backend, keywords"),
    (
        {"labeler": {"backend": "gpt"}},
        "expected one of 'embedding', 'finetune', 'setfit', 'llama', 'openai', 'external', 'toy'",
    ),
    ({"routing": {"policy": "tpy"}}, "expected 'threshold', 'dynamic', 'meta' or 'toy'"),
]:
    try:
        parse_config({**base, **bad})
    except ConfigError as error:
        assert expected in str(error), str(error)
    else:
        raise AssertionError(f"{bad} was accepted")
print("plug-in ok")
"""


def write_plugin(folder: Path) -> None:
    (folder / "toy_plugin").mkdir(parents=True)
    (folder / "toy_plugin" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    info = folder / "toy_plugin-0.1.dist-info"
    info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n"
    (info / "METADATA").write_text(metadata, encoding="utf-8")
    (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")


def test_a_plugin_package_labels_calibrates_routes_and_aggregates_a_project(tmp_path: Path):
    write_plugin(tmp_path / "site")
    project = tmp_path / "support_tickets"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    config = yaml.safe_load((project / "duolabel.yaml").read_text(encoding="utf-8"))
    config["labeler"] = [{"backend": "toy", "keywords": KEYWORDS}]
    config["calibration"] = {"method": "toy"}
    config["routing"] = {"policy": "toy", "mode": "fixed", "threshold": 0.3}
    config["aggregation"] = {"method": "toy"}
    (project / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")

    source = Path(duolabel.__file__).resolve().parents[1]
    path = [str(tmp_path / "site"), str(source), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    script = f"FOLDER = {str(project)!r}\n" + textwrap.dedent(CHECK)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "plug-in ok" in done.stdout
