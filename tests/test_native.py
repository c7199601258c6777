"""`tokviz --native` opens the page in a desktop window (pywebview, Qt backend), here under Xvfb.

Needs the `native` extra (`uv sync --extra native`; .ci/run installs it), Xvfb, and the X libraries
Qt's xcb plugin loads (see README: libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 on Debian 12).
The screenshot is kept as an artifact: $TOKVIZ_ARTIFACT_DIR/native-window.png.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.server_process import ROOT, clean_env, free_port, get_json

pytestmark = pytest.mark.slow

ARTIFACTS = Path(os.environ.get("TOKVIZ_ARTIFACT_DIR", ROOT / "test-artifacts"))

GRAB = r"""
import json, sys
from PyQt6.QtGui import QColor
from PyQt6.QtWidgets import QApplication
app = QApplication(sys.argv[:1])
image = app.primaryScreen().grabWindow(0).toImage()
image.save(sys.argv[1])
w, h = image.width(), image.height()
colors, light = set(), 0
for y in range(0, h, 4):
    for x in range(0, w, 4):
        rgb = image.pixel(x, y) & 0xFFFFFF
        colors.add(rgb)
        c = QColor(rgb)
        light += c.red() > 200 and c.green() > 200 and c.blue() > 200
print(json.dumps({"width": w, "height": h, "colors": len(colors), "light": light / ((w // 4) * (h // 4))}))
"""


def _native_available() -> str | None:
    try:
        import PyQt6.QtWebEngineWidgets  # noqa: F401
        import webview  # noqa: F401
    except ImportError as error:
        return f"the native extra is not installed (uv sync --extra native): {error}"
    if shutil.which("Xvfb") is None:
        return "Xvfb is not installed (apt-get install xvfb)"
    return None


@pytest.fixture
def display():
    """A private X display; yields its name (":N")."""
    reason = _native_available()
    if reason:
        pytest.skip(reason)
    read, write = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        number = pipe.readline().strip()
    assert number.isdigit(), "Xvfb did not start"
    try:
        yield f":{number}"
    finally:
        xvfb.terminate()
        xvfb.wait(10)


def test_native_window_shows_the_page(display, tiny_model_path, tmp_path) -> None:
    port = free_port()
    env = clean_env(DISPLAY=display, HF_HOME=str(tmp_path / "hf"))
    env.pop("WAYLAND_DISPLAY", None)
    if os.geteuid() == 0:  # Chromium (inside QtWebEngine) refuses to run its sandbox as root
        env["QTWEBENGINE_DISABLE_SANDBOX"] = "1"
    log = tmp_path / "native.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tokviz_app", "--native", "--port", str(port),
                                 "--model", str(tiny_model_path), "--device", "cpu"],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        health = {}
        while health.get("tabs", 0) < 1:  # the window's page opened its websocket
            assert proc.poll() is None, f"tokviz --native exited ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no window connected:\n{log.read_text()}"
            try:
                health = get_json(f"http://127.0.0.1:{port}/healthz", timeout=2)
            except OSError:
                pass
            time.sleep(0.3)
        assert "bound to 127.0.0.1" in log.read_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "native-window.png"
        stats: dict = {}
        while time.monotonic() < deadline:  # let the page render (fonts, Quasar)
            time.sleep(1.0)
            grab = subprocess.run([sys.executable, "-c", GRAB, str(shot)], env=env, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert grab.returncode == 0, grab.stderr
            stats = json.loads(grab.stdout.strip().splitlines()[-1])
            if stats["colors"] > 30 and stats["light"] > 0.2:
                break
        print(f"\nnative window screenshot {shot}: {stats}")
        assert stats["colors"] > 30, f"the screen is blank: {stats}"
        assert stats["light"] > 0.2, f"the page is not showing (light pixels): {stats}"
        assert proc.poll() is None, "the app is still running"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    tracebacks = [line for line in log.read_text().splitlines() if "Traceback" in line]
    assert not tracebacks, log.read_text()
