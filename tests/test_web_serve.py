"""`duolabel serve` and the account commands, as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from duolabel.project import Project
from tests.web_fixtures import PASSWORD, add_gold_items, add_routed_items, make_project


def duolabel(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from duolabel.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_invite_and_label_over_http(tmp_path: Path, database_url: str | None) -> None:
    folder = tmp_path / "proj"
    project = make_project(folder, database_url=database_url, quality={"exam_size": 1})
    add_routed_items(project, 2, overlap=1)
    add_gold_items(project, 2)
    project.close()

    made = duolabel(
        "annotators",
        "add",
        "root",
        "-p",
        str(folder),
        "--role",
        "admin",
        "--password-env",
        "PW",
        env={"PW": PASSWORD},
    )
    assert made.returncode == 0 and "Created admin 'root'" in made.stdout
    port = free_port()
    invited = duolabel("annotators", "invite", "-p", str(folder), "--base-url", f"http://127.0.0.1:{port}")
    assert invited.returncode == 0, invited.stderr
    link = invited.stdout.strip()
    assert re.fullmatch(rf"http://127\.0\.0\.1:{port}/invite/[\w-]{{40,}}", link)
    bad = duolabel("annotators", "invite", "-p", str(folder), "--role", "boss")
    assert bad.returncode == 2 and "role 'boss' is not one of" in bad.stderr and "Traceback" not in bad.stderr

    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from duolabel.cli import main; main()",
            "serve",
            str(folder),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if client.get("/login").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
                time.sleep(0.2)
            page = client.get(link.removeprefix(f"http://127.0.0.1:{port}"))
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            form = {"csrf_token": token, "name": "carol", "password": PASSWORD}
            created = client.post(link, data=form)
            assert created.status_code == 303
            exam = client.get("/api/v1/exam/task").json()["task"]
            assert exam is not None and exam["text"].startswith("known text")
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=30)
    assert "Annotators log in at" in output and "Traceback" not in output

    listed = duolabel("annotators", "list", "-p", str(folder))
    assert listed.returncode == 0 and "carol" in listed.stdout and "onboarding" in listed.stdout
    changed = duolabel("annotators", "set-status", "carol", "suspended", "-p", str(folder))
    assert changed.returncode == 0 and "'carol' is now suspended" in changed.stdout
    with Project.open(folder) as reopened, reopened.store.read() as session:
        from sqlalchemy import select

        from duolabel.store import Annotator

        assert session.scalar(select(Annotator.status).where(Annotator.name == "carol")) == "suspended"
    nobody = duolabel("annotators", "set-status", "nobody", "active", "-p", str(folder))
    assert nobody.returncode == 2 and "there is no account named 'nobody'" in nobody.stderr
