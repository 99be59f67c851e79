"""`duolabel serve` and the account commands, as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def serving(folder: Path, port: int, *options: str) -> Iterator[tuple[httpx.Client, list[str]]]:
    """``duolabel serve folder --port port *options``, up and answering; yields a client and
    a list that holds the server's output once the block is left (the server stopped)."""
    server = subprocess.Popen(
        [sys.executable, "-c", "from duolabel.cli import main; main()", "serve", str(folder)]
        + ["--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
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
            yield client, output
    finally:
        server.send_signal(signal.SIGINT)
        output.append(server.communicate(timeout=30)[0])


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

    with serving(folder, port) as (client, logged):
        page = client.get(link.removeprefix(f"http://127.0.0.1:{port}"))
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        form = {"csrf_token": token, "name": "carol", "password": PASSWORD}
        created = client.post(link, data=form)
        assert created.status_code == 303
        exam = client.get("/api/v1/exam/task").json()["task"]
        assert exam is not None and exam["text"].startswith("known text")
        # The session cookie is Secure when a proxy on a trusted address (uvicorn's
        # FORWARDED_ALLOW_IPS, the loopback address by default) says the browser used HTTPS.
        for proto, secure in (("http", False), ("https", True)):
            got = httpx.get(f"http://127.0.0.1:{port}/login", headers={"x-forwarded-proto": proto})
            cookies = got.headers.get_list("set-cookie")
            assert cookies and all(("secure" in c.lower().split("; ")) is secure for c in cookies), cookies
    output = "".join(logged)
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


def _get(sock: socket.socket) -> bytes:
    """One GET /login on an open connection, read to the end of its answer."""
    sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # nothing to read: still open
        return False


def test_an_idle_connection_outlives_a_reverse_proxys_keep_alive(tmp_path: Path) -> None:
    # uvicorn closes a connection idle for 5 s; a proxy (nginx: 60 s) or a browser that sends
    # on it in that instant loses the request (the load test saw "server disconnected" on the
    # first request after the logins). The app keeps idle connections longer than the proxy.
    folder = tmp_path / "proj"
    make_project(folder).close()
    port = free_port()
    with serving(folder, port), socket.create_connection(("127.0.0.1", port)) as sock:
        assert _get(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6.5)
        assert not _closed_by_server(sock)
        assert _get(sock).startswith(b"HTTP/1.1 200")  # the same connection serves again
    # and the option says how long: one second here, with several workers too
    port = free_port()
    options = ("--workers", "2", "--keep-alive", "1")
    with serving(folder, port, *options), socket.create_connection(("127.0.0.1", port)) as sock:
        assert _get(sock).startswith(b"HTTP/1.1 200")
        time.sleep(2.5)
        assert _closed_by_server(sock)
    refused = duolabel("serve", str(folder), "--keep-alive", "0")
    assert refused.returncode == 2 and "--keep-alive" in refused.stderr and "Traceback" not in refused.stderr
