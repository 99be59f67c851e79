from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from duolabel.cli import app, command_paths

COMMANDS = [" ".join(path) for path in command_paths()]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command):
    result = CliRunner().invoke(app, [*command.split(), "--help"], prog_name="duolabel")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def duolabel(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from duolabel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_user_mistakes_are_one_line_and_exit_2(tmp_path):
    result = duolabel("status", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no such project folder" in result.stderr and "duolabel init" in result.stderr


def test_init_import_status_through_the_cli(tmp_path):
    assert duolabel("init", str(tmp_path / "p"), "-l", "spam", "-l", "ham").returncode == 0
    (tmp_path / "items.csv").write_text("id,text,gold\n1,buy now,spam\n2,hi mum,hamm\n")
    bad = duolabel("import", str(tmp_path / "items.csv"), "-p", str(tmp_path / "p"), "--gold", "gold")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "row 3, column 'gold': got 'hamm', expected one of 'spam', 'ham'" in bad.stderr
    (tmp_path / "items.csv").write_text("id,text,gold\n1,buy now,spam\n2,hi mum,ham\n")
    good = duolabel("import", str(tmp_path / "items.csv"), "-p", str(tmp_path / "p"), "--gold", "gold")
    assert good.returncode == 0 and "2 new items" in good.stdout
    status = duolabel("status", str(tmp_path / "p"))
    assert status.returncode == 0 and "items" in status.stdout
