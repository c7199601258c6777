"""Async facade over the engine: the only module that touches `nicegui.run`.

Every blocking engine call runs in a worker thread (torch releases the GIL); models are shared by all
tabs, sessions belong to one tab each. Two pools, so that no kind of work starves the other: session
work runs on the service's own wide pool (its threads mostly wait on the model's lane, which batches
them; six slow jobs in NiceGUI's cpu_count + 4 pool froze every tab for 42 s, issue 11), everything
else (loads, vocabulary indexes, parsing imports) through `run.io_bound`, with timeouts for remote calls.

Cancellation: `run.io_bound` swallows `CancelledError` and returns None (NiceGUI 3.x); we turn that back
into a `CancelledError`. Every call passes the number of tokens the tab shows (`expected`): a step that
finished after its tab stopped listening is truncated away on the next call. A closed tab's prompt
scoring stops at the next chunk (`should_stop`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nicegui import run

from .core.contract import Model, ModelRegistry, Scored, Session
from .core.errors import TokvizError
from .core.types import Branch, ModelInfo, SamplingParams, SessionSnapshot, TokenStep
from .exports.snapshot import check_fits, from_json
from .service_layers import LayerCalls  # layer_lens, decided_layers
from .service_what_if import WhatIfCalls  # what_if

_DONE = object()
INFERENCE_THREADS = 64  # they wait on the lane, which batches them; bounded so a crowd queues instead
ProgressHandler = Callable[[float | None, str], None]
T = TypeVar("T")


def _on_loop(callback: Callable[..., None] | None, stopped: Callable[[], bool] = lambda: False) -> Callable[..., None]:
    """`callback` for a worker thread: each call runs on this event loop (none once it closed or `stopped()`)."""
    loop = asyncio.get_running_loop()

    def call(*args: Any) -> None:
        if callback is not None and not stopped() and not loop.is_closed():
            loop.call_soon_threadsafe(callback, *args)
    return call


@dataclass(eq=False)
class SessionHandle:
    """One tab's generation session. `session` is set once the prompt is scored. A chat's handle has
    `messages` (its prompt is made by the model's chat template) and an empty `prompt`."""

    model: Model
    prompt: str
    params: SamplingParams
    session: Session | None = None
    messages: list[dict[str, str]] | None = None
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def prompt_tokens(self) -> list[TokenStep]:
        return list(self.session.prompt_tokens) if self.session is not None else []


class ModelService(LayerCalls, WhatIfCalls):
    def __init__(self, manager: ModelRegistry) -> None:
        self.manager = manager
        self._inference = ThreadPoolExecutor(INFERENCE_THREADS, thread_name_prefix="tokviz-session")

    # ----------------------------------------------------------------- models
    def catalog(self) -> list[ModelInfo]:
        """The catalog (file-system checks only; cheap)."""
        return list(self.manager.catalog())

    def default_key(self) -> str:
        return self.manager.default_key()

    def loaded_model(self, key: str) -> Model | None:
        """The model for `key` if some tab already loaded it (instant), else None."""
        return next((model for model in self.manager.loaded() if model.key == key), None)

    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """Check a typed model name (cheap: no download); `offer` makes it everyone's catalog entry."""
        return self.manager.add(name, offer=offer)

    async def load(self, key: str, on_progress: ProgressHandler | None = None) -> Model:
        """Load (or get) a shared model; `on_progress` is called on the event loop."""
        model = self.loaded_model(key)
        if model is not None:
            return model
        return await self._call(self.manager.load, key, _on_loop(on_progress))

    # --------------------------------------------------------------- sessions
    @staticmethod
    def new_handle(model: Model, prompt: str, params: SamplingParams,
                   messages: list[dict[str, str]] | None = None) -> SessionHandle:
        return SessionHandle(model=model, prompt="" if messages is not None else prompt, params=params,
                             messages=messages)

    async def start(self, handle: SessionHandle, on_progress: Callable[[int, int], None] | None = None) -> SessionHandle:
        """Tokenise and score the prompt; `on_progress(scored, total)` is called on the event loop as it goes.
        If the handle is closed meanwhile, the session is freed."""
        progress = _on_loop(on_progress, stopped=lambda: handle.closed)

        def work() -> SessionHandle:
            if handle.messages is not None:
                session = handle.model.start_chat(handle.messages, handle.params, should_stop=lambda: handle.closed)
            else:
                session = handle.model.start(handle.prompt, handle.params, should_stop=lambda: handle.closed,
                                             progress=progress)
            with handle.lock:
                if handle.closed:
                    session.close()
                else:
                    handle.session = session
            return handle

        return await self._infer(work)

    async def step(self, handle: SessionHandle, expected: int, params: SamplingParams | None = None) -> TokenStep:
        """One new token after the first `expected` generated tokens."""

        def work() -> TokenStep:
            with handle.lock:
                return self._reconciled(handle, expected, params).step()

        return await self._infer(work)

    async def choose(self, handle: SessionHandle, position: int, token_id: int,
                     expected: int | None = None) -> TokenStep:
        """Replace generated token `position` and drop the ones after it."""

        def work() -> TokenStep:
            with handle.lock:
                return self._reconciled(handle, expected).choose(position, token_id)

        return await self._infer(work)

    async def close(self, handle: SessionHandle | None) -> None:
        """Free the session's KV cache (waits for a call in flight to finish)."""
        if handle is None:
            return
        handle.closed = True

        def work() -> None:
            with handle.lock:
                if handle.session is not None and not handle.session.closed:
                    handle.session.close()

        try:
            await self._infer(work)
        except asyncio.CancelledError:  # app shutting down: close right here instead
            work()

    async def switch_branch(self, handle: SessionHandle, branch_id: int) -> list[TokenStep]:
        """Make another branch of the tree the active text; returns its tokens."""

        def work() -> list[TokenStep]:
            with handle.lock:
                return list(self._open(handle).switch_branch(branch_id))

        return await self._infer(work)

    async def branches(self, handle: SessionHandle) -> tuple[list[Branch], int]:
        """(copies of the branches, active branch id)."""

        def work() -> tuple[list[Branch], int]:
            with handle.lock:
                session = self._open(handle)
                return [b.copy() for b in session.branches], session.active_branch.id

        return await self._infer(work)

    async def find_tokens(self, model: Model, query: str, limit: int = 20) -> list[tuple[int, str]]:
        """Vocabulary search by text (the first search builds the model's text index)."""
        return await self._call(model.find_tokens, query, limit)

    async def score(self, handle: SessionHandle, position: int, token_ids: list[int], expected: int) -> list[Scored]:
        """(token_id, prob, rank, sampled_prob) of any tokens at generated `position`."""

        def work() -> list[Scored]:
            with handle.lock:
                return self._reconciled(handle, expected).score(position, token_ids)

        return await self._infer(work)

    async def snapshot(self, handle: SessionHandle) -> SessionSnapshot:
        """The session frozen for export (tokens, numbers, branches)."""

        def work() -> SessionSnapshot:
            with handle.lock:
                return self._open(handle).snapshot(None if handle.messages is not None else handle.prompt)

        return await self._infer(work)

    async def read_snapshot(self, data: str | bytes) -> SessionSnapshot:
        """Parse and check an imported file in a worker thread: 16 MB take seconds of pure Python."""
        return await self._call(from_json, data)

    async def restore(self, model: Model, snapshot: SessionSnapshot) -> SessionHandle:
        """A live session from an imported snapshot, without re-scoring. An ImportFormatError (ids outside the
        vocabulary, more tokens than the context) comes before any session is made."""
        handle = SessionHandle(model=model, prompt=snapshot.prompt, params=snapshot.settings,
                               messages=snapshot.messages)

        def work() -> SessionHandle:
            check_fits(snapshot, model)
            handle.session = model.restore(snapshot)
            return handle

        return await self._infer(work)

    async def score_text(self, model: Model, text: str, params: SamplingParams) -> SessionHandle:
        """Score every token of `text`, then continue as a session whose generated tokens are that text."""
        handle = SessionHandle(model=model, prompt=text, params=params)

        def work() -> SessionHandle:
            handle.session = model.score_text(text, params, should_stop=lambda: handle.closed)
            return handle

        return await self._infer(work)

    async def stream(self, handle: SessionHandle, expected: int, params: SamplingParams | None, n: int):
        """Yield up to `n` new tokens from one `session.generate()` call, as they arrive.

        Leaving the loop early (Stop, a closed tab) sets the stop flag, which cancels the
        server's request; tokens that arrive after that are truncated away by the next call.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            with handle.lock:
                self._reconciled(handle, expected, params).generate(
                    n, should_stop=stop.is_set, on_token=lambda step: loop.call_soon_threadsafe(queue.put_nowait, step))

        async def produce() -> None:
            try:
                await self._infer(work)
                queue.put_nowait(_DONE)
            except BaseException as error:  # hand errors (and cancellation) to the consumer
                queue.put_nowait(error)

        producer = asyncio.ensure_future(produce())
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            if not producer.done():
                await asyncio.shield(producer)

    def is_eos(self, handle: SessionHandle, step: TokenStep) -> bool:
        return handle.session is not None and handle.session.is_eos(step)

    # -------------------------------------------------------------- internals
    @staticmethod
    def _open(handle: SessionHandle) -> Session:
        if handle.closed or handle.session is None:
            raise TokvizError("This session was closed.")
        return handle.session

    def _reconciled(self, handle: SessionHandle, expected: int | None,
                    params: SamplingParams | None = None) -> Session:
        """The open session, cut back to the `expected` tokens its tab shows (a step that finished after the tab
        stopped listening goes), with `params` for the next steps. Call with `handle.lock` held."""
        session = self._open(handle)
        if expected is not None and len(session.tokens) != expected:
            session.truncate(expected)
        if params is not None:
            session.params = params
        return session

    async def _infer(self, fn: Callable[[], T]) -> T:
        """Session work on the inference pool; cancelling the await leaves the thread to finish."""
        return await asyncio.get_running_loop().run_in_executor(self._inference, fn)

    def shutdown(self) -> None:
        self._inference.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        box: list[T] = []

        def work() -> object:
            box.append(fn(*args, **kwargs))
            return _DONE

        if await run.io_bound(work) is not _DONE:  # cancelled, or the app is stopping
            raise asyncio.CancelledError()
        return box[0]
