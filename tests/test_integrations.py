"""Integrations (issue 17 item 4): Label Studio's JSON export in and out, Hugging Face
``datasets`` in and out, and the project's tables as pandas frames. Every test works on a real
store (and the round trips on PostgreSQL too) with real ``datasets`` objects."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value, load_from_disk
from sqlalchemy import func, select

from duolabel import Project
from duolabel.errors import DataError, ProjectError
from duolabel.store import Annotation, Item, Prediction
from tests.test_predictions import LABELS, _model, cli, make_project, predictions_file

FROM = "label"


def _labelled(tmp_path: Path, database_url: str | None) -> Path:
    """A project that ran the whole loop on an outside model's predictions: final labels
    from the model and pending items for people, golden and control items."""
    folder = make_project(tmp_path / "source", database_url)
    with Project.open(folder) as project:
        project.import_data()
        project.import_predictions(predictions_file(tmp_path / "gpt.csv", _model()), labeler="gpt")
    code, output = cli("run", str(folder))
    assert code == 0, output
    return folder


def _fresh(folder: Path, database_url: str | None) -> Path:
    folder.mkdir()
    config: dict[str, object] = {
        "task": {"labels": [{"name": n, "description": f"about {n}"} for n in LABELS]},
        "labeler": [{"backend": "external", "name": "gpt"}],
    }
    if database_url:
        config["database_url"] = database_url
    (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def _second_database(request: pytest.FixtureRequest, database_url: str | None) -> str | None:
    """Another empty database on the same server as ``database_url`` (None: SQLite)."""
    if database_url is None:
        return None
    from tests.pg import create_database

    return create_database(request.getfixturevalue("pg_base_url"), f"{database_url.rsplit('/', 1)[1]}_b")


def test_label_studio_export_round_trips_into_a_fresh_project(tmp_path, database_url, request):
    source = _labelled(tmp_path, database_url)
    out = tmp_path / "tasks.json"
    code, output = cli("export", str(out), "-p", str(source), "--format", "label-studio", "--include-pending")
    assert code == 0, output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    with Project.open(source) as project:
        items = project.to_pandas("items")
        final = project.to_pandas("final").set_index("id")
        predictions = project.to_pandas("predictions")
        version = project.status().model_version
    assert [t["data"]["id"] for t in tasks] == list(items["id"])
    first = next(t for t in tasks if t["data"]["id"] in final.index and "predictions" in t)
    # The shape Label Studio reads: a choices result from the "label" control to the "text" object.
    (result,) = first["predictions"][0]["result"]
    assert result == {
        "from_name": FROM,
        "to_name": "text",
        "type": "choices",
        "value": {"choices": [final.loc[first["data"]["id"], "model_label"]]},
    }
    assert first["predictions"][0]["model_version"] == version
    assert 0.5 <= first["predictions"][0]["score"] <= 1
    assert first["meta"]["duolabel"]["final"]["source"] == final.loc[first["data"]["id"], "source"]
    assert first["annotations"][0]["result"][0]["value"]["choices"] == [
        final.loc[first["data"]["id"], "label"]
    ]
    pending = [t for t in tasks if "annotations" not in t]
    assert pending and all(t["data"]["id"] not in final.index for t in pending)

    target = _fresh(tmp_path / "target", _second_database(request, database_url))
    code, output = cli("import", str(out), "-p", str(target), "--labeler", "gpt")
    assert code == 0, output
    # The labels the model gave are no person's answers (an independent tester saw them all
    # imported, and paid for, as human answers); the final labels people made come as answers.
    by_people = final[final["source"] != "model"]
    assert 0 < len(by_people) < len(final)
    assert f"{len(tasks)} new items" in output and f"{len(by_people)} new answers" in output, output
    assert f"{len(final) - len(by_people)} labels the model gave (a duolabel export) not taken" in output
    with Project.open(target) as project:
        # Same items (their text and fields), people's final labels as answers, the same predictions.
        again = project.to_pandas("items")
        assert list(again["id"]) == list(items["id"])
        assert list(again["text"]) == list(items["text"])
        answers = project.to_pandas("answers").set_index("item")
        assert answers["label"].to_dict() == by_people["label"].to_dict()
        assert set(answers["worker"]) == {"label-studio"}
        theirs = project.to_pandas("predictions").set_index("id")
    ours = predictions[predictions["model_version"] == version].set_index("id")
    assert set(theirs.index) == set(ours.index)
    columns = [f"p_{n}" for n in LABELS]
    pd.testing.assert_frame_equal(theirs.loc[ours.index, columns], ours[columns], atol=1e-9)
    # Importing the same file again changes nothing.
    code, output = cli("import", str(out), "-p", str(target), "--labeler", "gpt")
    assert code == 0 and "0 new items" in output and "0 new answers" in output, output
    assert "already imported" in output


def _label_studio_export() -> list[dict]:
    """Tasks as Label Studio itself exports them: its own task ids, users by id, lead times,
    a cancelled annotation, an annotation of another control, predictions with scores."""

    def choice(label: str, **extra: object) -> dict:
        return {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [label]},
            **extra,
        }

    comment = {"from_name": "note", "to_name": "text", "type": "textarea", "value": {"text": ["hm"]}}
    return [
        {
            "id": 101,
            "data": {"review": "Great read, a page turner.", "lang": "en"},
            "annotations": [
                {"completed_by": 3, "lead_time": 4.5, "result": [choice("book"), comment]},
                {"completed_by": {"id": 4, "email": "ana@example.org"}, "result": [choice("book")]},
                {"completed_by": 5, "was_cancelled": True, "result": []},
            ],
            "predictions": [{"model_version": "bert-1", "score": 0.9, "result": [choice("book")]}],
        },
        {
            "id": 102,
            "data": {"review": "The blender broke in a week.", "lang": "en"},
            "annotations": [{"completed_by": 3, "lead_time": 2, "result": [comment]}],
            "predictions": [{"model_version": "bert-1", "result": [choice("not_book", score=0.7)]}],
        },
    ]


def test_a_label_studio_export_imports_items_answers_and_predictions(tmp_path):
    path = tmp_path / "project-1-at-2026.json"
    # A prediction with no choice is an abstention: people decide the item.
    unsure = {
        "id": 103,
        "data": {"review": "A lamp."},
        "predictions": [{"model_version": "bert-1", "result": []}],
    }
    path.write_text(json.dumps([*_label_studio_export(), unsure]), encoding="utf-8")
    with Project.open(_fresh(tmp_path / "p", None)) as project:
        result = project.import_file(path, columns={"review": "text"}, labeler="gpt")
        assert (result.tasks, result.items.added, result.answers.added) == (3, 3, 2)
        assert result.annotations_skipped == 2  # the cancelled one and the comment-only one
        assert (result.predictions.added, result.predictions.abstained) == (3, 1)
        items = project.to_pandas("items").set_index("id")
        assert items.loc["101", "text"] == "Great read, a page turner." and items.loc["101", "lang"] == "en"
        answers = project.to_pandas("answers")
        assert sorted(
            zip(answers["item"], answers["worker"], answers["seconds"].fillna(-1), strict=True)
        ) == [
            ("101", "ana@example.org", -1),
            ("101", "label-studio:3", 4.5),
        ]
        predictions = project.to_pandas("predictions").set_index("id")
        # label + score is the confidence form: the rest spread over the other labels.
        assert predictions.loc["101", "p_book"] == pytest.approx(0.9)
        assert predictions.loc["102", "p_not_book"] == pytest.approx(0.7)


def test_a_bad_label_studio_export_names_task_and_field_and_stores_nothing(tmp_path):
    tasks = _label_studio_export()
    tasks[0]["annotations"][0]["result"][0]["value"]["choices"] = ["bok"]
    tasks[1]["predictions"][0]["result"][0].pop("score")
    tasks.append({"id": 103, "data": "just text"})
    answer = {"completed_by": [1], "result": tasks[0]["annotations"][1]["result"]}
    tasks.append({"id": 104, "data": {"review": "ok"}, "annotations": [answer]})
    tasks.append({"id": 105, "data": {"title": "no review"}})  # the text field is missing
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    folder = _fresh(tmp_path / "p", None)
    with Project.open(folder) as project:
        with pytest.raises(DataError) as caught:
            project.import_file(path, columns={"review": "text"}, labeler="gpt")
        lines = str(caught.value).splitlines()
        assert lines == [
            f"{path}, task 1, field 'annotations[0].result': got 'bok', expected one of 'book', 'not_book'",
            f"{path}, task 2, field 'predictions[0].score': no score, "
            "expected the probability of its choice, in [0, 1]",
            f"{path}, task 3, field 'data': got a JSON string, expected an object with the item's fields",
            f"{path}, task 4, field 'annotations[0].completed_by': got [1], expected a user id",
            f"{path}, task 5, field 'data.review': missing field",
            "Nothing was imported.",
        ]
        with project.store.read() as session:
            assert session.scalar(select(func.count()).select_from(Item)) == 0
            assert session.scalar(select(func.count()).select_from(Annotation)) == 0
    # An item problem the item import finds is named by task and data field too, and the CLI
    # prints it without a traceback.
    path.write_text(json.dumps([{"id": 1, "data": {"review": ""}}]), encoding="utf-8")
    code, output = cli("import", str(path), "-p", str(folder), "--map", "review=text")
    assert code == 2 and f"{path}, task 1, field 'data.review': got empty text" in output, output
    path.write_text(json.dumps({"data": {}}), encoding="utf-8")
    code, output = cli("import", str(path), "-p", str(folder))
    assert code == 2 and "got a JSON object, expected a list of tasks" in output, output


def test_label_studio_answers_alone_need_their_items(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_label_studio_export()), encoding="utf-8")
    folder = _fresh(tmp_path / "p", None)
    code, output = cli("import-answers", str(path), "-p", str(folder))
    assert code == 2 and f"{path}, task 1, field 'data': no item '101' in the project" in output, output
    with Project.open(folder) as project:
        project.add_items(pd.DataFrame({"id": ["101", "102"], "text": ["a", "b"]}))
    code, output = cli("import-answers", str(path), "-p", str(folder))
    assert code == 0 and "2 new answers" in output and "--labeler" not in output, output
    code, output = cli("import-predictions", str(path), "-p", str(folder), "--labeler", "gpt")
    assert code == 0 and "2 predictions stored" in output and "new answers" not in output, output
    # The whole export without --labeler: items and answers, and a word on the predictions left out.
    code, output = cli("import", str(path), "-p", str(_fresh(tmp_path / "q", None)), "--map", "review=text")
    assert code == 0 and "2 predictions not imported (name one with --labeler NAME)" in output, output
    code, output = cli(
        "import-predictions", str(path), "-p", str(folder), "--labeler", "gpt", "--format", "csv"
    )
    assert code == 2 and "error:" in output, output


def _emotions() -> DatasetDict:
    features = Features({"id": Value("string"), "text": Value("string"), "label": ClassLabel(names=LABELS)})
    train = Dataset.from_dict(
        {"id": ["t1", "t2", "t3"], "text": ["A novel.", "A kettle.", "Poems."], "label": [0, 1, 0]},
        features=features,
    )
    test = Dataset.from_dict(
        {"id": ["v1", "v2"], "text": ["An atlas.", "A lamp."], "label": [0, 1]}, features=features
    )
    return DatasetDict(train=train, test=test)


def test_datasets_import_from_objects_and_saved_folders(tmp_path):
    data = _emotions()
    folder = _fresh(tmp_path / "p", None)
    with Project.open(folder) as project:
        # All splits in one import, each split the items' batch; ClassLabel ids as label names.
        result = project.import_file(data, role="golden", gold_column="label")
        assert (result.rows, result.added) == (5, 5)
        items = project.to_pandas("items").set_index("id")
        assert items["batch"].to_dict() == {
            "t1": "train",
            "t2": "train",
            "t3": "train",
            "v1": "test",
            "v2": "test",
        }
        assert items.loc["t2", "gold_label"] == "not_book"
        with pytest.raises(ProjectError, match="no split 'dev'; the dataset has 'train', 'test'"):
            project.import_file(data, split="dev")
    saved = tmp_path / "saved"
    data.save_to_disk(str(saved))
    other = _fresh(tmp_path / "q", None)
    code, output = cli("import", str(saved), "-p", str(other), "--split", "test")
    assert code == 0 and "2 rows, 2 new items" in output, output
    code, output = cli("import", str(tmp_path / "tasks.csv"), "-p", str(other), "--split", "test")
    assert code == 2 and "--split applies only to a Hugging Face dataset" in output, output
    with Project.open(other) as project:
        assert set(project.to_pandas("items")["batch"]) == {"test"}
        with pytest.raises(ProjectError, match="expected a Dataset, a DatasetDict or a save_to_disk folder"):
            project.import_file(pd.DataFrame({"id": ["x"]}), fmt="hf")
        assert project.import_file(data["train"]).added == 3  # a single Dataset

    # A bad row names its split and row there; nothing of any split is imported.
    bad = DatasetDict(
        train=data["train"], test=data["test"].map(lambda r: {"text": "" if r["id"] == "v2" else r["text"]})
    )
    third = _fresh(tmp_path / "r", None)
    with Project.open(third) as project:
        with pytest.raises(DataError) as caught:
            project.import_file(bad)
        assert (
            str(caught.value).splitlines()[0]
            == "Dataset['test'], row 2, column 'text': got empty text, expected the item's text"
        )
        assert project.to_pandas("items").empty
        # A column that every split lacks is named once, with the fix.
        with pytest.raises(DataError, match=r"^Dataset, row 1, column 'id': missing column; .*--map"):
            project.import_file(DatasetDict({n: d.remove_columns("id") for n, d in data.items()}))


def test_hf_export_and_pandas_frames_match_the_csv_export(tmp_path, database_url):
    source = _labelled(tmp_path, database_url)
    csv_path, hf_path = tmp_path / "labels.csv", tmp_path / "labels_hf"
    for args in ([str(csv_path)], [str(hf_path), "--format", "hf"], [str(hf_path), "--format", "hf"]):
        code, output = cli("export", *args, "-p", str(source))
        assert code == 0, output  # the second hf export replaces the first
    exported = load_from_disk(str(hf_path)).to_pandas()
    frame = pd.read_csv(csv_path, keep_default_na=False, na_values=[""])
    assert list(exported.columns) == list(frame.columns)
    assert list(exported["id"]) == list(frame["id"]) and list(exported["label"]) == list(frame["label"])
    assert list(exported["source"]) == list(frame["source"])
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("mine")
    code, output = cli("export", str(tmp_path / "stuff"), "--format", "hf", "-p", str(source))
    assert code == 2 and "a folder that save_to_disk did not write" in output, output

    with Project.open(source) as project:
        final = project.to_pandas("final")
        predictions = project.to_pandas("predictions")
        answers = project.to_pandas("answers")
        items = project.to_pandas("items")
        with pytest.raises(ProjectError, match="expected one of 'items', 'predictions', 'answers', 'final'"):
            project.to_pandas("labels")
        with project.store.read() as session:
            stored = session.scalar(select(func.count()).select_from(Prediction))
    pd.testing.assert_frame_equal(final.reset_index(drop=True), exported, check_dtype=False)
    assert len(predictions) == stored and len(items) == 72 and answers.empty
    # A predictions frame goes back in as an external labeler's predictions, unchanged.
    # (into SQLite: what is checked is the frame, not the store)
    with Project.open(_fresh(tmp_path / "again", None)) as project:
        project.add_items(items[items["role"] != "control"][["id", "text"]])
        project.import_predictions(predictions[["id", *(f"p_{n}" for n in LABELS)]], labeler="gpt")
        back = project.to_pandas("predictions").set_index("id")
    columns = [f"p_{n}" for n in LABELS]
    pd.testing.assert_frame_equal(
        back[columns], predictions.set_index("id").loc[back.index, columns], atol=1e-9
    )


def test_label_studio_tasks_keep_several_text_fields_and_item_fields(tmp_path):
    """An item made of several text fields travels as its joined text (the only text the
    store keeps), the other text fields empty, so it reads back as the same item."""

    def project(name: str) -> Project:
        folder = _fresh(tmp_path / name, None)
        config = yaml.safe_load((folder / "duolabel.yaml").read_text(encoding="utf-8"))
        config["task"].update(text_fields=["title", "body"], id_field="key")
        (folder / "duolabel.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        return Project.open(folder)

    items = pd.DataFrame(
        {"key": ["a", "b"], "title": ["Dune", "Kettle"], "body": ["A novel.", None], "shelf": [3, 4]}
    )
    path = tmp_path / "tasks.json"
    with project("one") as source:
        source.add_items(items)
        assert source.export(path, include_pending=True) == 2
        before = source.to_pandas("items")
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert tasks[0]["data"] == {"key": "a", "title": "Dune\n\nA novel.", "body": "", "shelf": 3}
    with project("two") as target:
        assert target.import_file(path).items.added == 2
        # The same items; the batch is the import's (the file's name), as for any file.
        again = target.to_pandas("items")
        pd.testing.assert_frame_equal(again.drop(columns="batch"), before.drop(columns="batch"))
    assert list(before.columns[:4]) == ["key", "title", "body", "shelf"]
    # A frame of items goes back in as it is.
    with project("three") as third:
        assert third.add_items(before[["key", "title", "body", "shelf"]]).added == 2


@pytest.mark.parametrize("name, fmt", [("tasks.json", None), ("dataset", "hf")])
def test_synthetic_items_are_refused_by_the_label_studio_and_hf_exports(tmp_path, name, fmt):
    # Synthetic items are flagged in a column only the flat formats have: the other formats
    # say so, instead of failing on an option they do not take.
    refused = pytest.raises(DataError, match="--include-synthetic writes CSV, JSONL or Parquet")
    with Project.open(make_project(tmp_path / "p")) as project, refused as error:
        project.export(tmp_path / name, fmt=fmt, include_synthetic=True)
    assert "Nothing was exported." in str(error.value) and not (tmp_path / name).exists()
