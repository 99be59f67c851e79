"""``duolabel init`` options and ``duolabel config set``, through the CLI as a user runs them,
and the fixed values of every setting in the YAML comments and the configuration docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from duolabel.cli import app
from duolabel.config import BACKENDS, ProjectConfig, settings_reference
from duolabel.config.render import field_choices, field_help
from duolabel.errors import DuolabelError

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args), prog_name="duolabel")
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(*args: str) -> str:
    """The message of the user error (what ``duolabel`` prints as one line, exit code 2)."""
    result = runner.invoke(app, list(args), prog_name="duolabel")
    assert isinstance(result.exception, DuolabelError), (result.output, result.exception)
    assert result.exception.exit_code == 2
    return " ".join(str(result.exception).split())


def labeler_of(folder: Path) -> dict:
    return yaml.safe_load((folder / "duolabel.yaml").read_text())["labeler"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    ok("init", str(tmp_path / "p"), "--labels", "spam,ham", "--labeler", "llama")
    return tmp_path / "p"


def test_init_writes_only_the_chosen_backends_keys(tmp_path: Path, folder: Path):
    assert set(labeler_of(folder)) == {"name", "weight", "backend", *BACKENDS["llama"].model_fields}
    assert "max_epochs" not in (folder / "duolabel.yaml").read_text()
    ok("init", str(tmp_path / "o"), "--labels", "a,b", "--labeler", "openai", "--model", "gpt-4o-mini")
    assert labeler_of(tmp_path / "o")["model"] == "gpt-4o-mini"
    why = refused("init", str(tmp_path / "x"), "--labels", "a,b", "--labeler", "openai")
    assert "--model NAME" in why and not (tmp_path / "x").exists()


def test_init_from_a_golden_file_names_file_and_column(tmp_path: Path):
    (tmp_path / "golden.csv").write_text("id,text,answer\n1,a,pos\n2,b,neg\n")
    why = refused("init", str(tmp_path / "p"), "--from", str(tmp_path / "golden.csv"))
    assert "golden.csv" in why and "'label'" in why
    ok("init", str(tmp_path / "p"), "--from", str(tmp_path / "golden.csv"), "--label-column", "answer")
    task = yaml.safe_load((tmp_path / "p" / "duolabel.yaml").read_text())["task"]
    assert [label["name"] for label in task["labels"]] == ["pos", "neg"]


def test_config_set_validates_and_rewrites(folder: Path):
    out = ok(
        "config",
        "set",
        "routing.target_accuracy",
        "0.95",
        "aggregation.method",
        "dawid_skene",
        "-p",
        str(folder),
    )
    assert "routing.target_accuracy = 0.95" in out
    written = yaml.safe_load((folder / "duolabel.yaml").read_text())
    assert written["routing"]["target_accuracy"] == 0.95
    assert written["aggregation"]["method"] == "dawid_skene"
    # Still the commented file, with the choices of the key just set.
    text = (folder / "duolabel.yaml").read_text()
    assert "# How each item's answers become its final label" in text


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["routing.target_accuracy", "1.5"], "key 'routing.target_accuracy': got 1.5"),
        (["aggregation.method", "vote"], "key 'aggregation.method': got 'vote', expected 'majority_vote'"),
        (["routing.overlapp", "2"], "unknown key 'routing.overlapp'; allowed here: policy"),
        # The first change is valid, the second is not: neither is made.
        (["routing.overlap", "2", "routing.risk", "0"], "key 'routing.risk': got 0"),
        (["routing.overlap"], "expected KEY VALUE pairs"),
    ],
)
def test_an_invalid_value_changes_nothing_and_names_the_key(folder: Path, args: list[str], named: str):
    before = (folder / "duolabel.yaml").read_bytes()
    assert named in refused("config", "set", *args, "-p", str(folder))
    assert (folder / "duolabel.yaml").read_bytes() == before


def test_switching_the_backend_drops_the_old_backends_keys(folder: Path):
    ok("config", "set", "labeler.name", "gemma", "labeler.few_shot", "2", "-p", str(folder))
    ok("config", "set", "labeler.backend", "embedding", "-p", str(folder))
    entry = labeler_of(folder)
    assert entry["backend"] == "embedding" and entry["name"] == "gemma"  # the name is kept
    assert "few_shot" not in entry and "n_ctx" not in entry
    assert set(entry) == {"name", "weight", "backend", *BACKENDS["embedding"].model_fields}
    # openai needs a model: given in the same command, or the switch is refused.
    why = refused("config", "set", "labeler.backend", "openai", "-p", str(folder))
    assert "missing key 'labeler.0.model'" in why and "in the same command" in why
    ok("config", "set", "labeler.backend", "openai", "labeler.model", "gpt-4o-mini", "-p", str(folder))
    assert labeler_of(folder)["model"] == "gpt-4o-mini"


def test_a_file_broken_by_a_hand_edit_is_mended_by_config_set(folder: Path):
    # The user changed the backend by hand: llama's keys are now unknown to embedding.
    path = folder / "duolabel.yaml"
    path.write_text(path.read_text().replace("backend: llama", "backend: embedding"))
    assert "unknown key 'labeler.0.model_path'" in refused("status", str(folder))
    ok("config", "set", "labeler.backend", "setfit", "-p", str(folder))
    assert labeler_of(folder)["backend"] == "setfit"
    ok("status", str(folder))


def test_several_labelers_are_named_by_number(tmp_path: Path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "duolabel.yaml").write_text(
        yaml.safe_dump(
            {
                "task": {"labels": [{"name": "a"}, {"name": "b"}]},
                "labeler": [{"backend": "embedding"}, {"backend": "llama"}],
            }
        )
    )
    assert "labeler has 2 entries; name one by its number, e.g. labeler.0.few_shot" in refused(
        "config", "set", "labeler.few_shot", "2", "-p", str(folder)
    )
    ok("config", "set", "labeler.1.few_shot", "2", "-p", str(folder))
    assert labeler_of(folder)[1]["few_shot"] == 2


def _settings_with_choices() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            names, _plugins = field_choices(field.annotation)
            marked = [m for m in field.metadata if hasattr(m, "names")]
            names = list(marked[0].names) if marked else names
            if len(names) > 1:
                found.append((prefix + name, names))
            listed = getattr(field.annotation, "__origin__", None) is list
            for arg in [field.annotation, *getattr(field.annotation, "__args__", ())]:
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg, f"{prefix}{name}{'[]' if listed else ''}.")

    walk(ProjectConfig, "")
    for backend, config in BACKENDS.items():
        walk(config, f"labeler ({backend}).")
    return found


def test_every_setting_with_fixed_values_lists_them_in_the_docs_and_the_file(folder: Path):
    settings = _settings_with_choices()
    keys = [key for key, _ in settings]
    # The ones the issue named, and a sample of the others, are among them.
    assert {"aggregation.method", "routing.mode", "calibration.method", "labeler (openai).endpoint"} <= set(
        keys
    )
    docs = {key: help_text for key, _default, help_text in settings_reference()}
    for key, names in settings:
        assert all(name in docs[key] for name in names), (key, names, docs[key])
    text = (folder / "duolabel.yaml").read_text()
    # The file's comments: the backends one can switch to, and e.g. the routing modes.
    assert "Backends: 'embedding', 'finetune', 'setfit', 'llama', 'openai', 'external'" in text
    routing = ProjectConfig.model_fields["routing"].annotation
    assert f"# {field_help('mode', routing.model_fields['mode'])}" in text  # type: ignore[union-attr]


def test_a_file_with_the_users_own_comments_is_kept_beside_the_rewritten_one(tmp_path: Path) -> None:
    """config set renders the file anew with duolabel's comments: an independent tester's own
    comments ("# ask Bob first") were lost without a word."""
    folder = tmp_path / "cm"
    folder.mkdir()
    mine = (
        "# ask Bob first\ntask:\n  labels:\n    - name: a  # A team\n    - name: b\n"
        "routing:\n  overlap: 2  # two people\n"
    )
    (folder / "duolabel.yaml").write_text(mine, encoding="utf-8")
    result = runner.invoke(app, ["config", "set", "routing.threshold", "0.8", "-p", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "duolabel.yaml.bak").read_text(encoding="utf-8") == mine
    assert "duolabel.yaml.bak" in " ".join(result.output.split())
    again = runner.invoke(app, ["config", "set", "routing.threshold", "0.7", "-p", str(folder)])
    assert again.exit_code == 0 and "bak" not in again.output  # duolabel's own comments only
    assert (folder / "duolabel.yaml.bak").read_text(encoding="utf-8") == mine


def test_switching_the_backend_keeps_no_copy_when_every_comment_was_duolabels(folder: Path) -> None:
    """The old backend's comments go with its keys: they were duolabel's, not the user's, so no
    "yours are not in it" and no duolabel.yaml.bak (both came after a fresh `init`)."""
    switched = runner.invoke(app, ["config", "set", "labeler.backend", "embedding", "-p", str(folder)])
    assert switched.exit_code == 0, switched.output
    assert "bak" not in switched.output and not (folder / "duolabel.yaml.bak").exists()
    text = (folder / "duolabel.yaml").read_text(encoding="utf-8")
    (folder / "duolabel.yaml").write_text("# ask Bob first\n" + text, encoding="utf-8")
    back = runner.invoke(app, ["config", "set", "labeler.backend", "finetune", "-p", str(folder)])
    assert back.exit_code == 0 and "duolabel.yaml.bak" in " ".join(back.output.split())
    assert (folder / "duolabel.yaml.bak").read_text(encoding="utf-8").startswith("# ask Bob first")


def test_a_whole_labeler_entry_by_its_number(folder: Path) -> None:
    """`labeler.0 x` once set a key named '0' inside the entry ("unknown key 'labeler.0.0'")."""
    before = (folder / "duolabel.yaml").read_text(encoding="utf-8")
    why = refused("config", "set", "labeler.0", "x", "-p", str(folder))
    assert "labeler.0: an entry of labeler is a section such as {backend: llama}, got 'x'" in why
    assert "labeler has 1 entries (numbered from 0)" in refused(
        "config", "set", "labeler.1", "{backend: embedding}", "-p", str(folder)
    )
    assert (folder / "duolabel.yaml").read_text(encoding="utf-8") == before
    ok("config", "set", "labeler.0", "{backend: embedding, name: emb}", "-p", str(folder))
    assert labeler_of(folder)["name"] == "emb" and labeler_of(folder)["backend"] == "embedding"
