from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def _project_parameters() -> dict[str, list]:
    import typer.main

    found = {}
    for path in command_paths():
        command = typer.main.get_command(app)
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        params = [param for param in command.params if param.name in ("project", "project_option")]
        if params:
            found[" ".join(path)] = params
    return found


def test_every_command_takes_the_project_folder_as_p():
    found = _project_parameters()
    assert {"status", "run", "plan", "import", "golden suggest", "annotators add"} <= set(found)
    for command, params in found.items():
        assert any("-p" in param.opts for param in params), command
    # The commands on the project alone take it as an argument too.
    positional = {
        command for command, params in found.items() if any(p.param_type_name == "argument" for p in params)
    }
    assert {"status", "run", "plan", "label", "serve", "optimize-prompt", "generate"} <= positional


def test_the_project_folder_as_an_argument_or_as_p(tmp_path):
    assert duolabel("init", str(tmp_path / "p"), "-l", "spam", "-l", "ham").returncode == 0
    folder = str(tmp_path / "p")
    for args in (["status", folder], ["status", "-p", folder], ["status", "--project", folder, folder]):
        result = duolabel(*args)
        assert result.returncode == 0 and "items" in result.stdout, (args, result.stderr)
    assert duolabel("status", cwd=folder).returncode == 0
    plan = duolabel("plan", folder)
    assert plan.returncode == 0, plan.stderr
    both = duolabel("status", folder, "-p", str(tmp_path / "q"))
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert "two project folders" in both.stderr and "give one" in both.stderr
    missing = duolabel("status", "-p", str(tmp_path / "q"))
    assert missing.returncode == 2 and "no such project folder" in missing.stderr


def test_init_with_labels_instruction_and_from_a_golden_file(tmp_path):
    import yaml

    made = duolabel("init", str(tmp_path / "a"), "--labels", "spam, ham", "--instruction", "Is it spam?")
    assert made.returncode == 0, made.stderr
    task = yaml.safe_load((tmp_path / "a" / "duolabel.yaml").read_text())["task"]
    assert [label["name"] for label in task["labels"]] == ["spam", "ham"]
    assert task["instructions"] == "Is it spam?"
    (tmp_path / "golden.csv").write_text("id,text,label\n1,a,pos\n2,b,neg\n3,c,pos\n")
    assert duolabel("init", str(tmp_path / "b"), "--from", str(tmp_path / "golden.csv")).returncode == 0
    task = yaml.safe_load((tmp_path / "b" / "duolabel.yaml").read_text())["task"]
    assert [label["name"] for label in task["labels"]] == ["pos", "neg"]


def test_init_names_the_fine_tuned_labeler_unless_told_otherwise(tmp_path):
    import yaml

    assert duolabel("init", str(tmp_path / "a"), "-l", "spam", "-l", "ham").returncode == 0
    # One labeler is written as a mapping (a list also works).
    written = yaml.safe_load((tmp_path / "a" / "duolabel.yaml").read_text())["labeler"]
    assert written["backend"] == "finetune"
    made = duolabel("init", str(tmp_path / "b"), "-l", "spam", "-l", "ham", "--labeler", "embedding")
    assert made.returncode == 0
    written = yaml.safe_load((tmp_path / "b" / "duolabel.yaml").read_text())["labeler"]
    assert written["backend"] == "embedding"
    bad = duolabel("init", str(tmp_path / "c"), "-l", "spam", "-l", "ham", "--labeler", "nope")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "'nope'" in bad.stderr and "'finetune'" in bad.stderr and not (tmp_path / "c").exists()


