"""One tab's flows: initialize, generate, stop, reset, choose. Owns the tab's TabState.

All engine work goes through `ModelService` (worker threads). One generation task
per tab at most: `state.busy` is set synchronously before anything is awaited, so
double clicks and clicks during generation are ignored instead of racing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any

from nicegui import background_tasks, ui
from nicegui.element import Element

from ..config import Settings
from ..core.errors import ContextFullError, ImportFormatError, TokvizError
from ..exports.snapshot import MAX_IMPORT_BYTES, to_json, too_big
from ..exports.html import render_html
from ..core.types import TokenStep
from ..inputs import clean_prompt, parse_max_tokens, parse_seed, public_message
from ..service import ModelService
from ..state import TabState
from .controls import GenerationControls, ModelPicker
from .branches import BranchPanel, split_positions
from .chart import TokenChart
from .details import DetailsPanel
from .legend import Legend
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
        self.branch_panel: BranchPanel
        self.chart: TokenChart
        self.legend: Legend
        self.perplexity: ui.label
        self.help: ui.dialog
        self.mode = "prob"
        self.palette = "default"
        self.branch_list: list[Any] = []
        self.active_branch: int | None = None
        self.imported: Any = None  # an imported snapshot shown read-only (its model is not loaded)
        self._gen_started = 0.0
        self._gen_count = 0

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
        offered = key in {info.key for info in self.service.catalog()}
        key = self._permitted(key)
        if key is None:
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
                if self.settings.allow_any_model:  # never show the server's own paths
                    message = public_message(message, key, self._folder(key))
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
        if not offered:  # a typed name joins everyone's catalog only once it has loaded
            try:
                self.service.add(key)
            except TokvizError:
                pass
        if state.closed:
            return
        self.picker.hide_progress()
        self._attach(model)
        self.picker.refresh_catalog(self.service.catalog())

    def _permitted(self, key: str) -> str | None:
        """The catalog key to load, or None with a message: only the offered models load, unless the
        server runs with --allow-any-model; then a typed hub id or server-side folder joins the catalog."""
        if key in {info.key for info in self.service.catalog()}:
            return key
        if not self.settings.allow_any_model:
            message = f"'{key}' is not one of the models offered here (the server does not allow other models)."
        else:
            try:  # cheap: a name check or a folder lookup, no download; offered to all once it loads
                info = self.service.add(key, offer=False)
            except TokvizError as error:
                message = public_message(str(error), key, self._folder(key))
            else:
                self.picker.refresh_catalog([*self.service.catalog(), info])  # this tab's list only
                self.picker.select.set_value(info.key)
                self.state.model_key = info.key
                return info.key
        self.state.error = message
        self.picker.set_status(message, error=True)
        ui.notify(message, type="negative", multi_line=True)
        return None

    @staticmethod
    def _folder(name: str) -> str | None:
        """The absolute path a typed folder name resolves to (to hide it from messages), else None."""
        try:
            from pathlib import Path

            return str(Path(name.strip()).expanduser().resolve())
        except (OSError, RuntimeError, ValueError):
            return None

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
            imported = self.imported
            self._clear_view()
            if imported is not None and imported.model.get("key") == model.key:
                self.imported = imported
                background_tasks.create(self._restore_imported(), name="tokviz restore import")
            self.controls.status.set_text("")
        state.error = ""
        self.picker.set_status(f"Ready: {model.label} on {model.device} ({model.dtype}), "
                               f"context {model.context_length} tokens, vocabulary {model.vocab_size}.")
        self.refresh()

    # ------------------------------------------------------------- generation
    def generate_next(self) -> None:
        self._start_generation(1)

    def generate_to_end(self) -> None:
        if self.state.busy:
            return
        try:
            n, note = parse_max_tokens(self.controls.max_tokens.value, self.settings.default_max_tokens,
                                       self.settings.max_tokens_limit)
        except ValueError as error:  # inf, nan: say so, generate nothing
            ui.notify(str(error), type="negative")
            return
        if note:
            ui.notify(note, type="warning")
        self._start_generation(n)

    def _check_seed(self) -> bool:
        """The seed box holds a usable seed (a huge one is reduced, and the box shows the one used)."""
        try:
            seed, note = parse_seed(self.controls.seed.value)
        except ValueError as error:
            ui.notify(str(error), type="negative")
            return False
        if note:
            ui.notify(note, type="warning")
            self.controls.seed.set_value(seed)
        self.state.seed = seed
        return True

    def _start_generation(self, n: int) -> None:
        state = self.state
        if state.busy or state.loading or state.closed:
            return
        if state.model is None:
            ui.notify("Initialize a model first.", type="warning")
            return
        if not self._check_seed():
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
            self._gen_started, self._gen_count = time.perf_counter(), 0
            if n > 1 and handle.model.capabilities.streams:  # remote: one streaming request, Stop cancels it
                async for step in self.service.stream(handle, len(state.tokens), state.sampling_params(), n):
                    self._append(step)
                    if self.service.is_eos(handle, step):
                        reason = "eos"
                        break
            else:
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
        except Exception as error:  # a bug or an odd input must not take the tab (or the server) down
            reason = "error"
            log.warning("generation failed", exc_info=error)
            self._notify(f"Generation failed: {type(error).__name__}: {error}", "negative")
        finally:
            if state.epoch == epoch:  # still this tab's current operation
                state.busy = state.generating = False
                state.task = None
                state.finish_reason = reason
                if not state.closed:
                    self._show_finish()
                    self.refresh()
                    self.chart.flush_if_dirty()
                    self._show_perplexity()
                    background_tasks.create(self.refresh_branches(), name="tokviz branches")

    def _checked_prompt(self) -> str | None:
        """The prompt box's text as the model may read it, or None (with a message) when it is refused.
        Generate and Score text share these checks."""
        prompt, replaced = clean_prompt(self.controls.prompt.value)
        if len(prompt) > self.settings.max_prompt_chars:
            self._notify(f"The prompt is {len(prompt):,} characters long; this server takes at most "
                         f"{self.settings.max_prompt_chars:,}. Shorten it.", "negative")
            return None
        if replaced:
            self._notify(f"The prompt held {replaced} invalid character{'s' if replaced != 1 else ''} "
                         "(unpaired surrogates); each was replaced by �.", "warning")
        return prompt

    async def _ensure_session(self) -> Any:
        """The tab's session for the prompt as it reads now (a new prompt starts a new session)."""
        state = self.state
        prompt = self._checked_prompt()
        if prompt is None:
            return None
        handle = state.handle
        if handle is not None and handle.session is not None and not handle.closed \
                and handle.model is state.model and handle.prompt == prompt:
            return handle
        self._drop_session()
        self._clear_view()
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
        self.chart.append(step)
        n = len(self.state.tokens)
        text = f"{n} token{'s' if n != 1 else ''} generated…"
        if self.state.generating and self._gen_started:
            self._gen_count += 1
            elapsed = time.perf_counter() - self._gen_started
            if elapsed > 0:
                text += f" · {elapsed * 1000 / self._gen_count:.0f} ms/token · {self._gen_count / elapsed:.1f} tokens/s"
        self.controls.status.set_text(text)

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
        prompt_tokens = state.prompt_tokens
        self._clear_view()
        state.prompt_tokens = prompt_tokens  # the prompt's chips stay
        self.tokens.show_prompt(prompt_tokens)
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
        self.chart.select(None if step.is_prompt else step.position)

    async def choose(self, position: int, token_id: int) -> None:
        """Replace token `position` by an alternative and drop everything after it."""
        state = self.state
        if state.generating:
            self.stop()
        if state.handle is None and self.imported is not None and not state.closed:
            ui.notify("This import is read-only: initialize its model to continue from it.", type="warning")
            return
        if state.busy or state.closed or state.handle is None or position > len(state.tokens):
            return
        handle = state.handle
        state.busy = True
        state.epoch += 1
        epoch = state.epoch
        state.task = asyncio.current_task()
        self.refresh()
        try:
            step = await self.service.choose(handle, position, token_id, len(state.tokens))
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
        self.chart.truncate(position)
        self._append(step)
        self.chart.flush()
        self._show_perplexity()
        state.finish_reason = ""
        self.controls.status.set_text(f"{len(state.tokens)} tokens · token {position} replaced")
        self.select(step)
        self.tokens.highlight_position(position)
        await self.refresh_branches()

    # ---------------------------------------------------------------- branches
    async def switch_branch(self, branch_id: int) -> None:
        """Show another branch of the tree (instant: no tokens are recomputed for the view)."""
        state = self.state
        if state.generating:
            self.stop()
        if state.busy or state.closed:
            return
        if self.imported is not None and state.handle is None:  # read-only import
            if not any(b.id == branch_id for b in self.imported.branches):
                return
            self.imported.active = next(i for i, b in enumerate(self.imported.branches) if b.id == branch_id)
            self._show_branch(list(self.imported.branches[self.imported.active].tokens))
            self._show_branches(self.imported.branches, branch_id)
            return
        handle = state.handle
        if handle is None:
            return
        state.busy = True
        self.refresh()
        try:
            tokens = await self.service.switch_branch(handle, branch_id)
        except TokvizError as error:
            self._notify(str(error), "negative")
            return
        finally:
            state.busy = False
            if not state.closed:
                self.refresh()
        if state.closed or handle is not state.handle:
            return
        self._show_branch(tokens)
        await self.refresh_branches()

    def _show_branch(self, tokens: list[TokenStep]) -> None:
        state = self.state
        state.tokens = list(tokens)
        state.selected = None
        state.finish_reason = ""
        self.tokens.replace_all(state.tokens)
        self.chart.set_steps(state.tokens)
        self.details.clear()
        self._show_perplexity()
        n = len(state.tokens)
        self.controls.status.set_text(f"{n} token{'s' if n != 1 else ''}")

    async def refresh_branches(self) -> None:
        """Re-read the branch tree (after a generation, a choice or a switch)."""
        handle = self.state.handle
        if handle is None or handle.session is None or handle.closed:
            return
        try:
            branches, active = await self.service.branches(handle)
        except (TokvizError, AttributeError):
            return
        if not self.state.closed and handle is self.state.handle:
            self._show_branches(branches, active)

    def _show_branches(self, branches: list[Any], active: int | None) -> None:
        self.branch_list, self.active_branch = list(branches), active
        self.branch_panel.show(self.branch_list, active)
        self.tokens.mark_splits(split_positions(self.branch_list, active) if active is not None else set())

    def _show_perplexity(self) -> None:
        scored = [t.logprob for t in self.state.tokens if t.logprob is not None]
        if not scored:
            self.perplexity.set_text("")
            return
        total = sum(scored)
        self.perplexity.set_text(f"sequence perplexity {math.exp(-total / len(scored)):.3f} · "
                                 f"log-prob {total:.2f} over {len(scored)} tokens")

    # ------------------------------------------------------------ colour, chart
    def set_mode(self, mode: str) -> None:
        self.mode = mode
        self.tokens.set_mode(mode)
        self.legend.show(mode)

    def set_palette(self, colorblind: bool) -> None:
        self.palette = "colorblind" if colorblind else "default"
        ui.query("body").classes(add="tv-cb") if colorblind else ui.query("body").classes(remove="tv-cb")

    def select_position(self, position: int, *, menu: bool = False) -> None:
        """Select generated token `position` (chart click, keyboard)."""
        if not 0 <= position < len(self.tokens.steps):
            return
        if menu or self.tokens.menu is not None:
            self.tokens.clicked(position)
        else:
            self.tokens.highlight_position(position)
            self.select(self.tokens.steps[position])

    # --------------------------------------------------------------- any token
    async def search_tokens(self, step: TokenStep, query: str) -> None:
        """Probability and rank of any vocabulary token at the position of `step`."""
        state = self.state
        if not query or state.model is None:
            return
        if step.is_prompt or state.handle is None:
            self.details.show_results(step, [], "Search works on generated tokens of a live session.")
            return
        if state.busy:
            self.details.show_results(step, [], "Busy: try again when the generation has finished.")
            return
        handle = state.handle
        try:
            found = await self.service.find_tokens(state.model, query, 12)
            scored = await self.service.score(handle, step.position, [t for t, _ in found], len(state.tokens)) \
                if found else []
        except TokvizError as error:
            self.details.show_results(step, [], str(error))
            return
        except (AttributeError, NotImplementedError):
            self.details.show_results(step, [], "This model cannot search its vocabulary.")
            return
        texts = dict(found)
        rows = sorted(((t, texts[t], p, r) for t, p, r in scored),
                      key=lambda row: (row[3] is None, row[3] or 0))
        if not state.closed:
            self.details.show_results(step, rows, "" if rows else f"No token contains “{query}”.")

    # ------------------------------------------------------------ score text
    async def score_text(self) -> None:
        """Colour every token of the text in the prompt box; the user can branch from any of them."""
        state = self.state
        if state.busy or state.loading or state.closed:
            return
        if state.model is None:
            ui.notify("Initialize a model first.", type="warning")
            return
        if not self.controls.prompt.value:
            ui.notify("Paste some text into the prompt box first.", type="warning")
            return
        if not self._check_seed():
            return
        text = self._checked_prompt()
        if text is None:
            self.controls.status.set_text("not scored: the text is too long")
            return
        self._cancel()
        self._drop_session()
        self._clear_view()
        state.busy = True
        state.epoch += 1
        epoch = state.epoch
        self.refresh()
        self.controls.status.set_text("scoring…")
        try:
            handle = await self.service.score_text(state.model, text, state.sampling_params())
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the status must never stay on "scoring…"
            message = str(error) if isinstance(error, TokvizError) else f"Scoring failed: {type(error).__name__}: {error}"
            if not isinstance(error, TokvizError):
                log.warning("scoring failed", exc_info=error)
            self._notify(message, "negative")
            if state.epoch == epoch and not state.closed:
                self.controls.status.set_text(f"not scored: {message}")
            return
        finally:
            if state.epoch == epoch:
                state.busy = False
                if not state.closed:
                    self.refresh()
        if state.closed or state.epoch != epoch:
            await self.service.close(handle)
            return
        state.handle, state.prompt = handle, text
        self._show_session(handle)
        self.controls.status.set_text(f"{len(state.tokens)} tokens scored · click one to branch from it")
        await self.refresh_branches()

    def _show_session(self, handle: Any) -> None:
        state = self.state
        state.prompt_tokens = handle.prompt_tokens
        state.tokens = list(handle.session.tokens)
        self.tokens.show_prompt(state.prompt_tokens)
        self.tokens.replace_all(state.tokens)
        self.chart.set_steps(state.tokens)
        self._show_perplexity()

    def _clear_view(self) -> None:
        state = self.state
        self.imported = None
        self.tokens.clear_all()
        self.details.clear()
        self.chart.set_steps([])
        self._show_branches([], None)
        self.perplexity.set_text("")
        state.tokens, state.prompt_tokens, state.selected = [], [], None
        state.finish_reason = ""

    # -------------------------------------------------------- export / import
    async def _snapshot(self) -> Any:
        if self.state.handle is not None and self.state.handle.session is not None and not self.state.handle.closed:
            return await self.service.snapshot(self.state.handle)
        return self.imported

    async def export_json(self) -> None:
        snapshot = await self._snapshot()
        if snapshot is None:
            ui.notify("Nothing to export yet: generate or score some text first.", type="warning")
            return
        self.download(to_json(snapshot).encode("utf-8"), "tokviz-session.json", "application/json")

    async def export_html(self) -> None:
        snapshot = await self._snapshot()
        if snapshot is None:
            ui.notify("Nothing to export yet: generate or score some text first.", type="warning")
            return
        page = render_html(snapshot, mode=self.mode, palette=self.palette)
        self.download(page.encode("utf-8"), "tokviz-session.html", "text/html")

    @staticmethod
    def download(content: bytes, filename: str, media_type: str) -> None:
        ui.download.content(content, filename, media_type)

    async def import_file(self, file: Any) -> None:
        """An uploaded file (NiceGUI FileUpload): refused by its size before it is read into memory."""
        if file.size() > MAX_IMPORT_BYTES:
            self._notify(str(too_big(file.size())), "negative")
            return
        await self.import_json(await file.read())

    async def import_json(self, text: str | bytes) -> None:
        """Show an exported session: live (the model is loaded) or read-only until it is.

        The file is parsed and checked in a worker thread; the tab keeps its current session (and view)
        until the new one is valid and, for a loaded model, restored."""
        state = self.state
        try:
            snapshot = await self.service.read_snapshot(text)
        except TokvizError as error:
            self._notify(str(error), "negative")
            return
        if state.closed:
            return
        if state.generating:
            self.stop()
        if state.busy:
            return
        key = snapshot.model.get("key")
        model = state.model if state.model is not None and state.model.key == key else \
            (self.service.loaded_model(key) if key else None)
        handle = None
        if model is not None:
            state.busy = True
            self.refresh()
            try:
                handle = await self.service.restore(model, snapshot)
            except ImportFormatError as error:  # not this model's ids or context: keep what the tab has
                self._notify(str(error), "negative")
                return
            except TokvizError as error:  # the model could not take it now: show it read-only
                self._notify(str(error), "negative")
                model = None
            finally:
                state.busy = False
                if not state.closed:
                    self.refresh()
        if state.closed:
            if handle is not None:
                self._drop_session(handle)
            return
        self._cancel()
        self._drop_session()
        self._clear_view()
        if model is not None and model is not state.model:
            self._attach(model)
        self.controls.prompt.set_value(snapshot.prompt)
        self._set_sampling(snapshot.settings)
        if model is not None:
            state.handle, state.prompt = handle, snapshot.prompt
            state.prompt_tokens, state.tokens = handle.prompt_tokens, list(handle.session.tokens)
        else:
            self.imported = snapshot  # read-only until its model is initialized
            state.prompt_tokens, state.tokens = list(snapshot.prompt_tokens), list(snapshot.tokens)
        self.tokens.show_prompt(state.prompt_tokens)
        if not await self._add_chips(state.tokens):
            return
        self.chart.set_steps(state.tokens)
        self._show_perplexity()
        if model is not None:
            self.controls.status.set_text(f"imported {len(state.tokens)} tokens · live: you can continue")
            await self.refresh_branches()
            return
        self._show_branches(snapshot.branches, snapshot.branches[snapshot.active].id)
        label = snapshot.model.get("label") or key
        self.controls.status.set_text(f"imported {len(state.tokens)} tokens · read-only: initialize {label} to "
                                      "continue")
        if key in self.picker.infos:
            self.picker.select.set_value(key)

    async def _add_chips(self, steps: list[TokenStep]) -> bool:
        """An import's generated chips, yielding to the event loop every 256: 20,000 chips take ~8 s to build,
        and /healthz, other tabs and this tab's websocket pings must not wait that long. False when the tab
        moved on (Reset, another import, closed) meanwhile."""
        state = self.state
        epoch = state.epoch
        state.busy = True
        self.refresh()
        try:
            for start in range(0, len(steps), 256):
                for step in steps[start:start + 256]:
                    self.tokens.append(step)
                await asyncio.sleep(0)
                if state.closed or state.epoch != epoch:
                    return False
        finally:
            if state.epoch == epoch:
                state.busy = False
                if not state.closed:
                    self.refresh()
        return True

    def _set_sampling(self, s: Any) -> None:
        c = self.controls
        c.temperature.set_value(s.temperature)
        c.top_k.set_value(s.top_k)
        c.top_p.set_value(s.top_p)
        c.seed.set_value(s.seed)
        c.greedy.set_value(s.greedy)

    async def _restore_imported(self) -> None:
        """The imported session's model was just initialized: make the import live."""
        snapshot = self.imported
        if snapshot is not None and self.state.model is not None and self.state.model.key == snapshot.model.get("key"):
            await self.import_json(to_json(snapshot))

    # ---------------------------------------------------------------- keyboard
    def on_key(self, e: Any) -> None:
        """←/→ select, ↑/↓ move in the open menu, Enter picks, n next, g to end, Esc close/stop, ? help."""
        if not e.action.keydown or e.modifiers.ctrl or e.modifiers.alt or e.modifiers.meta:
            return
        key = e.key.name
        view = self.tokens
        n = len(view.steps)
        current = self.state.selected.position if self.state.selected is not None and \
            not self.state.selected.is_prompt else None
        if key in ("ArrowLeft", "ArrowRight") and n:
            if current is None:
                target = n - 1 if key == "ArrowLeft" else 0
            else:
                target = max(0, min(n - 1, current + (-1 if key == "ArrowLeft" else 1)))
            self.select_position(target)
        elif key in ("ArrowDown", "ArrowUp"):
            if view.menu is None and current is not None:
                view.clicked(current)
            view.move_focus(1 if key == "ArrowDown" else -1)
        elif key == "Enter":
            token_id = view.focused_token()
            if token_id is not None and view.menu_position is not None:
                position = view.menu_position
                view.close_menu()
                background_tasks.create(self.choose(position, token_id), name="tokviz choose")
            elif current is not None:
                view.clicked(current)
        elif key == "Escape":
            if view.menu is not None:
                view.close_menu()
            elif time.monotonic() - view.menu_closed_at > 0.5:  # not the Esc that just closed a menu
                self.stop()
        elif key == "n":
            self.generate_next()
        elif key == "g":
            self.generate_to_end()
        elif key == "?":
            self.help.open()

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
