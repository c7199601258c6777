"""The Docker image, tested without a Docker engine: its Dockerfile agrees with what CI runs, and the
exact entry point, environment and health check it uses work against a real server process."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import psutil
import pytest

from tests.server_process import ROOT, clean_env, free_port, get_json, serve

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def one(name: str) -> str:
    found = [rest for word, rest in instructions() if word == name]
    assert len(found) == 1, (name, found)
    return found[0]


def env_vars() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def healthcheck_command() -> list[str]:
    rest = one("HEALTHCHECK")
    options, _, command = rest.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return json.loads(command)


def test_dockerfile_matches_ci_and_the_issue() -> None:
    entry = json.loads(one("ENTRYPOINT"))
    assert entry == ["uv", "run", "--frozen", "--no-dev", "--no-sync", "tokviz"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tokviz"] == "tokviz_app.main:main", "the image runs the same console script as CI and users"
    runs = [rest for word, rest in instructions() if word == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert syncs and all("--frozen" in r for r in syncs), "the image installs exactly uv.lock"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "uv sync --frozen" in ci and "uv run pytest" in ci
    assert one("EXPOSE") == "8080"
    env = env_vars()
    assert env["TOKVIZ_HOST"] == "0.0.0.0" and env["TOKVIZ_PORT"] == "8080"
    assert env["HF_HOME"] == "/data/hf" and json.loads(one("VOLUME")) == ["/data/hf"]
    assert one("USER") not in {"root", "0"}, "runs as an unprivileged user"
    assert "useradd" in " ".join(runs) and one("USER") in " ".join(runs)
    assert "http://127.0.0.1:8080/healthz" in " ".join(healthcheck_command())
    assert one("FROM").startswith("python:3.11"), "the Python version pyproject asks for"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored, "the build context never carries the host's environment"


@pytest.mark.slow
def test_the_image_entry_point_serves_healthz_on_all_interfaces(tiny_model_path, tmp_path) -> None:
    """ENTRYPOINT + the image's ENV (port and cache folder moved for the test) + `docker run -e` options."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH (CI installs it; the image runs through it)")
    port = free_port()
    env = clean_env(**{k: v for k, v in env_vars().items() if not k.startswith("UV_")})
    env.update(TOKVIZ_PORT=str(port), HF_HOME=str(tmp_path / "hf"),  # -v tokviz-hf:/data/hf
               TOKVIZ_MODEL=str(tiny_model_path), TOKVIZ_DEVICE="cpu")  # -e TOKVIZ_MODEL=... -e TOKVIZ_DEVICE=cpu
    assert env["TOKVIZ_HOST"] == "0.0.0.0"
    command = json.loads(one("ENTRYPOINT"))
    with serve([uv, *command[1:]], env, tmp_path / "server.log", port) as server:
        listening = {c.laddr.ip for proc in [psutil.Process(server.proc.pid), *psutil.Process(server.proc.pid).children(True)]
                     for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listening == {"0.0.0.0"}, listening
        health = get_json(server.url + "/healthz")
        assert health["status"] == "ok" and health["device"] == "cpu" and health["models"] == []
        from importlib.metadata import version

        assert health["version"] == version("tokviz")
        check = [sys.executable if part == "python" else part.replace(":8080/", f":{port}/")
                 for part in healthcheck_command()]
        assert subprocess.run(check, timeout=30, check=False).returncode == 0, "the HEALTHCHECK passes"
    assert "bound to 0.0.0.0" in server.output()
    after = [sys.executable if part == "python" else part.replace(":8080/", f":{port}/") for part in healthcheck_command()]
    assert subprocess.run(after, timeout=30, check=False, capture_output=True).returncode != 0, \
        "and fails once the server is gone"
