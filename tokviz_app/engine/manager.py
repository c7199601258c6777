"""ModelManager: one per process; asks its backends, in order, which one handles a model name."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.contract import Backend, Model, ModelRegistry, Progress
from ..core.types import ModelInfo
from .local_backend import LocalBackend
from .local_model import LoadedModel
from .remote import RemoteBackend, ServerConfig

__all__ = ["LoadedModel", "ModelManager"]


class ModelManager(ModelRegistry):
    """The models every tab can use. Backends are tried in order: the servers' models (`--server`)
    first, then the local backend, which takes every other name (catalog key, hub id, folder)."""

    def __init__(self, device: str = "auto", dtype: str | None = None, *, batching: bool = True,
                 cpu_kernels: str | None = None, servers: Sequence[str | ServerConfig] = (),
                 backends: Sequence[Backend] = ()) -> None:
        self.device = device
        self.local = LocalBackend(device, dtype, batching=batching, cpu_kernels=cpu_kernels)
        remote = [RemoteBackend(servers)] if servers else []
        self.backends: list[Backend] = [*backends, *remote, self.local]

    def backend_for(self, name: str) -> Backend:
        name = (name or "").strip()
        return next(backend for backend in self.backends if backend.handles(name))

    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """Offer an extra model (hub id or local folder); returns its catalog entry.

        `offer=False` only checks the name: a name typed in a page joins everyone's catalog once it has
        loaded, so failed names and odd folders never show up in other tabs."""
        return self.backend_for(name).add((name or "").strip(), offer=offer)

    def catalog(self) -> list[ModelInfo]:
        local = self.local.catalog()  # the local models first, as the page lists them
        return local + [info for backend in self.backends if backend is not self.local for info in backend.catalog()]

    def default_key(self) -> str:
        return self.local.default_key()

    def loaded(self) -> list[Model]:
        return [model for backend in self.backends for model in backend.loaded()]

    def load(self, name: str, progress: Progress | None = None) -> Model:
        """Load (or return the already loaded) model. Concurrent calls load it once."""
        return self.backend_for(name).load((name or "").strip(), progress)

    def unload(self, name: str) -> None:
        self.backend_for(name).unload((name or "").strip())

    def health(self) -> list[dict]:
        """Each model server's state for /healthz."""
        return [entry for backend in self.backends for entry in backend.health()]
