from __future__ import annotations

import pytest
import yaml

from duolabel import ConfigError, init_project
from duolabel.config import load_config, parse_config, render_config, settings_reference

BASE = {"task": {"labels": [{"name": "a"}, {"name": "b"}]}}


def with_(**sections) -> dict:
    return {**BASE, **sections}


def one_line(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_misspelt_key_names_the_key_and_the_allowed_ones():
    message = one_line(with_(routing={"treshold": 0.8}))
    assert "unknown key 'routing.treshold'" in message
    assert "threshold" in message.split("allowed here:")[1]


def test_bad_value_names_key_value_and_what_is_allowed():
    message = one_line(with_(routing={"threshold": 1.5}))
    assert "key 'routing.threshold': got 1.5, expected less than or equal to 1" in message
    message = one_line(with_(labeler={"backend": "gpt"}))
    allowed = "'embedding', 'finetune', 'setfit', 'llama', 'openai'"
    assert f"key 'labeler.0.backend': got 'gpt', expected one of {allowed}" in message
    message = one_line(with_(labeler={"backend": "llama", "nctx": 512}))
    assert "unknown key 'labeler.0.nctx'" in message and "n_ctx" in message


def test_labels_must_be_unique_and_at_least_two():
    assert "listed twice" in one_line({"task": {"labels": [{"name": "a"}, {"name": "a"}]}})
    assert "at least 2 items" in one_line({"task": {"labels": [{"name": "a"}]}})


def test_golden_data_source_needs_a_gold_column():
    assert "has role golden but no gold_column" in one_line(with_(data=[{"path": "g.csv", "role": "golden"}]))


def test_missing_file_and_bad_yaml_are_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="duolabel init"):
        load_config(tmp_path)
    (tmp_path / "duolabel.yaml").write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match=r"line \d+: not valid YAML"):
        load_config(tmp_path)


def test_init_writes_a_commented_file_that_round_trips(tmp_path):
    project = init_project(tmp_path / "p", labels=["spam", "ham"])
    project.close()
    text = (tmp_path / "p" / "duolabel.yaml").read_text()
    lines = text.splitlines()
    for before, line in zip(lines, lines[1:], strict=False):
        if (
            line.strip()
            and not line.lstrip().startswith(("#", "-"))
            and not before.startswith(" " * 4 + "  ")
        ):
            assert before.lstrip().startswith(("#", "-")), f"no help comment above {line!r}"
    config = load_config(tmp_path / "p")
    assert config.task.label_names == ["spam", "ham"]
    assert parse_config(yaml.safe_load(render_config(config))) == config


def test_one_or_several_labelers():
    assert [lab.backend for lab in parse_config(BASE).labeler] == ["embedding"]
    several = parse_config(with_(labeler=[{}, {"backend": "llama", "weight": 0.5}]))
    assert [(lab.label_name, lab.weight) for lab in several.labeler] == [("embedding", 1.0), ("llama", 0.5)]
    assert "must be unique" in one_line(with_(labeler=[{}, {}]))
    assert "missing key 'labeler.0.model'" in one_line(with_(labeler={"backend": "openai"}))


def test_every_setting_has_help():
    missing = [key for key, _default, help_text in settings_reference() if not help_text]
    assert missing == []


def test_a_key_given_twice_is_an_error_naming_key_and_line(tmp_path):
    (tmp_path / "duolabel.yaml").write_text(
        "task:\n  labels: [{name: a}, {name: b}]\nrouting:\n  threshold: 0.9\nrouting:\n  threshold: 0.5\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    where = tmp_path / "duolabel.yaml"
    expected = "line 5: key 'routing' is given twice (first on line 3); keep one of them"
    assert str(info.value) == f"{where}, {expected}"
    (tmp_path / "duolabel.yaml").write_text(
        "task:\n  labels: [{name: a}, {name: b}]\n  labels: [{name: c}, {name: d}]\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="line 3: key 'labels' is given twice"):
        load_config(tmp_path)
