"""The learning loop on a real project (the bundled example, the real embedding model):
golden suggestions, the round trip through a file, the queue order and the stopping rule;
and migration 0007 on both stores."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from alembic import command
from sqlalchemy import select, text
from typer.testing import CliRunner

from duolabel import Project
from duolabel.cli import app
from duolabel.core.learning import CurvePoint, label_payoff
from duolabel.errors import DuolabelError, ProjectError
from duolabel.labelers import TextItem, encoder_for
from duolabel.people.accounts import add_annotator
from duolabel.people.experts import expert_queue_counts
from duolabel.people.leases import lease_task
from duolabel.stages.learn import GOLD_COLUMN, _distributions, buy_golden, order_queue, suggest_golden
from duolabel.store import ExpertTask, Item, Route, open_store
from duolabel.store import _migrations_config as migrations_config
from duolabel.training_data import golden_items
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def routed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example labelled, calibrated and routed (queue ordered) once."""
    folder = tmp_path_factory.mktemp("learning") / "support_tickets"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("duolabel.db*", "out"))
    with Project.open(folder) as project:
        project.import_data()
        project.label()
        project.calibrate()
        project.route()
    return folder


@pytest.fixture
def example(routed_example: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "support_tickets"
    shutil.copytree(routed_example, folder)
    return folder


def open_golden_tasks(project: Project) -> list[str]:
    with project.store.read() as session:
        return list(
            session.scalars(
                select(ExpertTask.item_id).where(ExpertTask.reason == "golden", ExpertTask.state == "open")
            )
        )


def test_suggest_queues_the_most_uncertain_regular_items_once(example: Path) -> None:
    with Project.open(example) as project:
        first = suggest_golden(project, 5)
        assert first.strategy == "margin" and first.queued == 5 and len(first.items) == 5
        with project.store.read() as session:
            roles = set(session.scalars(select(Item.role).where(Item.id.in_(first.items))))
            pool = list(session.scalars(select(Item.id).where(Item.role == "regular")))
        assert roles == {"regular"}
        # margin: no regular item the model predicted has a smaller top-two margin than the picks
        dists = _distributions(project, project.status().model_version, pool)
        margin = {i: float(np.diff(np.sort(d)[-2:])[0]) for i, d in dists.items()}
        assert max(margin[i] for i in first.items) <= min(
            v for i, v in margin.items() if i not in first.items
        )
        second = suggest_golden(project, 5)
        assert second.queued == 5 and not set(first.items) & set(second.items)
        assert sorted(open_golden_tasks(project)) == sorted(first.items + second.items)
        assert expert_queue_counts(project.store)["golden"] == 10
        with pytest.raises(ProjectError, match="must be positive, got 0"):
            suggest_golden(project, 0)


def test_unknown_strategy_names_the_known_ones(example: Path) -> None:
    path = example / "duolabel.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["learning"] = {"strategy": "clever"}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = runner.invoke(app, ["golden", "suggest", "3", "-p", str(example)])
    # main() prints a DuolabelError as one line (exit 2); the runner calls the app under it
    assert isinstance(result.exception, DuolabelError)
    message = str(result.exception)
    assert "learning.strategy" in message and "'clever'" in message and "'margin'" in message


def test_kcenter_suggestions_start_farthest_from_what_the_model_learned_from(example: Path) -> None:
    path = example / "duolabel.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["learning"] = {"strategy": "kcenter"}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(example) as project:
        picked = suggest_golden(project, 3)
        assert picked.strategy == "kcenter"
        encoder = encoder_for(project)
        golden = encoder.encode(golden_items(project)[0])[0]
        with project.store.read() as session:
            pool = [
                TextItem(r.id, r.text, r.content_hash)
                for r in session.execute(
                    select(Item.id, Item.text, Item.content_hash).where(
                        Item.role == "regular", Item.id.not_in(picked.items[1:])
                    )
                )
            ]
        vectors = encoder.encode(pool)[0]
        # k-center greedy covers the pool away from the golden items: its first pick is the
        # pool item farthest from all of them (a start without them is the pool's centre).
        nearest = np.min(np.linalg.norm(vectors[:, None, :] - golden[None, :, :], axis=2), axis=1)
        assert pool[int(np.argmax(nearest))].id == picked.items[0]


def test_export_fill_and_import_back_makes_items_golden(example: Path, tmp_path: Path) -> None:
    out = tmp_path / "suggested.csv"
    result = runner.invoke(app, ["golden", "suggest", "4", "-p", str(example), "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert f"--gold {GOLD_COLUMN}" in result.output
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4 and all(row[GOLD_COLUMN] == "" for row in rows)
    with Project.open(example) as project:
        assert open_golden_tasks(project) == []  # exported, not queued
        routed = {r["id"] for r in rows} & set(_routes(project))
        assert routed  # the most uncertain items were waiting for people
    for row in rows:
        row[GOLD_COLUMN] = "billing"
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(
        app, ["import", str(out), "-p", str(example), "--role", "golden", "--gold", GOLD_COLUMN]
    )
    assert result.exit_code == 0, result.output
    assert "0 new items" in result.output and "4 made golden" in result.output
    with Project.open(example) as project, project.store.read() as session:
        items = session.scalars(select(Item).where(Item.id.in_([r["id"] for r in rows]))).all()
        assert {(i.role, i.gold_label) for i in items} == {("golden", "billing")}
        assert not routed & set(_routes(project))  # out of the people's queue


def test_formula_like_text_is_defused_and_still_imports_back(example: Path, tmp_path: Path) -> None:
    with Project.open(example) as project:
        with project.store.write() as session:
            session.add(Item(id="f1", seq=10_000, text="=HYPERLINK(1)", content_hash="x"))
        # the hash an import would compute, so the item is "already in the project"
        from duolabel.io import content_hash

        with project.store.write() as session:
            session.get(Item, "f1").content_hash = content_hash("=HYPERLINK(1)", {}, "regular", None)
        out = tmp_path / "f.csv"
        from duolabel.stages.learn import _write_suggestions

        _write_suggestions(project, out, "csv", ["f1"])
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["text"] == "'=HYPERLINK(1)"
    rows[0][GOLD_COLUMN] = "account"
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with Project.open(example) as project:
        result = project.import_file(out, role="golden", gold_column=GOLD_COLUMN)
        assert result.promoted == 1
        with project.store.read() as session:
            assert session.get(Item, "f1").gold_label == "account"


def _routes(project: Project) -> dict[str, Route]:
    with project.store.read() as session:
        return {r.item_id: r for r in session.scalars(select(Route))}


def test_people_get_the_most_useful_items_first(example: Path) -> None:
    with Project.open(example) as project:
        routes = {i: r for i, r in _routes(project).items() if r.decision == "humans"}
        assert len(routes) >= 5
        dists = _distributions(project, project.status().model_version, list(routes))
        margin = {i: float(np.diff(np.sort(d)[-2:])[0]) for i, d in dists.items()}
        # positions are the same set as import order, handed out by margin (smallest first)
        with project.store.read() as session:
            seqs = dict(session.execute(select(Item.id, Item.seq).where(Item.id.in_(list(routes)))).all())
        assert sorted(r.position for r in routes.values()) == sorted(seqs.values())
        by_position = sorted(routes, key=lambda i: routes[i].position)
        assert [margin[i] for i in by_position] == sorted(margin[i] for i in by_position)
        assert by_position != sorted(routes, key=seqs.get)  # the order did change
        alice = add_annotator(project.store, "alice", "a long password").id
        assert lease_task(project.store, alice, lease_minutes=15).item.id == by_position[0]
        # ordering again moves nothing already given to someone
        assert order_queue(project) == len(routes) - 1
        assert _routes(project)[by_position[0]].position == routes[by_position[0]].position


def test_status_says_whether_more_golden_items_pay_off(example: Path) -> None:
    result = runner.invoke(app, ["status", str(example)])
    assert result.exit_code == 0, result.output
    assert "Learning (margin): more golden items would" in result.output
    assert "per expert label" in result.output
    assert "kappa" in result.output or "no two model versions" in result.output


def test_payoff_turns_on_price() -> None:
    points = [CurvePoint(n, 0.5 + 0.1 * np.log(n / 50), 0, 1, 0.5, 0, 1) for n in (50, 100, 200)]
    cheap = label_payoff([], points, items_left=10_000, saving_per_item=0.3, price_per_label=1.0)
    dear = label_payoff([], points, items_left=10_000, saving_per_item=0.3, price_per_label=2.0)
    assert cheap.pays_off and not dear.pays_off and "would not pay off" in dear.describe()
    stable = label_payoff([[0, 1]] * 3, points, items_left=10_000, saving_per_item=0.3, price_per_label=1.0)
    assert not stable.pays_off and "have stabilised" in stable.describe()


def _configure(folder: Path, **sections: dict[str, object]) -> None:
    path = folder / "duolabel.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    for name, values in sections.items():
        config[name] = {**config.get(name, {}), **values}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


def test_buying_golden_items_tops_up_the_experts_queue_while_it_pays_off(example: Path) -> None:
    with Project.open(example) as project:
        assert buy_golden(project) is None  # off by default
    # An expert label far cheaper than what one more label saves on people: it pays off.
    _configure(example, learning={"buy_golden": 4}, costs={"expert_answer": 0.001})
    with Project.open(example) as project:
        assert project.learning().payoff.pays_off
        bought = buy_golden(project)
        assert bought is not None and len(bought.items) == 4 and bought.already_open == 0
        assert "4 items the model labels alone queued for experts (margin)" in bought.describe()
        assert "more golden items would pay off" in bought.describe()
        assert sorted(open_golden_tasks(project)) == sorted(bought.items)
        # outside the people's queue: items routing left to the model, the least sure of them
        routes = _routes(project)
        accepted = [i for i, r in routes.items() if r.decision == "accept"]
        assert {routes[i].decision for i in bought.items} == {"accept"}
        dists = _distributions(project, project.status().model_version, accepted)
        margin = {i: float(np.diff(np.sort(d)[-2:])[0]) for i, d in dists.items()}
        assert max(margin[i] for i in bought.items) <= min(
            v for i, v in margin.items() if i not in bought.items
        )
        # open golden tasks count: a second call tops up to 4, it does not pile on
        again = buy_golden(project)
        assert again is not None and again.items == [] and again.already_open == 4
        assert "4 golden items still wait for experts, none added" in again.describe()
        assert expert_queue_counts(project.store)["golden"] == 4
    _configure(example, learning={"buy_golden": 6}, costs={"expert_answer": 1000.0})
    with Project.open(example) as project:
        dear = buy_golden(project)
        assert dear is not None and dear.items == [] and "would not pay off" in dear.describe()
        assert expert_queue_counts(project.store)["golden"] == 4
    # Routing that leaves nothing to the model alone leaves nothing to buy, and says so.
    _configure(example, costs={"expert_answer": 0.001}, routing={"mode": "fixed", "threshold": 1.0})
    with Project.open(example) as project:
        project.route()
        assert "accept" not in {r.decision for r in _routes(project).values()}
        none_left = buy_golden(project)
        assert none_left is not None and none_left.items == [] and none_left.already_open == 4
        assert "nothing queued for experts: routing leaves no item to the model alone" in none_left.describe()


def test_run_buys_golden_items_and_says_so(example: Path) -> None:
    _configure(example, learning={"buy_golden": 3}, costs={"expert_answer": 0.001})
    result = runner.invoke(app, ["run", str(example)])
    assert result.exit_code == 0, result.output
    assert "Golden items: 3 items the model labels alone queued for experts (margin); more golden " in (
        " ".join(result.output.split())
    )
    with Project.open(example) as project:
        assert len(open_golden_tasks(project)) == 3
    status = runner.invoke(app, ["status", str(example)])
    assert status.exit_code == 0, status.output
    assert "│ open expert tasks: golden │ 3 │" in " ".join(status.output.split())


def test_migration_0007_keeps_the_import_order(tmp_path: Path, database_url: str | None) -> None:
    store = open_store(database_url, tmp_path)
    cfg = migrations_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (kind, status, config, started_at, usage, cost) "
                "VALUES ('route', 'done', '{}', '2026-01-01', '{}', 0)"
            )
        )
        for seq, item_id in ((7, "b"), (3, "a")):
            conn.execute(
                text(
                    "INSERT INTO items (id, seq, text, fields, content_hash, batch, role, created_at) "
                    "VALUES (:id, :seq, 't', '{}', 'h', 'x', 'regular', '2026-01-01')"
                ),
                {"id": item_id, "seq": seq},
            )
            conn.execute(
                text(
                    "INSERT INTO routes (item_id, decision, overlap, policy_version, run_id, created_at) "
                    "VALUES (:id, 'humans', 1, 'v', (SELECT min(id) FROM runs), '2026-01-01')"
                ),
                {"id": item_id},
            )
    store.close()
    store = open_store(database_url, tmp_path)  # upgrades to head
    with store.read() as session:
        assert dict(session.execute(select(Route.item_id, Route.position)).all()) == {"a": 3, "b": 7}
    store.close()


def test_report_shows_the_learning_curve_and_strategy(example: Path, tmp_path: Path) -> None:
    from duolabel.report import write_report

    with Project.open(example) as project:
        html = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<h2>Learning curve</h2>" in html and "<strong>margin</strong>" in html
    assert "interval (Wilson)" in html and "more golden items would" in html


def test_status_reads_what_was_measured_when_the_model_was_trained(example: Path, monkeypatch) -> None:
    # status must stay fast: no encoder, no refitting; the curve was recorded at calibration.
    import duolabel.labelers
    import duolabel.stages.learn

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("status refitted the learning curve")

    monkeypatch.setattr(duolabel.stages.learn, "learning_curve", refuse)
    monkeypatch.setattr(duolabel.labelers, "encoder_for", refuse)
    result = runner.invoke(app, ["status", str(example)])
    assert result.exit_code == 0, result.output
    assert "Learning (margin): more golden items would" in result.output
    with Project.open(example) as project:
        learning = project.learning()
        assert learning is not None and learning.curve and learning.compared == learning.stop_set
        assert learning.model.startswith("labeler 'embedding'")


def test_the_curve_of_another_labeler_is_called_a_proxy() -> None:
    from types import SimpleNamespace

    from duolabel.config import parse_config
    from duolabel.stages.learn import curve_model

    task = {"labels": [{"name": "a"}, {"name": "b"}]}
    llm = {"backend": "openai", "name": "llm", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
    ctx = SimpleNamespace(config=parse_config({"task": task, "labeler": llm}))
    assert curve_model(ctx) == "embedding head on the same labels (a proxy for 'llm')"  # type: ignore[arg-type]
    ctx = SimpleNamespace(config=parse_config({"task": task}))
    assert curve_model(ctx).startswith("labeler 'embedding'")  # type: ignore[arg-type]


def _student_won(project: Project, folder: Path) -> str:
    """Make the example a distilling project whose student (the example's own embedding
    labeler, under the same name) has won over an LLM teacher; returns the student's version."""
    from duolabel.core.distillation import decide_distillation
    from duolabel.stages.distill import _settings
    from duolabel.store import Run

    student = project.status().model_version
    path = folder / "duolabel.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config["labeler"] = {
        "backend": "openai",
        "name": "llm",
        "model": "m",
        "base_url": "http://127.0.0.1:9/v1",
    }
    config["distill"] = {"teacher": "llm", "student": {"backend": "embedding", "name": "embedding"}}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with Project.open(folder) as changed, changed.store.write() as session:
        decision = decide_distillation(
            np.ones(60, bool), np.ones(60, bool), student_cost_per_item=0.0, teacher_cost_per_item=1.0
        )
        teacher = {"labeler_name": "llm", "model_version": "teacher-v"}
        session.add(Run(kind="label", status="done", config=teacher))
        session.add(
            Run(
                kind="distill",
                status="done",
                config={**_settings(changed), "key": "k", "teacher_version": "teacher-v"},
                usage={
                    **decision.as_dict(),
                    "student": "embedding",
                    "student_version": student,
                    "taught": 0,
                    "golden_items": 60,
                },
            )
        )
    return str(student)


def test_after_a_switch_the_report_simulate_and_dashboard_show_the_student(
    example: Path, tmp_path: Path
) -> None:
    from duolabel.report import write_report
    from duolabel.simulate import simulate_project
    from duolabel.web.dashboard import dashboard_table

    with Project.open(example) as project:
        student = _student_won(project, example)
    with Project.open(example) as project:
        assert project.status().labeling.startswith("embedding labels: the student labels")
        html = write_report(project, tmp_path / "report.html").read_text(encoding="utf-8")
        assert student in html and "teacher-v" not in html
        assert "labeler &#39;embedding&#39; (its logistic head" in html
        model = dict(dashboard_table(project, "model").itertuples(index=False))
        assert model["labeler"] == "embedding" and model["model version"] == student
        assert model["why"].startswith("embedding labels")
        # simulate replays the student's calibrated predictions: known labels and answers for 20 items
        with project.store.write() as session:
            items = session.scalars(select(Item).where(Item.role == "regular").order_by(Item.seq).limit(20))
            replay = [(item.id, "billing") for item in items]
            for item in session.scalars(select(Item).where(Item.id.in_([i for i, _ in replay]))):
                item.gold_label = "billing"
        answers = tmp_path / "answers.jsonl"
        answers.write_text(
            "".join(
                f'{{"item_id": "{i}", "annotator": "w{w}", "label": "{label}"}}\n'
                for i, label in replay
                for w in range(3)
            ),
            encoding="utf-8",
        )
        result = simulate_project(project, answers)
        assert result.rows


def test_after_a_switch_golden_suggestions_rank_the_students_labels(example: Path) -> None:
    with Project.open(example) as project:
        student = _student_won(project, example)
    with Project.open(example) as project:
        suggestion = project.suggest_golden(3)
        # the student's distributions, not a cold start for want of the teacher's
        assert suggestion.strategy == "margin" and len(suggestion.items) == 3
        dists = _distributions(project, student, list(suggestion.items))
        assert set(dists) == set(suggestion.items)
