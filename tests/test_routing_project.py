"""The routing stage, simulation and the report on real projects with the real embedding
model; the report opened in the real Chromium."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from duolabel import Project
from duolabel.errors import DataError, ProjectError
from duolabel.people.experts import expert_queue_counts
from duolabel.stages.route import follow_up_project, plan_routing, route_project
from duolabel.store import FinalLabel, Item, Route, Run
from tests.conftest import shared_data
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_pipeline import answer, cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def labelled_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example, labelled and calibrated once for the module."""
    from tests.conftest import EXAMPLE

    folder = tmp_path_factory.mktemp("routing") / "support_tickets"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
    return folder


@pytest.fixture
def example(labelled_example: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "support_tickets"
    shutil.copytree(labelled_example, folder)
    return folder


def set_routing(folder: Path, **routing: object) -> None:
    path = folder / "duolabel.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["routing"] = routing
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def decisions(project: Project) -> dict[str, Route]:
    with project.store.read() as session:
        return {r.item_id: r for r in session.scalars(select(Route))}


def test_target_mode_certifies_or_says_what_is_missing(example: Path):
    with Project.open(example) as project:
        result = route_project(project)
        point = result.point
        assert point is not None and point.certificate is not None
        assert point.certificate.certified  # 60 golden items certify 0.9 for this model
        routes = decisions(project)
        accepted = [r for r in routes.values() if r.decision == "accept"]
        assert accepted and all(r.confidence >= point.threshold for r in accepted)
        assert all(r.confidence < point.threshold for r in routes.values() if r.decision == "humans")
        with project.store.read() as session:
            run = session.scalars(select(Run).where(Run.kind == "route")).all()[-1]
        assert "certified at threshold" in run.config["guarantee"]
        # The recorded choice names its procedure and its price against hindsight.
        assert run.config["procedure"] == "fallback"
        hindsight = run.config["hindsight_human_share"]
        assert 0 <= hindsight <= 1 - point.model_share + 1e-9  # hindsight never needs more people
        assert f"(hindsight on golden items: {hindsight:.0%})" in run.config["guarantee"]
    status = cli("status", str(example), env={**os.environ, "COLUMNS": "400"})
    assert f"human share {1 - point.model_share:.0%} (hindsight on golden items:" in " ".join(
        status.stdout.split()
    )
    # A target this golden set cannot certify: nothing is accepted and the message says why.
    set_routing(example, target_accuracy=0.99)
    with Project.open(example) as project:
        result = route_project(project)
        assert result.decided["accept"] == 0 and result.decided["humans"] == 300
        assert "cannot be certified with 60 golden items" in result.message
        assert "golden items would be needed" in result.message
        with project.store.read() as session:
            assert not session.scalars(select(FinalLabel).where(FinalLabel.source == "model")).all()


def test_the_dataset_guarantee_counts_people_in_and_says_so(example: Path):
    set_routing(example, guarantee="dataset", target_accuracy=0.9)
    with Project.open(example) as project:
        dataset = route_project(project).point
    set_routing(example, guarantee="accepted", target_accuracy=0.9)
    with Project.open(example) as project:
        accepted = plan_routing(project).point
    assert dataset is not None and dataset.dataset_certificate is not None and dataset.certificate is None
    assert dataset.dataset_certificate.golden == 60
    # The delivered data set includes people's labels, so the same target accepts at least as
    # many of the model's labels as the promise about the accepted items alone.
    assert dataset.threshold <= accepted.threshold
    status = cli("status", str(example), env={**os.environ, "COLUMNS": "400"})
    said = " ".join(status.stdout.split())
    assert "Routing: delivered labels (the model's and people's) at least 0.9 right" in said
    with Project.open(example) as project, project.store.read() as session:
        run = session.scalars(select(Run).where(Run.kind == "route")).all()[-1]
        assert run.config["guarantee_kind"] == "dataset"
        assert run.config["procedure"] == "expected-order"


def test_cost_and_budget_modes_follow_the_prices(example: Path):
    set_routing(example, mode="cost")
    with Project.open(example) as project:
        cost_point = plan_routing(project).point
        people = [p for p in plan_routing(project).curve if p.model_share == 0][0]
        assert cost_point.expected_accuracy >= people.hybrid_accuracy
    set_routing(example, mode="budget", budget=0.0)
    with Project.open(example) as project:
        result = route_project(project)
        assert result.decided["humans"] == 0  # no money for people: the model labels everything
    set_routing(example, mode="budget", budget=1000.0)
    with Project.open(example) as project:
        rich = plan_routing(project, items_to_route=300).point
        assert rich.expected_accuracy >= cost_point.expected_accuracy


def test_budget_mode_without_a_budget_is_a_config_error(example: Path):
    set_routing(example, mode="budget")
    result = cli("route", str(example))
    assert result.returncode != 0
    assert "routing mode 'budget' needs routing.budget" in result.stderr
    assert "Traceback" not in result.stderr


def test_expert_share_and_meta_policy(example: Path):
    set_routing(example, policy="meta", mode="fixed", threshold=0.9, expert_share=0.2)
    with Project.open(example) as project:
        result = route_project(project)
        routes = decisions(project)
        experts = [r for r in routes.values() if r.decision == "expert"]
        humans = [r for r in routes.values() if r.decision == "humans"]
        assert experts and humans and result.decided["expert"] == len(experts)
        assert len(experts) == pytest.approx(0.2 * (len(experts) + len(humans)), abs=2)
        # Each escalated item waits in the experts' queue.
        assert expert_queue_counts(project.store)["escalated"] == len(experts)
        plan = plan_routing(project)
        assert plan.evidence.features["neighbourhood_accuracy"].shape == (60,)


def test_dynamic_overlap_asks_one_more_only_while_unsure(example: Path):
    set_routing(example, policy="dynamic", mode="fixed", threshold=0.97, max_overlap=3, posterior_target=0.95)
    with Project.open(example) as project:
        route_project(project)
        routed = [r for r in decisions(project).values() if r.decision == "humans"]
        assert routed and all(r.overlap == 1 for r in routed)
        agree, disagree = routed[0].item_id, routed[1].item_id
        with project.store.read() as session:
            from duolabel.store import Prediction

            model_label = dict(
                session.execute(
                    select(Prediction.item_id, Prediction.label).where(
                        Prediction.item_id.in_([agree, disagree])
                    )
                ).all()
            )
        labels = project.config.task.label_names
        others = {i: [lab for lab in labels if lab != model_label[i]] for i in (agree, disagree)}
        # One person agreeing with the model may already be sure; one disagreeing never is.
        answer(project, [agree], ["p1"], lambda item, _: model_label[item])
        answer(project, [disagree], ["p1"], lambda item, _: others[item][0])
        follow_up_project(project)
        routes = decisions(project)
        assert routes[disagree].overlap == 2 and routes[disagree].decision == "humans"
        # People who keep disagreeing with each other: one more is asked, then an expert.
        answer(project, [disagree], ["p2"], lambda item, _: others[item][1])
        follow_up_project(project)
        assert decisions(project)[disagree].overlap == 3
        answer(project, [disagree], ["p3"], lambda item, _: others[item][2])
        follow_up_project(project)
        assert decisions(project)[disagree].decision == "expert"
        assert expert_queue_counts(project.store)["escalated"] == 1
        # Agreeing people settle an item: it keeps its overlap and waits for aggregation.
        answer(project, [agree], ["p2"], lambda item, _: model_label[item])
        follow_up_project(project)
        assert decisions(project)[agree].decision == "humans"
        assert decisions(project)[agree].overlap <= 2


def test_items_in_peoples_hands_keep_their_route_under_a_new_policy(example: Path):
    set_routing(example, mode="fixed", threshold=0.99, expert_share=0.2)
    with Project.open(example) as project:
        route_project(project)
        routes = decisions(project)
        humans = [r.item_id for r in routes.values() if r.decision == "humans"]
        escalated = [r.item_id for r in routes.values() if r.decision == "expert"]
        assert len(humans) >= 2 and escalated
        answered, untouched = humans[0], humans[1]
        first_label = project.config.task.label_names[0]
        answer(project, [answered], ["p1"], lambda item, _: first_label)
    set_routing(example, mode="fixed", threshold=0.0)  # a new policy version that accepts everything
    with Project.open(example) as project:
        route_project(project)
        routes = decisions(project)
        assert routes[untouched].decision == "accept"  # no answer yet: decided again
        assert routes[answered].decision == "humans"  # an answer given: it stays with people
        assert all(routes[i].decision == "expert" for i in escalated)  # an expert's open task: kept
        with project.store.read() as session:
            by_model = set(session.scalars(select(FinalLabel.item_id).where(FinalLabel.source == "model")))
        assert untouched in by_model and answered not in by_model and not by_model & set(escalated)


def test_status_compares_people_alone_model_alone_and_hybrid(example: Path):
    result = cli("run", str(example))
    assert result.returncode == 0, result.stderr
    for row in ("people alone", "model alone (ledger)", "hybrid, when people finish", "golden set", "saving"):
        assert row in result.stdout
    with Project.open(example) as project:
        cmp = project.status().comparison
        assert cmp.humans_only == pytest.approx(300 * 3 * 0.05 * 1.2)
        assert 0 < cmp.hybrid < cmp.humans_only
        assert cmp.golden_set == pytest.approx(60 * 1.0)


def test_calibrate_says_how_well_each_signal_ranks_the_errors(example: Path):
    from duolabel.core.calibration import calibration_metrics
    from duolabel.core.evidence import ERROR_SIGNALS

    result = cli("calibrate", str(example))
    assert result.returncode == 0, result.stderr
    assert "How well each signal ranks the model's errors" in result.stdout
    with Project.open(example) as project:
        ranking = project.error_ranking()
        evidence = plan_routing(project).evidence
    assert list(ranking) == list(ERROR_SIGNALS)
    # One labeler: no ensemble disagreement to rank by.
    assert ranking["disagreement"] != ranking["disagreement"]
    # The confidence's AUROC is the calibration table's (the same cross-fitted golden predictions).
    after = calibration_metrics(evidence.probs, evidence.gold)["auroc"]
    assert abs(ranking["confidence"] - after) < 1e-9
    # Nor prompt variants: the embedding labeler has no prompts (NaN, as disagreement is).
    assert ranking["prompt_disagreement"] != ranking["prompt_disagreement"]
    unmeasured = ("disagreement", "prompt_disagreement")
    assert all(0.0 <= v <= 1.0 for k, v in ranking.items() if k not in unmeasured)


def test_report_renders_in_chromium_with_its_images(example: Path):
    from playwright.sync_api import sync_playwright

    assert cli("run", str(example)).returncode == 0
    result = cli("report", str(example))
    assert result.returncode == 0, result.stderr
    page_file = example / "report.html"
    html = page_file.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # nothing to fetch
    assert "(hindsight on golden items: " in html  # the price of the guarantee
    assert 'id="error-ranking"' in html and "meta-router" in html
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        images = page.evaluate(
            "[...document.images].map(i => ({id: i.id, ok: i.complete && i.naturalWidth > 100}))"
        )
        headings = page.locator("h2").all_inner_texts()
        browser.close()
    assert {i["id"] for i in images} == {"curve", "reliability", "cost"}
    assert all(i["ok"] for i in images), images
    assert {"Quality against human share", "Calibration", "Cost", "Routing"} <= set(headings)
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


# --- simulation on a real crowd ------------------------------------------------------


@pytest.fixture(scope="module")
def isbook_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 golden and 250 other amazon_isbook items, labelled and calibrated."""
    data = shared_data("amazon_isbook")
    rows = [json.loads(line) for line in (data / "items.jsonl").read_text(encoding="utf-8").splitlines()]
    random.Random(0).shuffle(rows)
    folder = tmp_path_factory.mktemp("sim") / "isbook"
    folder.mkdir()
    for name, part in (("golden.jsonl", rows[:150]), ("items.jsonl", rows[150:400])):
        with (folder / name).open("w", encoding="utf-8") as handle:
            for r in part:
                handle.write(json.dumps({"id": r["id"], "text": r["text"], "gold": r["gold"]}) + "\n")
    config = {
        "task": {"labels": [{"name": "book"}, {"name": "not_book"}]},
        "data": [
            {"path": "golden.jsonl", "role": "golden", "gold_column": "gold"},
            {"path": "items.jsonl", "gold_column": "gold"},
        ],
    }
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
    return folder


def test_simulate_replays_every_policy_on_recorded_answers(isbook_project: Path, tmp_path: Path):
    answers = shared_data("amazon_isbook") / "annotations.jsonl"
    curve = tmp_path / "curve.csv"
    wide = {**os.environ, "COLUMNS": "200"}
    result = cli("simulate", str(isbook_project), "--answers", str(answers), "--curve", str(curve), env=wide)
    assert result.returncode == 0, result.stderr
    from duolabel.simulate import simulate_project

    with Project.open(isbook_project) as project:
        sim = simulate_project(project, answers)
    policies = {row.policy for row in sim.rows}
    assert policies == {"threshold", "dynamic", "meta"}
    for row in sim.rows:
        assert 0 <= row.cost <= row.humans_only_cost * 2 + 1e-9
        assert 0.5 < row.hybrid_accuracy <= 1
        assert row.human_accuracy == sim.rows[0].human_accuracy  # people alone do not depend on the policy
    best = max(sim.rows, key=lambda r: r.hybrid_accuracy)
    assert best.hybrid_accuracy >= best.model_accuracy - 0.01
    assert curve.read_text(encoding="utf-8").startswith("threshold,human_share,hybrid_accuracy")
    for column in ("human accuracy", "model accuracy", "hybrid accuracy", "human cost reduction"):
        assert column in result.stdout
    threshold_row = next(row for row in sim.rows if row.policy == "threshold")
    assert "(hindsight on golden items: " in threshold_row.guarantee
    assert "(hindsight on golden items: " in " ".join(result.stdout.split())
    # Same seed, same answers drawn: the simulation is reproducible.
    with Project.open(isbook_project) as project:
        again = simulate_project(project, answers)
    assert again.rows == sim.rows


def test_simulate_replays_the_answers_imported_into_the_store(isbook_project: Path, tmp_path: Path) -> None:
    folder = tmp_path / "isbook"
    shutil.copytree(isbook_project, folder)
    from duolabel.simulate import simulate_project

    with Project.open(folder) as project, project.store.read() as session:
        ours = set(session.scalars(select(Item.id)))
    source = shared_data("amazon_isbook") / "annotations.jsonl"
    answers = tmp_path / "answers.jsonl"
    with source.open(encoding="utf-8") as lines:
        answers.write_text(
            "".join(line for line in lines if json.loads(line)["item_id"] in ours), encoding="utf-8"
        )
    assert cli("import-answers", str(answers), "-p", str(folder)).returncode == 0
    result = cli("simulate", str(folder), "--from-store")
    assert result.returncode == 0, result.stderr
    with Project.open(folder) as project:
        from_store = simulate_project(project, None)
        from_file = simulate_project(project, answers)
    # The same answers in the same order: the same replay, whatever the workers are called.
    assert from_store.rows == from_file.rows and from_store.crowd_accuracy == from_file.crowd_accuracy


def test_simulate_takes_known_labels_from_a_gold_file(isbook_project: Path, tmp_path: Path) -> None:
    from duolabel.simulate import read_gold, simulate_project

    answers = shared_data("amazon_isbook") / "annotations.jsonl"
    with Project.open(isbook_project) as project:
        imported = simulate_project(project, answers)
    # The same project with its regular items imported without their labels.
    folder = tmp_path / "isbook"
    shutil.copytree(isbook_project, folder)
    with Project.open(folder) as project, project.store.write() as session:
        for item in session.scalars(select(Item).where(Item.role == "regular")):
            item.gold_label = None
    assert "0 to replay" in cli("simulate", str(folder), "--answers", str(answers)).stderr
    result = cli("simulate", str(folder), "--answers", str(answers), "--gold", "items.jsonl")
    assert result.returncode == 0, result.stderr
    assert "hybrid: the model's label where the policy accepts it" in " ".join(result.stdout.split())
    with Project.open(folder) as project:
        from_file = simulate_project(project, answers, gold=read_gold(project, folder / "items.jsonl"))
    assert from_file.rows == imported.rows
    # A bad gold file names every bad row and simulates nothing.
    bad = tmp_path / "gold.csv"
    first = json.loads((folder / "items.jsonl").read_text().splitlines()[0])["id"]
    bad.write_text(f"id,gold\nnot-an-item,book\n{first},novel\n")
    refused = cli("simulate", str(folder), "--answers", str(answers), "--gold", str(bad))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "gold.csv, row 2, column 'id': got 'not-an-item', not an item of the project" in refused.stderr
    assert "row 3, column 'gold': got 'novel', expected one of 'book', 'not_book'" in refused.stderr
    assert "Nothing was simulated." in refused.stderr


def test_simulate_reports_every_bad_answer_row(isbook_project: Path, tmp_path: Path):
    bad = tmp_path / "answers.csv"
    bad.write_text(
        "item,worker,label\n"
        + "isbook-missing,,book\n"
        + f"{json.loads((isbook_project / 'items.jsonl').read_text().splitlines()[0])['id']},w1,novel\n",
        encoding="utf-8",
    )
    from duolabel.simulate import simulate_project

    with Project.open(isbook_project) as project, pytest.raises(DataError) as caught:
        simulate_project(project, bad)
    text = str(caught.value)
    assert "answers.csv, row 2, column 'worker': missing worker" in text
    assert "answers.csv, row 3, column 'label': got 'novel'" in text
    result = cli("simulate", str(isbook_project), "--answers", str(bad))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    with Project.open(isbook_project) as project, pytest.raises(DataError):
        simulate_project(project, tmp_path / "missing.jsonl")


def test_simulate_needs_a_calibrated_project(tmp_path: Path):
    from tests.conftest import write_project

    with Project.open(write_project(tmp_path / "empty")) as project, pytest.raises(ProjectError):
        from duolabel.simulate import simulate_project

        simulate_project(project, tmp_path / "a.jsonl")
