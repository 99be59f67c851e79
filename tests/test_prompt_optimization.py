"""Contextual calibration and prompt optimisation: the maths and the search logic (fast), then
the real llama labeler, the CLI on a small project, and the openai path against the real
llama.cpp server (slow)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import yaml

from duolabel.core.calibration import contextual_correction
from duolabel.errors import ConfigError, LabelerError
from duolabel.labelers.base import TextItem, Usage
from duolabel.labelers.fewshot import FixedDemos
from duolabel.labelers.prompt_search import bootstrap_demos, planned_calls, read_prompt, search_prompt
from duolabel.labelers.prompts import PromptedLabeler

# -- contextual calibration: the maths ------------------------------------------------


def test_contextual_correction_makes_the_content_free_input_uniform():
    cf = np.array([0.7, 0.2, 0.1])
    assert np.allclose(contextual_correction(cf, cf), 1 / 3)
    probs = np.array([[0.7, 0.2, 0.1], [0.35, 0.4, 0.25], [np.nan, np.nan, np.nan]])
    out = contextual_correction(probs, cf)
    # W = diag(cf)^-1, renormalised: row 2 is (0.5, 2, 2.5) / 5
    assert np.allclose(out[1], [0.1, 0.4, 0.5])
    assert np.allclose(out[:2].sum(axis=1), 1.0)
    assert np.isnan(out[2]).all()  # an abstention stays one
    # A prompt without bias changes nothing; a zero in the bias does not divide by zero.
    assert np.allclose(contextual_correction(probs[:2], np.full(3, 1 / 3)), probs[:2])
    assert np.isfinite(contextual_correction(probs[:2], np.array([0.5, 0.5, 0.0]))).all()


# -- the search's parts ----------------------------------------------------------------


def test_fixed_demos_never_show_an_item_itself():
    demos = FixedDemos([("a", "text a", "x"), ("b", "text b", "y")])
    got = demos.select([TextItem("a", "text a", "h"), TextItem("z", "other", "h")])
    assert got == [[("text b", "y")], [("text a", "x"), ("text b", "y")]]


def test_bootstrap_demos_take_only_items_labelled_right_balanced_over_labels():
    items = [TextItem(f"i{k}", f"t{k}", "") for k in range(8)]
    gold = ["x", "x", "x", "x", "y", "y", "y", "y"]
    right = [True, True, False, True, False, True, False, False]
    demos = bootstrap_demos(items, gold, right, labels=["x", "y"], size=4, seed=1)
    ids = {d[0] for d in demos}
    assert ids <= {"i0", "i1", "i3", "i5"}
    assert sum(d[2] == "y" for d in demos) == 1  # the only right "y"; the rest are "x"
    assert len(demos) == 4


class FakeLabeler(PromptedLabeler):
    """Pure logic only: 'predicts' from a keyword and records what each call showed."""

    def fit(self, items, labels, *, progress=None):
        self.selector_ = self._selector(items, labels)
        self.fitted_ = {i.id for i in items}
        return self

    def predict_proba(self, items: Sequence[TextItem], *, progress=None):
        shown = self.selector_.select(items)
        for item, examples in zip(items, shown, strict=True):
            self.log.append((item.id, {text for text, _ in examples}, self.instructions, bool(self.demos)))
        probs = np.array([[0.8, 0.2] if "good" in i.text else [0.3, 0.7] for i in items])
        if self.instructions.startswith("Classify"):
            probs = probs[:, ::-1].copy()  # one template is worse: the search must not choose it
        if progress is not None:
            progress(len(items))
        return probs, Usage(items=len(items))

    def complete(self, prompt: str, seed: int = 0) -> str:
        return f"Label the text carefully, variant {seed}.\nmore text"


def _golden(n: int = 12):
    items = [TextItem(f"g{k}", f"{'good' if k % 2 else 'bad'} thing {k}", "") for k in range(n)]
    gold = ["pos" if k % 2 else "neg" for k in range(n)]
    gold[0] = "pos"  # one item the keyword gets wrong: it must never be a demonstration
    return items, gold


def test_search_keeps_to_its_budget_and_never_scores_an_item_on_its_own_demonstrations():
    items, gold = _golden()
    labeler = FakeLabeler(labels=["pos", "neg"], instructions="Is it positive?", few_shot=2)
    labeler.log = []
    found = search_prompt(labeler, items, gold, generate=labeler.complete, folds=3, max_calls=74)
    assert (
        found.calls
        == 74
        == planned_calls(12, labels=["pos", "neg"], instructions="Is it?", few_shot=2, max_calls=74)
    )
    assert len(found.candidates) == 1 + (74 - 12 - 2) // 12  # the configured prompt, then what fits
    texts = {i.id: i.text for i in items}
    for item_id, shown, _, _ in labeler.log:
        assert texts[item_id] not in shown
    assert any(inst.startswith("Label the text carefully") for _, _, inst, _ in labeler.log)  # generated
    for candidate in found.candidates:
        assert len(candidate.folds) == 3
    assert found.chosen.key == min(c.key for c in found.candidates)
    assert labeler.instructions == found.chosen.instructions  # left with the chosen prompt


def test_bootstrapped_demonstrations_are_items_the_configured_prompt_got_right():
    items, gold = _golden()
    labeler = FakeLabeler(labels=["pos", "neg"], instructions="Is it positive?", few_shot=2)
    labeler.log = []
    found = search_prompt(labeler, items, gold, generate=None, bootstraps=1, max_calls=10_000)
    assert len(found.candidates) == 4 * 3  # every instruction x (configured, bootstrap, zero-shot)
    wrong = "bad thing 0"  # gold "pos", labelled "neg" by the configured prompt
    bootstrapped = [shown for _, shown, _, fixed in labeler.log if fixed]
    assert bootstrapped and all(wrong not in shown for shown in bootstrapped)
    assert not found.chosen.instructions.startswith("Classify")  # the template that is worse
    with pytest.raises(LabelerError, match="--max-calls 5"):
        search_prompt(labeler, items, gold, max_calls=5)


def test_read_prompt_errors_name_the_setting_and_the_file(tmp_path):
    with pytest.raises(ConfigError, match="labeler llama: prompt: .*does not exist.*optimize-prompt"):
        read_prompt(tmp_path / "nope.json", labels=["a"], where="labeler llama: prompt")
    bad = tmp_path / "bad.json"
    bad.write_text('{"chosen": {"instructions": "x", "demos": [["1", "t", "zzz"]]}}')
    with pytest.raises(ConfigError, match="labelled \\['zzz'\\]"):
        read_prompt(bad, labels=["a"])
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="is not a prompt written by"):
        read_prompt(tmp_path / "junk.json", labels=["a"])
    good = tmp_path / "good.json"
    good.write_text('{"chosen": {"instructions": "x", "demos": null, "zero_shot": true}}')
    assert read_prompt(good, labels=["a"]) == {"instructions": "x", "few_shot": 0}


def test_default_prompt_options_leave_the_version_state_unchanged():
    plain = PromptedLabeler(labels=["a", "b"])
    assert plain._prompt_state() == {}  # existing projects keep their labeler versions
    chosen = PromptedLabeler(labels=["a", "b"], demos=[("1", "t", "a")], contextual=True)
    assert set(chosen._prompt_state()) == {"demos", "contextual"}
    with pytest.raises(LabelerError, match="not among the labels"):
        PromptedLabeler(labels=["a", "b"], demos=[("1", "t", "c")])


# -- the real llama labeler, the CLI and the openai path (slow) --------------------------

BOOK = ["book", "not_book"]
BOOK_WORDS = {
    "descriptions": ["the product is a book", "any other product"],
    "instructions": "Decide whether the Amazon review is about a book.",
}
DEMOS = [
    ("d1", "A gripping novel, I read it in one night.", "book"),
    ("d2", "The blender is loud but crushes ice.", "not_book"),
]
REVIEWS = [
    TextItem("r1", "The kettle leaks and the lid does not close.", "r1"),
    TextItem("r2", "Lovely poems, the author has a gift.", "r2"),
]


@pytest.mark.slow
def test_llama_contextual_calibration_divides_out_the_content_free_bias():
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel.labelers.llama import LlamaLabeler
    from duolabel.labelers.prompts import CONTENT_FREE

    common = dict(labels=BOOK, **BOOK_WORDS, demos=DEMOS, n_ctx=512, n_threads=1)
    raw = LlamaLabeler(**common).fit([], [])
    fixed = LlamaLabeler(**common, contextual=True)
    fixed._llm, fixed._path = raw._load(), raw._path  # one loaded model for both
    fixed._label_tokens, fixed._steps = raw._label_tokens, raw._steps
    fixed.fit([], [])
    bias = raw.content_free([(t, label) for _, t, label in DEMOS], (0, 1))
    assert abs(bias[0] - 0.5) > 0.01  # the prompt leans to one label: there is something to correct
    # The content-free inputs scored as items get, on average, exactly the measured bias,
    # so corrected it is uniform.
    cf_probs, _ = raw.predict_proba([TextItem(f"cf{k}", t, "") for k, t in enumerate(CONTENT_FREE)])
    assert np.allclose(cf_probs.mean(axis=0), bias, atol=1e-5)
    assert np.allclose(contextual_correction(cf_probs.mean(axis=0), bias), 0.5, atol=1e-5)
    before, _ = raw.predict_proba(REVIEWS)
    after, usage = fixed.predict_proba(REVIEWS)
    assert np.allclose(after, contextual_correction(before, bias), atol=1e-5)
    assert not np.allclose(after, before, atol=1e-3)
    assert usage.extra["content_free_prompts"] == len(CONTENT_FREE)  # one prompt: one bias
    assert fixed.version_ != raw.version_


@pytest.mark.slow
def test_optimize_prompt_cli_with_llama_writes_every_candidate_and_a_new_version(tmp_path):
    pytest.importorskip("llama_cpp", reason="pip install 'duolabel[llama]'")
    from duolabel import Project
    from tests.test_labelers_in_project import cli, small_project

    folder = small_project(tmp_path / "p", {"backend": "llama", "few_shot": 2, "n_ctx": 512, "n_threads": 1})
    with Project.open(folder) as project:
        project.import_data()  # the golden.csv and items.csv the project file names
    result = cli("optimize-prompt", "-p", str(folder), "--max-calls", "26")
    assert result.returncode == 0, result.stderr
    assert "Before: accuracy" in result.stdout and "± " in result.stdout
    [file] = (folder / "prompts").glob("llama-*.json")
    body = json.loads(file.read_text())
    assert body["calls"] <= 26 and len(body["candidates"]) == 1 + (26 - 6 - 2) // 6
    assert all(len(c["folds"]) == 3 for c in body["candidates"])
    assert (body["version_before"] == body["version_after"]) == (body["after"]["name"] == "configured")
    with Project.open(folder) as project, project.store.read() as session:
        from sqlalchemy import select

        from duolabel.store import Run

        run = session.scalars(select(Run).where(Run.kind == "optimize-prompt")).one()
        assert run.status == "done" and run.usage["file"] == f"prompts/{file.name}"
    # Naming the file in the labeler entry makes the chosen prompt the labeler's version.
    config = yaml.safe_load((folder / "duolabel.yaml").read_text())
    config["labeler"]["prompt"] = f"prompts/{file.name}"
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config))
    with Project.open(folder) as project:
        from duolabel.labelers import build_labeler

        labeler = build_labeler(project, project.config.labeler[0])
        assert labeler.instructions == body["chosen"]["instructions"]
        from duolabel.training_data import golden_items

        assert labeler.fit(*golden_items(project)).version_ == body["version_after"]


@pytest.mark.slow
def test_search_and_contextual_calibration_through_the_openai_labeler(llm_server):
    from duolabel.labelers.cache import MemoryResponseCache
    from duolabel.labelers.openai import OpenAILabeler
    from tests.llm_server import MODEL_ALIAS

    common = dict(labels=BOOK, **BOOK_WORDS, model=MODEL_ALIAS, base_url=llm_server.base_url, answer_tokens=1)
    cache = MemoryResponseCache()
    raw = OpenAILabeler(**common, demos=DEMOS, cache=cache).fit([], [])
    fixed = OpenAILabeler(**common, demos=DEMOS, cache=cache, contextual=True).fit([], [])
    before, _ = raw.predict_proba(REVIEWS)
    after, usage = fixed.predict_proba(REVIEWS)
    assert usage.extra["content_free_prompts"] == 3 and usage.cached == 2  # the items were asked before
    from duolabel.labelers.prompts import CONTENT_FREE

    cf, _ = raw.predict_proba([TextItem(f"cf{k}", t, "") for k, t in enumerate(CONTENT_FREE)])
    assert np.allclose(after, contextual_correction(before, np.nanmean(cf, axis=0)))
    # The search, within a small budget (the server scores about one item a second).
    items = [
        TextItem("g0", "A gripping novel, I read it in one night.", ""),
        TextItem("g1", "The author's prose is lovely, great chapters.", ""),
        TextItem("g2", "The blender is loud but crushes ice.", ""),
        TextItem("g3", "These headphones broke after a week.", ""),
    ]
    labeler = OpenAILabeler(**common, few_shot=1)
    found = search_prompt(
        labeler,
        items,
        ["book", "book", "not_book", "not_book"],
        generate=labeler.complete,
        folds=2,
        max_calls=10,
    )
    assert found.calls <= 10 and len(found.candidates) == 2
    assert all(len(c.folds) == 2 for c in found.candidates)


def test_the_project_file_switches_contextual_calibration_and_the_chosen_prompt_on(tmp_path):
    from duolabel import Project
    from duolabel.labelers import build_labeler
    from tests.conftest import write_project

    prompt = {
        "chosen": {"instructions": "Pick one.", "demos": [["g1", "text", "billing"]], "zero_shot": False}
    }
    folder = write_project(
        tmp_path / "p",
        labeler=[{"backend": "llama", "contextual_calibration": True, "prompt": "prompts/chosen.json"}],
    )
    (folder / "prompts").mkdir()
    (folder / "prompts" / "chosen.json").write_text(json.dumps(prompt))
    with Project.open(folder) as project:
        labeler = build_labeler(project, project.config.labeler[0])
    assert labeler.contextual and labeler.instructions == "Pick one."
    assert labeler.demos == [("g1", "text", "billing")] and labeler.encode is None  # fixed: no encoder
    (folder / "prompts" / "chosen.json").unlink()
    with (
        Project.open(folder) as project,
        pytest.raises(ConfigError, match="labeler llama: prompt: .*chosen.json"),
    ):
        build_labeler(project, project.config.labeler[0])
