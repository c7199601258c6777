"""The models that the configured servers list, as catalog entries."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Callable, Sequence

from ..errors import ModelLoadError, ModelNotFoundError, TokvizError
from ..types import ModelInfo
from .client import MODELS_TTL, ServerClient, ServerConfig, list_models, remote_key, remote_label
from .model import RemoteModel


class RemoteCatalog:
    """The models of every `--server`, as catalog entries with status "remote"; loads them on demand."""

    def __init__(self, servers: Sequence[str | ServerConfig]) -> None:
        self.configs = [ServerConfig.parse(s) for s in servers]
        self._clients = {c.url: ServerClient(c) for c in self.configs}
        self._lists: dict[str, tuple[float, list[dict], str | None]] = {}
        self._models: dict[str, RemoteModel] = {}
        self._key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()

    def _fetch(self, config: ServerConfig) -> None:
        try:
            models, error = list_models(self._clients[config.url]), None
        except TokvizError as failure:
            models, error = [], str(failure)
        with self._lock:
            self._lists[config.url] = (time.monotonic(), models, error)
            self._refreshing.discard(config.url)

    def refresh(self, wait: bool = True) -> None:
        """Ask every server for its models (at once, or in the background when `wait` is False)."""
        for config in self.configs:
            if wait:
                self._fetch(config)
                continue
            with self._lock:
                if config.url in self._refreshing:
                    continue
                self._refreshing.add(config.url)
            threading.Thread(target=self._fetch, args=(config,), daemon=True).start()

    def infos(self) -> list[ModelInfo]:
        """Entries for the page's dropdown. The first call asks the servers (short timeouts); later
        calls return the last answer and refresh it in the background every MODELS_TTL seconds."""
        missing = [c for c in self.configs if c.url not in self._lists]
        for config in missing:
            self._fetch(config)
        if any(time.monotonic() - self._lists[c.url][0] > MODELS_TTL for c in self.configs):
            self.refresh(wait=False)
        infos = []
        for config in self.configs:
            _, models, error = self._lists[config.url]
            if error:
                infos.append(ModelInfo(f"server @ {config.url}", f"{config.netloc} (unreachable)", config.url,
                                       error, "remote", {"remote": True, "server": config.url, "error": error}))
            for model in models:
                key = remote_key(config, model["id"])
                infos.append(ModelInfo(key, remote_label(config, model["id"]), config.url,
                                       f"Served by {config.url}" + (f", context {model['max_model_len']} tokens"
                                                                     if model.get("max_model_len") else ""),
                                       "remote", {"remote": True, "server": config.url, "model": model["id"],
                                                  "loaded": key in self._models}))
        return infos

    def info(self, key: str) -> ModelInfo:
        """The catalog entry of one remote model; ModelNotFoundError if its server does not list it."""
        found = next((i for i in self.infos() if i.key == key), None)
        if found is None:
            lookup = self._lookup(key)
            where = lookup[0].url if lookup else "any configured server"
            raise ModelNotFoundError(f"'{key}' is not a model of {where}.")
        return found

    def _lookup(self, key: str) -> tuple[ServerConfig, str] | None:
        for config in self.configs:
            suffix = f" @ {config.url}"
            if key.endswith(suffix):
                return config, key[: -len(suffix)]
        return None

    def has(self, key: str) -> bool:
        return self._lookup(key) is not None

    def load(self, key: str, progress: Callable[[float | None, str], None] | None = None) -> RemoteModel:
        found = self._lookup(key)
        if found is None:
            raise ModelNotFoundError(f"'{key}' is not a model of any configured server.")
        config, model_id = found
        if model_id == "server":  # the placeholder of an unreachable server: ask again, explain
            self._fetch(config)
            _, models, error = self._lists[config.url]
            raise ModelLoadError(error or f"{config.url} answers now; pick one of its models: "
                                          f"{', '.join(m['id'] for m in models) or 'it lists none'}.")
        with self._key_locks[key]:
            model = self._models.get(key)
            if model is None:
                model = RemoteModel(config, model_id, key=key, client=self._clients[config.url], progress=progress)
                self._models[key] = model
            return model

    def unload(self, key: str) -> None:
        self._models.pop(key, None)

    def loaded(self) -> list[RemoteModel]:
        return list(self._models.values())
