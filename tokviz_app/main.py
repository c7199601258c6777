"""`tokviz`: serve the token visualizer (one ModelManager, one service, one page)."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Mapping
from typing import Any

from nicegui import app, ui

from . import health
from .config import Settings, fail, parse_settings
from .engine.errors import TokvizError
from .service import ModelService


def _device_name(manager: Any) -> str:
    """The manager's default device, resolved ("auto" -> "cuda"/"mps"/"cpu")."""
    try:
        from .engine.devices import resolve_device

        return resolve_device(getattr(manager, "device", None) or "auto")
    except Exception:  # noqa: BLE001 - a fake manager in tests, or an unavailable device
        return str(getattr(manager, "device", "auto"))


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags, then TOKVIZ_* environment variables (see config.py). Bad values exit with code 2."""
    return parse_settings(argv, environ)


def create_app(settings: Settings, manager: Any = None) -> ModelService:
    """Create the shared service and register the page and /healthz. No server is started here."""
    if manager is None:
        from .engine import ModelManager

        options: dict[str, Any] = {}
        if settings.dtype:
            options["dtype"] = settings.dtype
        try:
            if settings.servers:  # each with its own key (config.py refused any that would leak)
                options["servers"] = settings.server_configs()
            manager = ModelManager(device=settings.device or "auto", **options)
        except TokvizError as error:  # e.g. a --server that is not an address
            fail(str(error))
    service = ModelService(manager)
    health.register(app, manager, _device_name(manager))
    for name in settings.models:
        try:
            info = manager.add(name)
        except TokvizError as error:  # e.g. a folder that does not exist: say so, serve the rest
            print(f"tokviz: --model {name}: {error}", file=sys.stderr, flush=True)
            continue
        if settings.preselect is None:
            settings.preselect = info.key
    if settings.preselect is None:
        settings.preselect = manager.default_key()

    @ui.page("/")
    def index() -> None:
        from .ui.root import build_page

        build_page(service, settings)

    return service


def main(argv: list[str] | None = None) -> None:
    if multiprocessing.current_process().name != "MainProcess":
        return  # a native-window or worker process re-importing the main module: nothing to serve
    settings = parse_args(argv)
    _check_device(settings)
    if settings.native:
        _check_native()
        if sys.platform.startswith("linux"):  # pywebview tries GTK first; the Qt backend comes from PyPI
            app.native.start_args.setdefault("gui", "qt")
        app.native.window_args.setdefault("min_size", (400, 500))
    create_app(settings)
    print(f"tokviz: serving on {settings.address} (bound to {settings.host})", flush=True)
    ui.run(host=settings.host, port=settings.port, reload=False, title="tokviz", show=False,
           native=settings.native, favicon="🔤", show_welcome_message=False)


def _check_device(settings: Settings) -> None:
    """`--device cuda` on a machine without CUDA: a one-line error at start, not at the first load."""
    if not settings.device:
        return
    from .engine.devices import resolve_device
    from .engine.errors import ModelLoadError

    try:
        resolve_device(settings.device)
    except ModelLoadError as error:
        fail(f"--device {settings.device}: {error}")


def _check_native() -> None:
    try:
        import webview  # noqa: F401
    except ImportError:
        fail("--native needs pywebview: install the extra with `uv sync --extra native` "
             "(or run `uv run --extra native tokviz --native`)")


if __name__ in {"__main__", "__mp_main__"}:
    main()