def test_import_answers_and_wide_tables_in_a_file(tmp_path):
    import os

    assert duolabel("init", str(tmp_path / "p"), "-l", "spam", "-l", "ham").returncode == 0
    (tmp_path / "items.csv").write_text("id,text\n1,buy now\n2,hi mum\n")
    assert duolabel("import", str(tmp_path / "items.csv"), "-p", str(tmp_path / "p")).returncode == 0
    long_name = "worker-" + "x" * 90
    (tmp_path / "answers.csv").write_text(f"item,worker,label\n1,{long_name},spam\n2,w2,hamm\n")
    bad = duolabel("import-answers", str(tmp_path / "answers.csv"), "-p", str(tmp_path / "p"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "answers.csv, row 3, column 'label': got 'hamm'" in bad.stderr
    (tmp_path / "answers.csv").write_text(f"item,worker,label\n1,{long_name},spam\n2,w2,ham\n")
    good = duolabel("import-answers", str(tmp_path / "answers.csv"), "-p", str(tmp_path / "p"))
    assert good.returncode == 0 and "2 new" in good.stdout, good.stderr
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    listed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from duolabel.cli import main; main()",
            "annotators",
            "list",
            "-p",
            str(tmp_path / "p"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert long_name in listed.stdout, listed.stdout


def test_simulate_answers_are_relative_to_the_project(tmp_path, monkeypatch):
    from duolabel import simulate as simulation
    from duolabel.errors import ProjectError

    def record(project, answers, *, seed=0, **options):
        raise ProjectError(f"answers at {answers}")

    monkeypatch.setattr(simulation, "simulate_project", record)
    monkeypatch.chdir(tmp_path)
    assert duolabel("init", str(tmp_path / "p"), "-l", "spam", "-l", "ham").returncode == 0
    result = CliRunner().invoke(app, ["simulate", "p", "--answers", "recorded.csv"])
    where = Path(str(result.exception).removeprefix("answers at "))
    assert where.resolve() == (tmp_path / "p" / "recorded.csv").resolve()


def _started(*args: str) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-c", "from duolabel.cli import main; main()", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_a_rerun_finishes(example_copy: Path):
    import signal

    from duolabel import Project

    running = _started("run", str(example_copy))
    first = running.stdout.readline()  # the import's report: the labeler is about to train
    assert "golden.csv" in first or "tickets.csv" in first, first
    running.send_signal(signal.SIGINT)
    stdout, stderr = running.communicate(timeout=120)
    assert running.returncode == 130, stderr
    said = " ".join(stderr.split())
    # the stage drawing a bar when the signal came, if one was, is named with its count
    assert re.search(
        r"interrupted: stopped by Ctrl-C( during '[^']+' \([^)]*\))?\. Everything finished", said
    ), said
    assert "Traceback" not in stderr and "Aborted!" not in stderr
    again = _started("run", str(example_copy))
    _, stderr = again.communicate(timeout=900)
    assert again.returncode == 0, stderr
    with Project.open(example_copy) as project:
        assert project.status().predicted == 360


def test_status_watch_prints_again_until_ctrl_c(tmp_path):
    import signal
    import time

    folder = tmp_path / "p"
    assert duolabel("init", str(folder), "--labels", "a,b").returncode == 0
    watching = _started("status", str(folder), "--watch", "0.2")
    time.sleep(6)  # started (imports take a few seconds) and printed more than once
    assert watching.poll() is None  # still watching
    watching.send_signal(signal.SIGINT)
    stdout, stderr = watching.communicate(timeout=60)
    assert watching.returncode == 0, stderr
    assert stdout.count("Project status") >= 2 and "Ctrl-C to stop" in stdout
    assert "Traceback" not in stderr and "interrupted" not in stderr


def test_ctrl_c_names_the_stage_that_was_drawing_a_bar():
    import io

    from rich.console import Console

    from duolabel.cli import _interrupted
    from duolabel.errors import Interrupted
    from duolabel.progress import active_stage, rich_reporter

    report = rich_reporter(Console(file=io.StringIO()))
    with report("Labeling with embedding", 1000) as advance:
        advance(300)
        advance(12)
        with pytest.raises(Interrupted) as stopped:
            _interrupted(2, None)
    assert "during 'Labeling with embedding' (312 of 1,000 done; its finished chunks are kept)" in str(
        stopped.value
    )
    assert active_stage() is None  # the bar is gone: a later Ctrl-C names no stage
    with pytest.raises(Interrupted, match=r"^stopped by Ctrl-C\. Everything finished"):
        _interrupted(2, None)


def test_serve_refuses_a_port_out_of_range_without_a_traceback(tmp_path):
    """`serve --port 99999` ended in uvicorn's OverflowError traceback."""
    assert duolabel("init", str(tmp_path / "p")).returncode == 0
    result = duolabel("serve", str(tmp_path / "p"), "--port", "99999")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--port" in result.stderr and "65535" in result.stderr
