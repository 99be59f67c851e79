"""CLI findings of an independent tester: a path the system refuses and Rich markup in a
person's name ended in a traceback (the name one on every later `annotators list`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from duolabel.project import Project, init_project
from tests.test_cli import duolabel


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_a_path_the_system_refuses_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("", encoding="utf-8")
    message = one_line_error(duolabel("init", str(tmp_path / "afile"), "--labels", "a,b"))
    assert "afile is a file; a project is a folder" in message
    assert (tmp_path / "afile").read_text(encoding="utf-8") == ""  # nothing changed
    message = one_line_error(duolabel("init", "/proc/duolabel-cannot-be-here", "--labels", "a,b"))
    assert "'/proc/duolabel-cannot-be-here'" in message and "the command stopped there" in message


@pytest.mark.parametrize("name", ["x[/]", "[b]bo[/b]"])
def test_markup_in_a_name_is_printed_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    folder = str(tmp_path / "p")
    init_project(folder, labels=["a", "b"]).close()
    monkeypatch.setenv("DUOLABEL_TEST_PASSWORD", "tidy harbour lantern 77")
    added = duolabel("annotators", "add", name, "-p", folder, "--password-env", "DUOLABEL_TEST_PASSWORD")
    assert added.returncode == 0, added.stderr
    assert f"Created annotator '{name}'." in added.stdout
    listed = duolabel("annotators", "list", "-p", folder)
    assert listed.returncode == 0 and name in listed.stdout, listed.stderr
    changed = duolabel("annotators", "set-status", name, "suspended", "-p", folder)
    assert changed.returncode == 0 and f"'{name}' is now suspended." in changed.stdout, changed.stderr
    unset = duolabel("annotators", "add", "carol", "-p", folder, "--password-env", "DUOLABEL_NOT_SET")
    assert "DUOLABEL_NOT_SET: that environment variable is not set" in one_line_error(unset)


def test_init_from_reads_labels_as_import_would_and_says_no_project_was_made(tmp_path: Path) -> None:
    """A list cell became the label "['a', 'b']" and true the label 'True'; a missing file
    said "Nothing was imported." though init imports nothing."""
    lists = tmp_path / "lists.jsonl"
    lists.write_text('{"id":1,"text":"x","label":["a","b"]}\n{"id":2,"text":"y","label":["b","c"]}\n')
    assert duolabel("init", str(tmp_path / "p"), "--from", str(lists)).returncode == 0
    with Project.open(tmp_path / "p") as project:
        assert project.config.task.label_names == ["a", "b", "c"]
    flags = tmp_path / "flags.jsonl"
    flags.write_text('{"id":1,"text":"x","label":"a"}\n{"id":2,"text":"y","label":true}\n')
    result = duolabel("init", str(tmp_path / "q"), "--from", str(flags))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "row 2, column 'label': got true (a true/false value)" in result.stderr
    assert "No project was created." in result.stderr and not (tmp_path / "q").exists()
    result = duolabel("init", str(tmp_path / "r"), "--from", str(tmp_path / "nosuch.csv"))
    assert "No project was created." in result.stderr and "imported" not in result.stderr


def test_run_says_which_files_were_imported_when_a_later_one_is_refused(example_copy: Path) -> None:
    (example_copy / "tickets.csv").write_text("id,text\nt1,fine\nt1,the same id again\n", encoding="utf-8")
    result = duolabel("run", str(example_copy))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Nothing of tickets.csv was imported; the files before it were (golden.csv)." in result.stderr
    with Project.open(example_copy) as project:
        assert project.status().golden == 60  # the first file is in


def test_init_force_over_a_store_with_other_labels_is_refused(example_copy: Path) -> None:
    """It kept the store: status counted 60 golden items labelled 'product' and so on, and
    export wrote them under the new labels' columns, without a word."""
    golden = str(example_copy / "golden.csv")
    imported = duolabel("import", golden, "-p", str(example_copy), "--role", "golden", "--gold", "label")
    assert imported.returncode == 0, imported.stderr
    before = (example_copy / "duolabel.yaml").read_text(encoding="utf-8")
    message = one_line_error(duolabel("init", str(example_copy), "--labels", "yes,no", "--force"))
    assert "holds items labelled" in message and "'account'" in message and "nothing was changed" in message
    assert (example_copy / "duolabel.yaml").read_text(encoding="utf-8") == before
    labels = "billing,shipping,account,product,technical,other"
    assert duolabel("init", str(example_copy), "--labels", labels, "--force").returncode == 0


def test_a_negative_value_reaches_config_set_and_export_names_every_format(tmp_path: Path) -> None:
    """'config set costs.human_answer -1' said "No such option: -1"; 'export --format xml'
    listed csv, jsonl, parquet only (label-studio and hf were left out)."""
    folder = str(tmp_path / "p")
    init_project(folder, labels=["a", "b"]).close()
    message = one_line_error(duolabel("config", "set", "costs.human_answer", "-1", "-p", folder))
    assert "key 'costs.human_answer': got -1, expected greater than or equal to 0" in message
    assert duolabel("config", "set", "costs.human_answer", "0.5", "-p", folder).returncode == 0
    exported = duolabel("export", str(tmp_path / "x.xml"), "-p", folder, "--format", "xml")
    assert exported.returncode == 2 and "Traceback" not in exported.stderr
    assert "format 'xml' is not one of csv, jsonl, parquet, label-studio, hf" in exported.stderr


def test_ctrl_c_during_an_import_names_it_and_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The import drew no stage, so Ctrl-C said only the generic sentence (an independent
    tester); it is a stage with its rows read now, as run's are."""
    from typer.testing import CliRunner

    import duolabel.io as io
    from duolabel.cli import _interrupted, app
    from duolabel.errors import Interrupted

    folder = tmp_path / "p"
    init_project(folder, labels=["a", "b"]).close()
    path = tmp_path / "items.csv"
    path.write_text("id,text\n" + "".join(f"i{i},text {i}\n" for i in range(2500)), encoding="utf-8")
    said: list[str] = []
    real = io.import_records

    def stopped_midway(*args, rows, **options):  # Ctrl-C once 2,000 rows are read
        def reading():
            for number, row in enumerate(rows, 1):
                if number == 2001:
                    try:
                        _interrupted(2, None)
                    except Interrupted as exc:
                        said.append(str(exc))
                yield row

        return real(*args, rows=reading(), **options)

    monkeypatch.setattr(io, "import_records", stopped_midway)
    result = CliRunner().invoke(app, ["import", str(path), "-p", str(folder)])
    assert result.exit_code == 0, result.output
    assert said and f"during 'Importing {path}' (2,000 done;" in said[0], said


def test_labels_given_twice_or_written_as_plain_names(tmp_path: Path) -> None:
    """Found by an independent tester: 'init --labels a,a' was blamed on "duolabel.yaml: key
    'task.labels'" (init had read no file), and a hand-written `labels: [a, b]` was refused as
    "expected a valid dictionary or instance of LabelSpec"."""
    message = one_line_error(duolabel("init", str(tmp_path / "d"), "--labels", "a,a"))
    assert "label 'a' is given twice" in message and "duolabel.yaml" not in message
    message = one_line_error(duolabel("init", str(tmp_path / "e"), "--labels", "a,b", "--labeler", "nosuch"))
    assert message.startswith("error: duolabel init's options: key 'labeler.0.backend'")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "duolabel.yaml").write_text("task:\n  labels: [spam, ham]\n", encoding="utf-8")
    with Project.open(folder) as project:
        assert project.config.task.label_names == ["spam", "ham"]
