"""Spans in and out of Label Studio: ``labels`` regions become span answers (checked against
the task's text), final span lists become regions again, and an export reads back the same."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from duolabel.core.spans import spans_json
from duolabel.errors import DataError
from duolabel.integrations.label_studio import import_label_studio, label_config
from duolabel.store import Annotation, FinalLabel
from tests.test_spans import spans_project

TEXT = "Alice met Bob in Paris"


def region(start: int, end: int, *labels: str) -> dict:
    value = {"start": start, "end": end, "text": TEXT[start:end], "labels": list(labels)}
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}


def export(annotations: list[tuple[int, list[dict]]]) -> list[dict]:
    return [
        {
            "id": 7,
            "data": {"id": "t1", "text": TEXT},
            "annotations": [{"completed_by": who, "result": result} for who, result in annotations],
        }
    ]


def test_label_studio_regions_become_span_answers_and_aggregate(tmp_path: Path):
    path = tmp_path / "export.json"
    both = [region(0, 5, "PER"), region(10, 13, "PER"), region(17, 22, "LOC")]
    path.write_text(
        json.dumps(export([(1, both), (2, both[:2]), (3, [region(0, 5, "PER", "LOC")]), (4, [])])),
        encoding="utf-8",
    )
    with spans_project(tmp_path / "p") as project:
        result = import_label_studio(project, path)
        assert result.answers is not None and result.annotations_skipped == 0
        with project.store.read() as session:
            stored = sorted(session.scalars(select(Annotation.label)))
        assert stored == sorted(
            [
                spans_json([(0, 5, "PER"), (10, 13, "PER"), (17, 22, "LOC")]),
                spans_json([(0, 5, "PER"), (10, 13, "PER")]),
                spans_json([(0, 5, "LOC"), (0, 5, "PER")]),  # a region with two labels: two spans
                "[]",  # no region: nothing marked
            ]
        )
        project.aggregate()
        with project.store.read() as session:
            final = session.scalars(select(FinalLabel.label)).one()
        # Alice: PER 3 of 4 (B-LOC 1 loses); Bob: PER 2 of 4 ties with O; Paris: LOC 1 of 4
        assert final == spans_json([(0, 5, "PER")])

        out = tmp_path / "out.json"
        project.export(out, fmt="label-studio")
        task = json.loads(out.read_text(encoding="utf-8"))[0]
        assert task["annotations"][0]["result"] == [region(0, 5, "PER")]

    # the export reads back into a fresh project: the final list is that project's answer
    with spans_project(tmp_path / "q") as fresh:
        import_label_studio(fresh, out)
        with fresh.store.read() as session:
            assert session.scalars(select(Annotation.label)).all() == [spans_json([(0, 5, "PER")])]


def test_a_region_past_the_text_or_with_an_unknown_label_is_named_and_nothing_is_stored(tmp_path: Path):
    path = tmp_path / "export.json"
    past = {**region(17, 22, "LOC"), "value": {"start": 17, "end": 40, "labels": ["LOC"]}}
    path.write_text(json.dumps(export([(1, [past]), (2, [region(0, 5, "PERSON")])])), encoding="utf-8")
    with spans_project(tmp_path / "p") as project:
        with pytest.raises(DataError) as caught:
            import_label_studio(project, path)
        text = str(caught.value)
        assert (
            "task 1, field 'annotations[0].result'" in text
            and "a span inside the item's text (end <= 22" in text
        )
        assert "annotations[1].result': got 'PERSON', expected a list of spans" in text
        assert project.status().items == 0


def test_the_label_config_for_spans_has_a_labels_control():
    from duolabel.config import parse_config

    task = parse_config({"task": {"type": "spans", "labels": [{"name": "PER"}, {"name": "LOC"}]}}).task
    config = label_config(task)
    assert '<Labels name="label" toName="text">' in config and '<Label value="LOC"/>' in config
    assert "Choices" not in config


def test_a_hf_dataset_with_span_structs_imports_and_exports_with_n_spans(tmp_path: Path):
    pytest.importorskip("datasets", reason="pip install 'duolabel[hf]'")
    from datasets import Dataset, load_from_disk

    from duolabel.store import Item
    from tests.test_spans import write_jsonl

    rows = [
        {
            "id": "a",
            "text": TEXT,
            "gold": [{"start": 17, "end": 22, "label": "LOC"}, {"start": 0, "end": 5, "label": "PER"}],
        },
        {"id": "b", "text": "nothing to see", "gold": []},
    ]
    with spans_project(tmp_path / "p") as project:
        project.import_file(Dataset.from_list(rows), role="golden", gold_column="gold", fmt="hf")
        with project.store.read() as session:
            gold = dict(session.execute(select(Item.id, Item.gold_label)).all())
        assert gold == {"a": spans_json([(0, 5, "PER"), (17, 22, "LOC")]), "b": "[]"}
        project.add_items(pd.DataFrame({"id": ["c"], "text": [TEXT]}))
        answer = [{"start": 0, "end": 5, "label": "PER"}]
        write_jsonl(tmp_path / "a.jsonl", [{"item": "c", "worker": w, "label": answer} for w in "xy"])
        project.import_answers(tmp_path / "a.jsonl")
        project.aggregate()
        project.export(tmp_path / "hf", fmt="hf")
        exported = load_from_disk(str(tmp_path / "hf"))[0]
    assert json.loads(exported["label"]) == answer and exported["n_spans"] == 1


def test_a_hf_token_classification_dataset_imports_as_text_and_gold_spans(tmp_path: Path):
    pytest.importorskip("datasets", reason="pip install 'duolabel[hf]'")
    from datasets import ClassLabel, Dataset, Features, List, Value

    from duolabel.store import Item

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    features = Features(
        {"id": Value("string"), "tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=names))}
    )
    data = Dataset.from_dict(
        {
            "id": ["s1", "s2"],
            "tokens": [["EU", "rejects", "German", "call"], ["Peter", "Blackburn", "Peter"]],
            "ner_tags": [[3, 0, 7, 0], [1, 2, 1]],  # the last Peter: a new span (B-) after I-PER
        },
        features=features,
    )
    with spans_project(tmp_path / "p") as project:
        project.import_file(data, role="golden", gold_column="ner_tags", fmt="hf")
        with project.store.read() as session:
            rows = {i.id: (i.text, i.gold_label, i.fields) for i in session.scalars(select(Item))}
    assert rows["s1"][:2] == ("EU rejects German call", spans_json([(0, 2, "ORG"), (11, 17, "MISC")]))
    assert rows["s2"][:2] == ("Peter Blackburn Peter", spans_json([(0, 15, "PER"), (16, 21, "PER")]))
    assert "tokens" not in rows["s1"][2]  # the words are the text now
