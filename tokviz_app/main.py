"""`tokviz`: serve the token visualizer (one ModelManager, one service, one page)."""

from __future__ import annotations

import errno
import multiprocessing
import socket
import sys
from collections.abc import Mapping
from typing import Any

from nicegui import Client, app, ui
from nicegui.client import ClientConnectionTimeout

from . import health
from .config import Settings, fail, parse_settings
from .core.contract import ModelRegistry
from .core.errors import TokvizError
from .service import ModelService


CONNECT_TIMEOUT_S = 30.0  # a page whose websocket has not connected by then is dropped (NiceGUI: 60-70 s)


def _device_name(manager: ModelRegistry) -> str:
    """The manager's default device, resolved ("auto" -> "cuda"/"mps"/"cpu")."""
    try:
        from .engine.devices import resolve_device

        return resolve_device(manager.device)
    except TokvizError:  # an unavailable device: the page says so when a model loads
        return manager.device


def parse_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Flags, then TOKVIZ_* environment variables (see config.py). Bad values exit with code 2."""
    return parse_settings(argv, environ)


def create_app(settings: Settings, manager: ModelRegistry | None = None) -> ModelService:
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
        except (TokvizError, ValueError) as error:  # e.g. a --server that is not an address, a bad TOKVIZ_CPU_KERNELS
            fail(str(error))
    service = ModelService(manager)
    app.on_shutdown(service.shutdown)
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
    async def index(client: Client) -> None:
        from .ui.page import add_page_assets, build_page

        # A plain GET that never opens its websocket (a crawler, a scan, a flood) costs only this shell:
        # NiceGUI keeps such a page for a minute, and the full page was ~0.6 MB. The page is built once
        # the browser has connected (normally milliseconds later); one that never connects is dropped.
        add_page_assets()  # CSS and the dark-mode script must be in the first HTML
        try:
            await client.connected(timeout=CONNECT_TIMEOUT_S)
        except ClientConnectionTimeout:
            client.delete()
            return
        if client.is_deleted:
            return
        with client:
            build_page(service, settings, assets=False)

    return service


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["score"]:  # `tokviz score ...`: the corpus scorer, no web app
        from .scoring.cli import score_main

        return score_main(argv[1:])
    if multiprocessing.current_process().name != "MainProcess":
        return None  # a native-window or worker process re-importing the main module: nothing to serve
    settings = parse_args(argv)
    _check_device(settings)
    if settings.native:
        _check_native()
        if sys.platform.startswith("linux"):  # pywebview tries GTK first; the Qt backend comes from PyPI
            app.native.start_args.setdefault("gui", "qt")
        app.native.window_args.setdefault("min_size", (400, 500))
    _check_port(settings)  # before anything slow: a second server on the port says so at once
    if settings.host in ALL_INTERFACES:
        print(f"tokviz: warning: serving on all interfaces ({settings.host}): anyone who can reach this "
              f"machine on port {settings.port} can use it", file=sys.stderr, flush=True)
    _log_to_console()
    create_app(settings)
    print(f"tokviz: serving on {settings.address} (bound to {settings.host})", flush=True)
    ui.run(host=settings.host, port=settings.port, reload=False, title="tokviz", show=False,
           native=settings.native, favicon="🔤", show_welcome_message=False)


ALL_INTERFACES = {"0.0.0.0", "::", "[::]", ""}


def _log_to_console() -> None:
    """The engine's one-line reports (e.g. which CPU kernels were chosen) go to stderr."""
    import logging

    logger = logging.getLogger("tokviz")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("tokviz: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _check_port(settings: Settings) -> None:
    """Bind the address once, as uvicorn will (SO_REUSEADDR), and let go: a port in use is one line and
    exit code 2 now, instead of NiceGUI's "serving on ..." followed by an exit 3 seconds later."""
    host = settings.host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        fail(f"--host {settings.host}: cannot resolve it ({error.strerror})")
        return
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            fail(f"port {settings.port} on {settings.host} is already in use (another tokviz?); "
                 "stop it or pick another --port")
        fail(f"cannot listen on {settings.host}:{settings.port}: {error.strerror or error}")


def _check_device(settings: Settings) -> None:
    """`--device cuda` on a machine without CUDA: a one-line error at start, not at the first load."""
    if not settings.device:
        return
    from .engine.devices import resolve_device
    from .core.errors import ModelLoadError

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
