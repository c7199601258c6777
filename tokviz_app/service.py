"""Async facade over the engine: the only module that touches `nicegui.run`.

Every blocking engine call runs in a worker thread; torch releases the GIL, so the
event loop and every tab stay responsive. Models are shared by all tabs (one
ModelManager); sessions belong to one tab each.

Two pools, so that no kind of work can starve the other:
- session work (prompt scoring, steps, choices) runs on the service's own inference
  pool. Its threads mostly wait on the model's lane, which batches them, so it is
  wide (64): NiceGUI's default pool has cpu_count + 4 threads (6 on two cores), and
  six slow jobs there froze every tab for 42 s (issue 11).
- everything else (model loads, vocabulary indexes, parsing imports) runs through
  `run.io_bound`. Remote calls there have timeouts, so none of it waits forever.

Cancellation: `run.io_bound` swallows `CancelledError` and returns None (NiceGUI
3.x), while the worker thread finishes its call; we turn that back into a
`CancelledError`. Each session is kept consistent with what its tab shows by
passing the number of tokens the tab knows about (`expected`) to every call: a step
that finished after its tab stopped listening is truncated away on the next call.
A closed tab's prompt scoring stops at the next chunk (`should_stop`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nicegui import run

from .engine.types import ModelInfo, SamplingParams, TokenStep

_DONE = object()
INFERENCE_THREADS = 64  # they wait on the lane, which batches them; bounded so a crowd queues instead
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
        self._inference = ThreadPoolExecutor(INFERENCE_THREADS, thread_name_prefix="tokviz-session")

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
            session = handle.model.start(handle.prompt, handle.params, should_stop=lambda: handle.closed)
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
                session = self._open(handle)
                self._reconcile(session, expected)
                if params is not None:
                    session.params = params
                return session.step()

        return await self._infer(work)

    async def choose(self, handle: SessionHandle, position: int, token_id: int,
                     expected: int | None = None) -> TokenStep:
        """Replace generated token `position` and drop the ones after it."""

        def work() -> TokenStep:
            with handle.lock:
                session = self._open(handle)
                if expected is not None:
                    self._reconcile(session, expected)
                return session.choose(position, token_id)

        return await self._infer(work)

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
            await self._infer(work)
        except asyncio.CancelledError:  # app shutting down: close right here instead
            work()

    async def switch_branch(self, handle: SessionHandle, branch_id: int) -> list[TokenStep]:
        """Make another branch of the tree the active text; returns its tokens."""

        def work() -> list[TokenStep]:
            with handle.lock:
                return list(self._open(handle).switch_branch(branch_id))

        return await self._infer(work)

    async def branches(self, handle: SessionHandle) -> tuple[list[Any], int]:
        """(copies of the branches, active branch id)."""

        def work() -> tuple[list[Any], int]:
            from .engine.types import Branch

            with handle.lock:
                session = self._open(handle)
                return ([Branch(b.id, list(b.tokens), b.parent, b.split) for b in session.branches],
                        session.active_branch.id)

        return await self._infer(work)

    async def find_tokens(self, model: Any, query: str, limit: int = 20) -> list[tuple[int, str]]:
        """Vocabulary search by text (the first search builds the model's text index)."""
        return await self._call(model.find_tokens, query, limit)

    async def score(self, handle: SessionHandle, position: int, token_ids: list[int],
                    expected: int) -> list[tuple[int, float, int]]:
        """(token_id, prob, rank) of any tokens at generated `position`."""

        def work() -> list[tuple[int, float, int]]:
            with handle.lock:
                session = self._open(handle)
                self._reconcile(session, expected)
                return session.score(position, token_ids)

        return await self._infer(work)

    async def snapshot(self, handle: SessionHandle) -> Any:
        """The session frozen for export (tokens, numbers, branches)."""
        from .engine.export import snapshot_of

        def work() -> Any:
            with handle.lock:
                return snapshot_of(self._open(handle), prompt=handle.prompt)

        return await self._infer(work)

    async def read_snapshot(self, data: str | bytes) -> Any:
        """Parse and check an imported file in a worker thread: 16 MB take seconds of pure Python."""
        from .engine.export import from_json

        return await self._call(from_json, data)

    async def restore(self, model: Any, snapshot: Any) -> SessionHandle:
        """A live session from an imported snapshot, without re-scoring. An ImportFormatError (ids outside the
        vocabulary, more tokens than the context) comes before any session is made."""
        from .engine.export import check_fits

        handle = SessionHandle(model=model, prompt=snapshot.prompt, params=snapshot.settings)

        def work() -> SessionHandle:
            check_fits(snapshot, model)
            handle.session = model.restore(snapshot)
            return handle

        return await self._infer(work)

    async def score_text(self, model: Any, text: str, params: SamplingParams) -> SessionHandle:
        """Score every token of `text`, then continue as a session whose generated tokens are that text
        (after its first token), so the user can branch from any of them and keep generating."""
        from dataclasses import replace

        from .engine.export import SessionSnapshot
        from .engine.types import Branch

        handle = SessionHandle(model=model, prompt=text, params=params)

        def work() -> SessionHandle:
            scored = model.start(text, params, should_stop=lambda: handle.closed)
            try:
                steps, ids = list(scored.prompt_tokens), scored.token_ids
            finally:
                scored.close()
            generated = [replace(s, is_prompt=False, position=i) for i, s in enumerate(steps[1:])]
            snapshot = SessionSnapshot(model={}, settings=params, prompt=text, prompt_ids=ids[:1],
                                       prompt_tokens=steps[:1], branches=[Branch(0, generated)], active=0)
            handle.session = model.restore(snapshot)
            return handle

        return await self._infer(work)

    @staticmethod
    def streams(handle: SessionHandle) -> bool:
        """True for sessions whose generate() is one streaming request (remote servers)."""
        return bool(getattr(handle.session, "streams", False))

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
                session = self._open(handle)
                self._reconcile(session, expected)
                if params is not None:
                    session.params = params
                session.generate(n, should_stop=stop.is_set,
                                 on_token=lambda step: loop.call_soon_threadsafe(queue.put_nowait, step))

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

    async def _infer(self, fn: Callable[[], Any]) -> Any:
        """Session work on the inference pool; cancelling the await leaves the thread to finish."""
        return await asyncio.get_running_loop().run_in_executor(self._inference, fn)

    def shutdown(self) -> None:
        self._inference.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        box: list[Any] = []

        def work() -> object:
            box.append(fn(*args, **kwargs))
            return _DONE

        if await run.io_bound(work) is not _DONE:  # cancelled, or the app is stopping
            raise asyncio.CancelledError()
        return box[0]
