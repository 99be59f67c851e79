"""The documentation site: it builds with no warning (broken links and anchors fail), and the
tutorial runs as written.

The tutorial's ``bash`` blocks run in order in one empty folder holding the example's two CSV
files; its ``console`` blocks are shown only. Where people work in the web app, three scripted
annotators log in to the real server (``duolabel serve``) through the JSON API, pass the exam and
answer every task: golden texts (the exam, the hidden controls) with their gold label, the other
tickets with the model's label.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from duolabel import Project
from duolabel.store import Item, Prediction
from tests.conftest import EXAMPLE
from tests.test_web_serve import free_port

REPO = Path(__file__).resolve().parent.parent
TUTORIAL = REPO / "docs" / "tutorial.md"

pytestmark = pytest.mark.slow


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "-d",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "tutorial" / "index.html").is_file()
    assert (tmp_path / "howto" / "routing" / "index.html").is_file()


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _play_people(folder: Path, port: int, password: str) -> int:
    """Three annotators answer every task through the JSON API; returns the answers given."""
    with (folder.parent / "golden.csv").open(encoding="utf-8") as handle:
        gold = {row["text"]: row["label"] for row in csv.DictReader(handle)}
    with Project.open(folder) as project, project.store.read() as session:
        model = dict(
            session.execute(
                select(Item.text, Prediction.label)
                .join(Prediction, Prediction.item_id == Item.id)
                .where(Prediction.label.is_not(None))
            ).all()
        )
    answered = 0
    for name in ("ann", "bob", "cyd"):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            login = client.post("/api/v1/login", json={"name": name, "password": password})
            assert login.status_code == 200, login.text
            headers = {"X-CSRF-Token": login.json()["csrf_token"]}
            if login.json()["status"] == "onboarding":
                while (task := client.get("/api/v1/exam/task").json()["task"]) is not None:
                    body = {"assignment_id": task["assignment_id"], "label": gold[task["text"]]}
                    assert client.post("/api/v1/exam/answer", json=body, headers=headers).status_code == 200
                assert client.get("/api/v1/exam/result").json()["result"]["passed"]
            while (task := client.get("/api/v1/task").json()["task"]) is not None:
                label = gold.get(task["text"]) or model[task["text"]]
                body = {"assignment_id": task["assignment_id"], "label": label}
                assert client.post("/api/v1/answer", json=body, headers=headers).status_code == 200
                answered += 1
    return answered


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    for name in ("golden.csv", "tickets.csv"):
        shutil.copy(EXAMPLE / name, tmp_path / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    blocks = bash_blocks(TUTORIAL.read_text(encoding="utf-8"))
    people_at = next(i for i, b in enumerate(blocks) if "duolabel aggregate" in b)
    outputs = []
    for i, block in enumerate(blocks):
        if i == people_at:
            port = free_port()
            server = subprocess.Popen(
                ["duolabel", "serve", "tickets", "--port", str(port)],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                    time.sleep(0.2)
                password = re.search(r"TUTORIAL_PASSWORD='([^']+)'", "".join(blocks)).group(1)
                assert _play_people(tmp_path / "tickets", port, password) > 0
            finally:
                server.send_signal(signal.SIGINT)
                server.communicate(timeout=30)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert result.returncode == 0, (
            f"block {i}:\n{block}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
        assert "Traceback" not in result.stderr
        outputs.append(result.stdout)
    with (tmp_path / "labels.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    sources = {row["source"] for row in rows}
    assert len(rows) == 360 and {"model", "humans", "expert"} <= sources
    assert outputs[-1].startswith("id,")  # `head -3 labels.csv`
