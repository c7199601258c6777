"""One tab's flows: initialize, generate, stop, reset, choose. Owns the tab's TabState.

All engine work goes through `ModelService` (worker threads). One generation task
per tab at most: `state.busy` is set synchronously before anything is awaited, so
double clicks and clicks during generation are ignored instead of racing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nicegui import background_tasks, ui
from nicegui.element import Element

from ..config import Settings
from ..engine.errors import ContextFullError, TokvizError
from ..engine.types import TokenStep
from ..service import ModelService
from ..state import TabState
from .controls import GenerationControls, ModelPicker
from .details import DetailsPanel
from .tokens import TokenView

log = logging.getLogger("tokviz.ui")

FINISH_TEXT = {
    "eos": "finished: end of text",
    "length": "finished: reached the max-tokens setting",
    "stopped": "stopped",
    "context": "finished: the context window is full",
    "error": "stopped by an error",
}


def load_error_message(error: BaseException, key: str) -> str:
    if isinstance(error, TokvizError):
        return str(error)
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return f"Not enough memory to load '{key}'. Close other programs or pick a smaller model."
    return f"Could not load '{key}': {error}"


class TabController:
    def __init__(self, service: ModelService, settings: Settings, state: TabState) -> None:
        self.service = service
        self.settings = settings
        self.state = state
        # views, attached by root.build_page
        self.root: Element
        self.picker: ModelPicker
        self.controls: GenerationControls
        self.tokens: TokenView
        self.details: DetailsPanel

    # ------------------------------------------------------------------ model
    def select_model(self, key: str | None) -> None:
        self.state.model_key = key
        self.picker.describe(key)
        model = self.service.loaded_model(key) if key else None
        if model is not None and model is not self.state.model:
            self._attach(model)  # another tab loaded it already: instant
        elif model is None and self.state.model is not None and not self.state.loading:
            label = self.picker.infos[key].label if key in self.picker.infos else key
            self.picker.set_status(f"Using {self.state.model.label}. Press Initialize Model to load {label}.")

    async def initialize(self) -> None:
        state = self.state
        key = state.model_key
        if state.loading or not key:
            return
        model = self.service.loaded_model(key)
        if model is None:
            state.loading = True
            state.error = ""
            self.refresh()
            label = self.picker.infos[key].label if key in self.picker.infos else key
            self.picker.show_progress(None, f"Loading {label}…")
            try:
                model = await self.service.load(key, on_progress=self._on_progress)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # every failure becomes a message on the page
                message = load_error_message(error, key)
                if not isinstance(error, TokvizError):
                    log.warning("loading %s failed", key, exc_info=error)
                state.error = message
                if not state.closed:
                    with self.root:
                        self.picker.hide_progress()
                        self.picker.set_status(message, error=True)
                        ui.notify(message, type="negative", multi_line=True)
                return
            finally:
                state.loading = False
                if not state.closed:
                    self.refresh()
        if state.closed:
            return
        self.picker.hide_progress()
        self._attach(model)
        self.picker.refresh_catalog(self.service.catalog())

    def _on_progress(self, fraction: float | None, message: str) -> None:
        """Progress from the loading thread, delivered on the event loop by the service."""
        state = self.state
        if not state.closed and state.loading:
            state.load_fraction, state.load_message = fraction, message
            self.picker.show_progress(fraction, message)

    def _attach(self, model: Any) -> None:
        state = self.state
        if model is not state.model:
            self._cancel()
            self._drop_session()
            state.model = model
            self.tokens.clear_all()
            self.details.clear()
            state.tokens, state.prompt_tokens, state.selected = [], [], None
            self.controls.status.set_text("")
        state.error = ""
        self.picker.set_status(f"Ready: {model.label} on {model.device} ({model.dtype}), "
                               f"context {model.context_length} tokens, vocabulary {model.vocab_size}.")
        self.refresh()

    # ------------------------------------------------------------- generation
    def generate_next(self) -> None:
        self._start_generation(1)

    def generate_to_end(self) -> None:
        try:
            n = int(self.controls.max_tokens.value or self.settings.default_max_tokens)
        except (TypeError, ValueError):
            n = self.settings.default_max_tokens
        self._start_generation(max(1, min(n, self.settings.max_tokens_limit)))

    def _start_generation(self, n: int) -> None:
        state = self.state
        if state.busy or state.loading or state.closed:
            return
        if state.model is None:
            ui.notify("Initialize a model first.", type="warning")
            return
        state.busy = state.generating = True  # before any await: a second click is ignored
        state.epoch += 1
        state.finish_reason = ""
        self.controls.status.set_text("generating…")
        self.refresh()
        state.task = background_tasks.create(self._generate(n, state.epoch), name="tokviz generate")

    async def _generate(self, n: int, epoch: int) -> None:
        state = self.state
        reason = "length" if n > 1 else ""
        try:
            handle = await self._ensure_session()
            if handle is None:
                reason = "error"
                return
            for _ in range(n):
                step = await self.service.step(handle, len(state.tokens), state.sampling_params())
                self._append(step)
                if self.service.is_eos(handle, step):
                    reason = "eos"
                    break
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        except ContextFullError as error:
            reason = "context"
            self._notify(str(error), "warning")
        except TokvizError as error:
            reason = "error"
            self._notify(str(error), "negative")
        finally:
            if state.epoch == epoch:  # still this tab's current operation
                state.busy = state.generating = False
                state.task = None
                state.finish_reason = reason
                if not state.closed:
                    self._show_finish()
                    self.refresh()

    async def _ensure_session(self) -> Any:
        """The tab's session for the prompt as it reads now (a new prompt starts a new session)."""
        state = self.state
        prompt = self.controls.prompt.value or ""
        handle = state.handle
        if handle is not None and handle.session is not None and not handle.closed \
                and handle.model is state.model and handle.prompt == prompt:
            return handle
        self._drop_session()
        self.tokens.clear_all()
        self.details.clear()
        state.tokens, state.prompt_tokens, state.selected = [], [], None
        state.prompt = prompt
        handle = state.handle = self.service.new_handle(state.model, prompt, state.sampling_params())
        try:
            await self.service.start(handle)
        except asyncio.CancelledError:
            self._drop_session(handle)
            raise
        except TokvizError as error:
            self._drop_session(handle)
            self._notify(str(error), "negative")
            return None
        state.prompt_tokens = handle.prompt_tokens
        self.tokens.show_prompt(state.prompt_tokens)
        return handle

    def _append(self, step: TokenStep) -> None:
        self.state.tokens.append(step)
        self.tokens.append(step)
        n = len(self.state.tokens)
        self.controls.status.set_text(f"{n} token{'s' if n != 1 else ''} generated…")

    def stop(self) -> None:
        """Stop at once; what was generated stays (a step in flight is dropped)."""
        if self._cancel():
            self.state.finish_reason = "stopped"
            self._show_finish()
        self.refresh()

    def reset(self) -> None:
        """Stop, clear the generated tokens; keep prompt and model. The next generation starts afresh."""
        state = self.state
        self._cancel()
        self._drop_session()
        self.tokens.clear()
        state.tokens, state.selected = [], None
        state.finish_reason = ""
        self.details.clear()
        self.controls.status.set_text("")
        self.refresh()

    def _cancel(self) -> bool:
        """Cancel the running operation, if any; the tab is idle right away."""
        state = self.state
        task, state.task = state.task, None
        state.epoch += 1
        running = state.busy
        state.busy = state.generating = False
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        return running

    def _drop_session(self, handle: Any = None) -> None:
        """Free `handle` (default: the tab's session) in the background."""
        handle = handle or self.state.handle
        if handle is None:
            return
        if self.state.handle is handle:
            self.state.handle = None
        if not handle.closed:
            handle.closed = True
            background_tasks.create(self.service.close(handle), name="tokviz close session")

    # ---------------------------------------------------------------- tokens
    def select(self, step: TokenStep) -> None:
        self.state.selected = step
        self.details.show(step)

    async def choose(self, position: int, token_id: int) -> None:
        """Replace token `position` by an alternative and drop everything after it."""
        state = self.state
        if state.generating:
            self.stop()
        if state.busy or state.closed or state.handle is None or position >= len(state.tokens):
            return
        handle = state.handle
        state.busy = True
        state.epoch += 1
        epoch = state.epoch
        state.task = asyncio.current_task()
        self.refresh()
        try:
            step = await self.service.choose(handle, position, token_id)
        except TokvizError as error:
            self._notify(str(error), "negative")
            return
        finally:
            if state.epoch == epoch:
                state.busy = False
                state.task = None
                if not state.closed:
                    self.refresh()
        if state.closed or state.epoch != epoch or handle is not state.handle:
            return
        del state.tokens[position:]
        self.tokens.truncate(position)
        self._append(step)
        state.finish_reason = ""
        self.controls.status.set_text(f"{len(state.tokens)} tokens · token {position} replaced")
        self.select(step)
        self.tokens.highlight_position(position)

    # ---------------------------------------------------------------- helpers
    def refresh(self) -> None:
        state = self.state
        self.picker.button.set_enabled(not state.loading)
        self.controls.set_running(ready=state.model is not None and not state.loading,
                                  busy=state.busy, generating=state.generating)

    def _show_finish(self) -> None:
        n = len(self.state.tokens)
        text = f"{n} token{'s' if n != 1 else ''}"
        if self.state.finish_reason in FINISH_TEXT:
            text += " · " + FINISH_TEXT[self.state.finish_reason]
        self.controls.status.set_text(text)

    def _notify(self, message: str, kind: str) -> None:
        if not self.state.closed:
            with self.root:
                ui.notify(message, type=kind, multi_line=True)

    def dispose(self) -> None:
        """The tab is gone: cancel its work and free its session."""
        self.state.closed = True
        self._cancel()
        self._drop_session()
