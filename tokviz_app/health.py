"""`GET /healthz`: a small JSON report for container health checks and monitoring."""

from __future__ import annotations

import time
from importlib import metadata
from typing import Any

from .core.contract import ModelRegistry

STARTED = time.time()


def version() -> str:
    try:
        return metadata.version("tokviz")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def payload(manager: ModelRegistry, device: str) -> dict[str, Any]:
    """status, version, device, loaded models, open tabs, model servers (cheap: no file-system or network
    checks; a server's state is its last answer, refreshed in the background)."""
    models = []
    for model in manager.loaded():
        models.append({"key": model.key, "device": model.device, "dtype": model.dtype})
    data: dict[str, Any] = {
        "status": "ok",
        "app": "tokviz",
        "version": version(),
        "device": device,
        "models": [m["key"] for m in models],
        "loaded": models,
        "tabs": connected_tabs(),
        "uptime_s": round(time.time() - STARTED, 1),
    }
    servers = manager.health()
    if servers:
        # "status" stays "ok" (this process serves); each --server says "ok", "degraded" or "pending"
        data["servers"] = servers
        data["degraded"] = [s["url"] for s in servers if s["state"] == "degraded"]
    return data


def connected_tabs() -> int:
    """Pages with a live websocket (open tabs or native windows)."""
    from nicegui import Client

    return sum(1 for client in list(Client.instances.values()) if client.has_socket_connection)


def register(app: Any, manager: ModelRegistry, device: str) -> None:
    """Add the route to NiceGUI's FastAPI app (replacing an earlier one, e.g. in tests)."""
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/healthz"]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        return payload(manager, device)
