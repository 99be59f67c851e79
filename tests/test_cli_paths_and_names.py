"""CLI findings of an independent tester: a path the system refuses and Rich markup in a
person's name ended in a traceback (the name one on every later `annotators list`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from duolabel.project import init_project
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
