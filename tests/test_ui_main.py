"""`tokviz` entry point: arguments, the shared service, the page registered without a server."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar

import pytest
from nicegui.testing import User

from tests.fake_backend import FakeModelManager
from tokviz_app.config import Settings
from tokviz_app.core.errors import ModelNotFoundError


def test_parse_args_defaults_and_repeatable_model() -> None:
    from tokviz_app.main import parse_args

    s = parse_args([])
    assert (s.host, s.port, s.models, s.device, s.native) == ("127.0.0.1", 8080, [], None, False)
    s = parse_args(["--model", "a/b", "--model", "/tmp/x", "--port", "9001", "--host", "0.0.0.0", "--device", "cpu"])
    assert (s.host, s.port, s.models, s.device) == ("0.0.0.0", 9001, ["a/b", "/tmp/x"], "cpu")
    assert Settings(port=9001).address == "http://localhost:9001"


async def test_main_registers_the_page_and_runs_nicegui(monkeypatch, user: User, capsys) -> None:
    """main() with a fake engine: ui.run gets the right arguments; the page works; one manager for all tabs."""
    import tokviz_app.engine
    import tokviz_app.main as entry

    # NiceGUI's reset drops the modules of page functions (here tokviz_app.main) after the test; put them back.
    for name in ("tokviz_app", "tokviz_app.main"):
        monkeypatch.setitem(sys.modules, name, sys.modules[name])

    class Manager(FakeModelManager):
        instances: ClassVar[list] = []

        def __init__(self, device="auto"):
            super().__init__()
            self.device = device
            Manager.instances.append(self)

        def add(self, name):
            if name == "./missing":
                raise ModelNotFoundError("The folder './missing' does not exist.")
            return super().add(name)

    calls = []
    monkeypatch.setattr(tokviz_app.engine, "ModelManager", Manager, raising=False)
    monkeypatch.setattr(entry.ui, "run", lambda **kwargs: calls.append(kwargs))
    entry.main(["--port", "9123", "--model", "./missing", "--model", "distilgpt2", "--device", "cpu"])
    assert calls == [{"host": "127.0.0.1", "port": 9123, "reload": False, "title": "tokviz", "show": False,
                      "native": False, "favicon": "🔤", "show_welcome_message": False}]
    assert len(Manager.instances) == 1 and Manager.instances[0].device == "cpu"
    assert "--model ./missing: The folder './missing' does not exist." in capsys.readouterr().err
    await user.open("/")
    await user.should_see(marker="model-select")  # the page is built once its websocket connects
    assert user.find(marker="model-select").elements.pop().value == "distilgpt2", "first valid --model preselected"
    await user.should_see("Initialize Model")


@pytest.mark.slow
def test_help_runs_without_a_server() -> None:
    out = subprocess.run([sys.executable, "-m", "tokviz_app", "--help"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0 and "--model" in out.stdout and "127.0.0.1" in out.stdout
