"""Async facade over the engine: the only module that touches `nicegui.run`.

Every blocking engine call runs in a worker thread (`run.io_bound`); torch releases
the GIL, so the event loop and every tab stay responsive. Models are shared by all
tabs (one ModelManager); sessions belong to one tab each.

Cancellation: `run.io_bound` swallows `CancelledError` and returns None (NiceGUI
3.x), while the worker thread finishes its call. We turn that back into a
`CancelledError`, and keep each session consistent with what its tab shows by
passing the number of tokens the tab knows about (`expected`) to every call: a step
that finished after its tab stopped listening is truncated away on the next call.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nicegui import run

from .engine.types import ModelInfo, SamplingParams, TokenStep

_DONE = object()
ProgressHandler = Callable[[float | None, str], None]


@dataclass(eq=False)
class SessionHandle:
    """One tab's generation session. `session` is set once the prompt is scored."""

    model: Any
    prompt: str
    params: SamplingParams
    session: Any = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def prompt_tokens(self) -> list[TokenStep]:
        return list(self.session.prompt_tokens) if self.session is not None else []


class ModelService:
    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._loaded: dict[str, Any] = {}

    # ----------------------------------------------------------------- models
    def catalog(self) -> list[ModelInfo]:
        """The catalog (file-system checks only; cheap)."""
        return list(self.manager.catalog())

    def default_key(self) -> str:
        return self.manager.default_key()

    def loaded_model(self, key: str) -> Any | None:
        """The model for `key` if some tab already loaded it (instant), else None."""
        return self._loaded.get(key)

    async def load(self, key: str, on_progress: ProgressHandler | None = None) -> Any:
        """Load (or get) a shared model; `on_progress` is called on the event loop."""
        if key in self._loaded:
            return self._loaded[key]
        loop = asyncio.get_running_loop()

        def progress(fraction: float | None, message: str) -> None:
            if on_progress is not None and not loop.is_closed():
                loop.call_soon_threadsafe(on_progress, fraction, message)

        model = await self._call(self.manager.load, key, progress=progress)
        self._loaded[key] = model
        self._loaded.setdefault(model.key, model)
        return model

    # --------------------------------------------------------------- sessions
    @staticmethod
    def new_handle(model: Any, prompt: str, params: SamplingParams) -> SessionHandle:
        return SessionHandle(model=model, prompt=prompt, params=params)

    async def start(self, handle: SessionHandle) -> SessionHandle:
        """Tokenise and score the prompt. If the handle is closed meanwhile, the session is freed."""

        def work() -> SessionHandle:
            session = handle.model.start(handle.prompt, handle.params)
            with handle.lock:
                if handle.closed:
                    session.close()
                else:
                    handle.session = session
            return handle

        return await self._call(work)

    async def step(self, handle: SessionHandle, expected: int, params: SamplingParams | None = None) -> TokenStep:
        """One new token after the first `expected` generated tokens."""

        def work() -> TokenStep:
            with handle.lock:
                session = self._open(handle)
                self._reconcile(session, expected)
                if params is not None:
                    session.params = params
                return session.step()

        return await self._call(work)

    async def choose(self, handle: SessionHandle, position: int, token_id: int) -> TokenStep:
        """Replace generated token `position` and drop the ones after it."""

        def work() -> TokenStep:
            with handle.lock:
                session = self._open(handle)
                return session.choose(position, token_id)

        return await self._call(work)

    async def close(self, handle: SessionHandle | None) -> None:
        """Free the session's KV cache (waits for a call in flight to finish)."""
        if handle is None:
            return
        handle.closed = True

        def work() -> None:
            with handle.lock:
                if handle.session is not None and not getattr(handle.session, "closed", False):
                    handle.session.close()

        try:
            await self._call(work)
        except asyncio.CancelledError:  # app shutting down: close right here instead
            work()

    def is_eos(self, handle: SessionHandle, step: TokenStep) -> bool:
        return handle.session is not None and bool(handle.session.is_eos(step))

    def text(self, handle: SessionHandle) -> str:
        return handle.session.text if handle.session is not None else ""

    # -------------------------------------------------------------- internals
    @staticmethod
    def _open(handle: SessionHandle) -> Any:
        from .engine.errors import TokvizError

        if handle.closed or handle.session is None:
            raise TokvizError("This session was closed.")
        return handle.session

    @staticmethod
    def _reconcile(session: Any, expected: int) -> None:
        if len(session.tokens) != expected:
            session.truncate(expected)

    @staticmethod
    async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        box: list[Any] = []

        def work() -> object:
            box.append(fn(*args, **kwargs))
            return _DONE

        if await run.io_bound(work) is not _DONE:  # cancelled, or the app is stopping
            raise asyncio.CancelledError()
        return box[0]
