"""`tokviz`: serve the token visualizer (one ModelManager, one service, one page)."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from typing import Any

from nicegui import ui

from .config import Settings
from .engine.errors import TokvizError
from .service import ModelService


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="tokviz", description="See what a language model does, token by token.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME_OR_PATH",
                        help="add a model to the dropdown (hub id or local folder); repeatable, the first is preselected")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--native", action="store_true", help="open in a native window (needs pywebview)")
    args = parser.parse_args(argv)
    return Settings(host=args.host, port=args.port, native=args.native, device=args.device, models=list(args.model))


def create_app(settings: Settings, manager: Any = None) -> ModelService:
    """Create the shared service and register the page. No server is started here."""
    if manager is None:
        from .engine import ModelManager

        manager = ModelManager(device=settings.device or "auto")
    service = ModelService(manager)
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
    create_app(settings)
    print(f"tokviz: serving on {settings.address} (bound to {settings.host})", flush=True)
    ui.run(host=settings.host, port=settings.port, reload=False, title="tokviz", show=False,
           native=settings.native, favicon="🔤", show_welcome_message=False)


if __name__ in {"__main__", "__mp_main__"}:
    main()
