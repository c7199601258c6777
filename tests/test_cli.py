"""Command line and environment: flags, TOKVIZ_* variables, one-line errors with exit code 2, safe defaults."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import psutil
import pytest
from nicegui.testing import User

from tests.fake_backend import FakeModelManager
from tests.server_process import clean_env, free_port, get_json, serve, tokviz_command
from tokviz_app.config import parse_settings


def test_defaults_are_safe() -> None:
    s = parse_settings([], environ={})
    assert (s.host, s.port, s.native, s.device, s.dtype, s.models) == ("127.0.0.1", 8080, False, None, None, [])
    assert s.allow_any_model is False and s.servers == []
    assert s.max_tokens_limit == 1024 and s.default_max_tokens == 50


def test_every_option_from_the_environment() -> None:
    env = {"TOKVIZ_HOST": "0.0.0.0", "TOKVIZ_PORT": "9000", "TOKVIZ_NATIVE": "yes", "TOKVIZ_DEVICE": "CUDA:1",
           "TOKVIZ_MODEL": "gpt2, /models/x ,distilgpt2", "TOKVIZ_ALLOW_ANY_MODEL": "1",
           "TOKVIZ_MAX_NEW_TOKENS": "20", "TOKVIZ_DTYPE": "bf16", "TOKVIZ_SERVER": "http://a:8000/v1,b:9000"}
    s = parse_settings([], environ=env)
    assert (s.host, s.port, s.native, s.device, s.dtype) == ("0.0.0.0", 9000, True, "cuda:1", "bfloat16")
    assert s.models == ["gpt2", "/models/x", "distilgpt2"]
    assert s.allow_any_model and s.max_tokens_limit == 20 and s.default_max_tokens == 20
    assert s.servers == ["http://a:8000/v1", "b:9000"]
    off = parse_settings([], environ={"TOKVIZ_NATIVE": "off", "TOKVIZ_ALLOW_ANY_MODEL": "false", "TOKVIZ_DEVICE": "auto",
                                     "TOKVIZ_DTYPE": "auto"})
    assert not off.native and not off.allow_any_model and off.device is None and off.dtype is None


def test_flags_override_the_environment() -> None:
    env = {"TOKVIZ_HOST": "0.0.0.0", "TOKVIZ_PORT": "not-a-port", "TOKVIZ_MODEL": "gpt2", "TOKVIZ_DEVICE": "cuda"}
    s = parse_settings(["--host", "127.0.0.2", "--port", "8081", "--model", "a/b", "--model", "./m", "--device", "cpu",
                        "--allow-any-model", "--max-new-tokens", "7", "--dtype", "float16", "--native",
                        "--server", "http://x:1"], environ=env)
    assert (s.host, s.port, s.models, s.device, s.dtype) == ("127.0.0.2", 8081, ["a/b", "./m"], "cpu", "float16")
    assert s.allow_any_model and s.native and s.max_tokens_limit == 7 and s.servers == ["http://x:1"]


@pytest.mark.parametrize(("argv", "env", "needle"), [
    (["--port", "99999"], {}, "argument --port: 99999 is not a port number"),
    (["--port", "http"], {}, "argument --port: 'http' is not a port number"),
    (["--device", "gpu"], {}, "argument --device: 'gpu' is not a device"),
    (["--dtype", "int4"], {}, "argument --dtype: 'int4' is not a dtype"),
    (["--max-new-tokens", "0"], {}, "argument --max-new-tokens: 0 is out of range"),
    (["--max-new-tokens", "lots"], {}, "'lots' is not a whole number"),
    (["--bogus"], {}, "unrecognized arguments: --bogus"),
    ([], {"TOKVIZ_PORT": "80a"}, "environment variable TOKVIZ_PORT: '80a' is not a port number"),
    ([], {"TOKVIZ_NATIVE": "maybe"}, "environment variable TOKVIZ_NATIVE: 'maybe' is not a yes/no value"),
    ([], {"TOKVIZ_DEVICE": "tpu"}, "environment variable TOKVIZ_DEVICE: 'tpu' is not a device"),
    ([], {"TOKVIZ_MAX_NEW_TOKENS": "-5"}, "environment variable TOKVIZ_MAX_NEW_TOKENS: -5 is out of range"),
    ([], {"TOKVIZ_HOST": " "}, "environment variable TOKVIZ_HOST"),
])
def test_bad_values_exit_2_with_one_line(argv, env, needle, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(argv, environ=env)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tokviz: error: ") and needle in err, err


@pytest.mark.slow
def test_bad_values_in_a_real_process_give_one_line_no_traceback() -> None:
    cases = [(["--port", "x"], {}), ([], {"TOKVIZ_DTYPE": "int8"}), (["--server", "ftp://nowhere"], {})]
    import torch

    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], {}))  # a device this machine lacks: refused at start
    for argv, env in cases:
        out = subprocess.run(tokviz_command(*argv), env=clean_env(**env), capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 2, (argv, env, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tokviz: error: "), out.stderr
        assert "Traceback" not in out.stderr and out.stdout == ""


async def test_main_passes_env_settings_to_nicegui_and_the_engine(monkeypatch, user: User) -> None:
    import tokviz_app.engine
    import tokviz_app.main as entry

    for name in ("tokviz_app", "tokviz_app.main"):
        monkeypatch.setitem(sys.modules, name, sys.modules[name])

    class Manager(FakeModelManager):
        instances: ClassVar[list] = []

        def __init__(self, device="auto", **options):
            super().__init__()
            self.device, self.options = device, options
            Manager.instances.append(self)

    calls = []
    monkeypatch.setattr(tokviz_app.engine, "ModelManager", Manager, raising=False)
    monkeypatch.setattr(entry.ui, "run", lambda **kwargs: calls.append(kwargs))
    for variable, value in {"TOKVIZ_HOST": "0.0.0.0", "TOKVIZ_PORT": "9555", "TOKVIZ_DTYPE": "float32",
                            "TOKVIZ_SERVER": "http://127.0.0.1:9/v1", "TOKVIZ_MODEL": "distilgpt2"}.items():
        monkeypatch.setenv(variable, value)
    entry.main(["--device", "cpu"])
    (call,) = calls
    assert (call["host"], call["port"], call["native"], call["reload"]) == ("0.0.0.0", 9555, False, False)
    (manager,) = Manager.instances
    assert manager.device == "cpu" and manager.options["dtype"] == "float32"
    assert [c.url for c in manager.options["servers"]] == ["http://127.0.0.1:9/v1"]
    await user.open("/")
    await user.should_see(marker="model-select")  # the page is built once its websocket connects
    assert user.find(marker="model-select").elements.pop().value == "distilgpt2"
    response = await user.http_client.get("/healthz")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok" and health["models"] == [] and health["version"]
    assert health["device"] == "cpu" and health["tabs"] == 1  # the simulated tab
    user.find("Initialize Model").click()
    from tests.ui_helpers import wait_until

    await wait_until(lambda: manager.loaded(), message="the model to load")
    health = (await user.http_client.get("/healthz")).json()
    assert health["models"] == ["distilgpt2"] and health["loaded"][0]["key"] == "distilgpt2"


@pytest.mark.slow
def test_real_server_binds_to_loopback_by_default(tiny_model_path, tmp_path) -> None:
    """No --host: only 127.0.0.1 listens; /healthz answers with the device."""
    port = free_port()
    env = clean_env(TOKVIZ_PORT=str(port), TOKVIZ_MODEL=str(tiny_model_path), TOKVIZ_DEVICE="cpu",
                    HF_HOME=str(tmp_path / "hf"))
    with serve(tokviz_command(), env, tmp_path / "server.log", port) as server:
        listening = {c.laddr for c in psutil.Process(server.proc.pid).net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN}
        assert listening and {addr.ip for addr in listening} == {"127.0.0.1"}, listening
        assert {addr.port for addr in listening} == {port}
        health = get_json(server.url + "/healthz")
        assert health["status"] == "ok" and health["device"] == "cpu" and health["models"] == []
        assert f"serving on http://localhost:{port}" in server.output()
