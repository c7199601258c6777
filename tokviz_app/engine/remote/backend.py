"""The models that the configured servers list, as catalog entries.

Servers are asked in background threads (each answer bounded by MODELS_DEADLINE), so building the page
never waits for a slow or silent server: until a server answers, its entry says "connecting…", and
the page replaces it when the answer (or "unreachable") arrives.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

from ...core.contract import Backend, Progress
from ...core.errors import ModelLoadError, ModelNotFoundError, TokvizError
from ...core.types import ModelInfo
from .client import ServerClient
from .listing import MODELS_DEADLINE, MODELS_TTL, ListedModel, check_models, fetch_models, remote_key, remote_label
from .model import RemoteModel
from .servers import ServerConfig, ServerOptions, scrub

FIRST_WAIT = 2.0  # seconds after start during which infos() waits for first answers (engine users, tests)
PLACEHOLDER = "server"  # model id of a server's own entry (connecting / unreachable)


@dataclass
class _Answer:
    """A server's last answer to GET /models."""

    checked: float | None = None  # time.monotonic() of the answer; None: none yet
    checked_wall: float | None = None
    models: list[ListedModel] = field(default_factory=list)
    error: str | None = None  # could not list its models
    note: str | None = None  # listed them, but some entries were left out
    arrived: threading.Event = field(default_factory=threading.Event)


class RemoteBackend(Backend):
    """The models of every `--server`, as catalog entries with status "remote"; loads them on demand.

    Several servers given as text get no key from $TOKVIZ_SERVER_API_KEY (it would go to all of them):
    pass ServerConfigs with their own keys."""

    def __init__(self, servers: Sequence[str | ServerConfig], first_wait: float = FIRST_WAIT) -> None:
        shared: ServerOptions = {"api_key": None} if len(servers) > 1 else {}
        self.configs = [ServerConfig.parse(s, **shared) for s in servers]
        self._clients = {c.url: ServerClient(c) for c in self.configs}
        self._answers = {c.url: _Answer() for c in self.configs}
        self._models: dict[str, RemoteModel] = {}
        self._key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._wait_until = time.monotonic() + first_wait
        self.refresh(wait=False)

    def _fetch(self, config: ServerConfig) -> None:
        client = self._clients[config.url]
        try:
            models, note = check_models(fetch_models(client), client.base)
            error = None
        except TokvizError as failure:
            models, note, error = [], None, str(failure)
        except Exception as failure:  # noqa: BLE001 - a hostile answer must never break the page
            models, note, error = [], None, client.error(f"The model list of {config.url} could not be read: "
                                                         f"{type(failure).__name__}").args[0]
        with self._lock:
            answer = self._answers[config.url]
            answer.checked, answer.checked_wall = time.monotonic(), time.time()
            answer.models, answer.error, answer.note = models, error, note
            self._refreshing.discard(config.url)
        answer.arrived.set()

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
            threading.Thread(target=self._fetch, args=(config,), name="tokviz-models", daemon=True).start()

    def _refresh_stale(self) -> None:
        now = time.monotonic()
        if any(a.checked is not None and now - a.checked > MODELS_TTL for a in self._answers.values()):
            self.refresh(wait=False)

    def pending(self) -> bool:
        """True while some server has not answered yet."""
        return any(not a.arrived.is_set() for a in self._answers.values())

    def infos(self) -> list[ModelInfo]:
        """Entries for the page's dropdown, from the last answers (never waits for the network, except in
        the first FIRST_WAIT seconds); stale answers are refreshed in the background every MODELS_TTL s."""
        for answer in self._answers.values():
            remaining = self._wait_until - time.monotonic()
            if remaining <= 0:
                break
            answer.arrived.wait(remaining)
        self._refresh_stale()
        infos = []
        for config in self.configs:
            answer = self._answers[config.url]
            extra: dict[str, object] = {"remote": True, "server": config.url}
            placeholder = remote_key(config, PLACEHOLDER)
            if not answer.arrived.is_set():
                infos.append(ModelInfo(placeholder, f"{config.netloc} (connecting…)", config.url,
                                       f"Asking {config.url} for its models…", "remote", {**extra, "pending": True}))
                continue
            if answer.error:
                infos.append(ModelInfo(placeholder, f"{config.netloc} (unreachable)", config.url, answer.error,
                                       "remote", {**extra, "error": answer.error}))
            for model in answer.models:
                key = remote_key(config, model["id"])
                context = f", context {model['max_model_len']} tokens" if model["max_model_len"] else ""
                infos.append(ModelInfo(key, remote_label(config, model["id"]), config.url,
                                       f"Served by {config.url}{context}", "remote",
                                       {**extra, "model": model["id"], "loaded": key in self._models}))
        return infos

    def health(self) -> list[dict[str, object]]:
        """Each server's state for /healthz, from memory: "ok", "degraded" (no usable answer, or entries
        left out) or "pending" (not answered yet). Stale states are refreshed in the background."""
        self._refresh_stale()
        out = []
        for config in self.configs:
            a = self._answers[config.url]
            state = "pending" if not a.arrived.is_set() else "degraded" if (a.error or a.note) else "ok"
            out.append({"url": config.url, "state": state, "models": len(a.models),
                        "problem": scrub(a.error or a.note) if (a.error or a.note) else None,
                        "checked": None if a.checked_wall is None else round(a.checked_wall, 1)})
        return out

    def info(self, key: str) -> ModelInfo:
        """The catalog entry of one remote model; ModelNotFoundError if its server does not list it.
        Waits (bounded) for the server's first answer."""
        lookup = self._lookup(key)
        if lookup is not None:
            self._answers[lookup[0].url].arrived.wait(MODELS_DEADLINE + 2 * lookup[0].connect_timeout)
        found = next((i for i in self.infos() if i.key == key), None)
        if found is None:
            where = lookup[0].url if lookup else "any configured server"
            raise ModelNotFoundError(f"'{key}' is not a model of {where}.")
        return found

    def _lookup(self, key: str) -> tuple[ServerConfig, str] | None:
        for config in self.configs:
            suffix = f" @ {config.url}"
            if key.endswith(suffix):
                return config, key[: -len(suffix)]
        return None

    def handles(self, name: str) -> bool:
        return self._lookup(name) is not None

    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """A server's model is offered already: this only checks that its server lists it."""
        return self.info(name)

    def catalog(self) -> list[ModelInfo]:
        return self.infos()

    def load(self, key: str, progress: Progress | None = None) -> RemoteModel:
        found = self._lookup(key)
        if found is None:
            raise ModelNotFoundError(f"'{key}' is not a model of any configured server.")
        config, model_id = found
        if model_id == PLACEHOLDER:  # a server's own entry (connecting / unreachable): ask again, explain
            self._fetch(config)
            answer = self._answers[config.url]
            names = ", ".join(m["id"] for m in answer.models[:20]) or "it lists none"
            raise ModelLoadError(answer.error or f"{config.url} answers now; pick one of its models: {names}.")
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
