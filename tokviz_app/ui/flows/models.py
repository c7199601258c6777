"""Picking and loading a model; attaching a loaded one to the tab.

The page never shows one model and uses another: the output card names the model in use (views.show_model),
a failed load or switch puts the dropdown back to it, and an import made with another model says so."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from nicegui import background_tasks, ui

from ...core.contract import Model
from ...core.errors import TokvizError
from ...core.types import SessionSnapshot
from ...inputs import public_message

if TYPE_CHECKING:
    from ..tab import Tab

log = logging.getLogger("tokviz.ui")


def load_error_message(error: BaseException, key: str) -> str:
    if isinstance(error, TokvizError):
        return str(error)
    if isinstance(error, MemoryError) or "out of memory" in str(error).lower():
        return f"Not enough memory to load '{key}'. Close other programs or pick a smaller model."
    return f"Could not load '{key}': {error}"


class Models:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    def select(self, key: str | None) -> None:
        """The dropdown changed: a model another tab loaded is ready at once; others wait for Initialize."""
        tab, state = self.tab, self.tab.state
        picker = tab.views.picker
        state.model_key = key
        picker.describe(key)
        model = tab.service.loaded_model(key) if key else None
        if model is not None and model is not state.model:
            self.attach(model)
        elif model is None and state.model is not None and not state.loading:
            label = picker.infos[key].label if key in picker.infos else key
            picker.set_status(f"Using {state.model.label}. Press Initialize Model to load {label}.")

    async def initialize(self) -> None:
        tab, state = self.tab, self.tab.state
        picker = tab.views.picker
        key = state.model_key
        if state.loading or not key:
            return
        offered = key in {info.key for info in tab.service.catalog()}
        key = self._permitted(key)
        if key is None:
            return
        model = tab.service.loaded_model(key)
        if model is None:
            state.loading, state.error = True, ""
            tab.refresh()
            label = picker.infos[key].label if key in picker.infos else key
            picker.show_progress(None, f"Loading {label}…")
            try:
                model = await tab.service.load(key, on_progress=self._on_progress)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # every failure becomes a message on the page
                self._failed(key, error)
                return
            finally:
                state.loading = False
                tab.refresh()
        if not offered:  # a typed name joins everyone's catalog only once it has loaded
            try:
                tab.service.add(key)
            except TokvizError:
                pass
        if state.closed:
            return
        picker.hide_progress()
        self.attach(model)
        picker.refresh_catalog(tab.service.catalog())

    def attach(self, model: Model) -> None:
        """Use `model` in this tab: a different model starts over (an import of its text becomes live)."""
        tab, state = self.tab, self.tab.state
        if model is not state.model:
            tab.cancel()
            tab.drop_session()
            imported = state.imported
            tab.clear_view()
            state.model = model
            if imported is not None and imported.model.get("key") == model.key:
                state.imported = imported
                background_tasks.create(tab.files.make_import_live(), name="tokviz restore import")
            tab.say("")
        state.error = ""
        tab.views.show_model()
        self._show_ready(model)
        tab.views.picker.set_notes(model.notices)
        tab.refresh()

    def _show_ready(self, model: Model) -> None:
        """The status line; while the model still prepares something in the background (the bundled model's
        fast path: it serves meanwhile), it says so until that ends."""
        picker, working = self.tab.views.picker, model.background_work()
        picker.set_status(f"Ready: {model.label} on {model.device} ({model.dtype}), "
                          f"context {model.context_length or 'unknown'} tokens, "
                          f"vocabulary {model.vocab_size or 'unknown'}." + (f" Still {working}" if working else ""))
        if working:
            def check() -> None:
                state = self.tab.state
                if state.closed or state.model is not model or state.error:  # the line says something else now
                    timer.cancel()
                elif not state.loading and not model.background_work():  # (a load in progress keeps its line)
                    timer.cancel()
                    self._show_ready(model)

            with picker.status.parent_slot:  # beside the status line (the notes below are rebuilt)
                timer = ui.timer(0.5, check)

    def _failed(self, key: str, error: Exception) -> None:
        tab = self.tab
        message = load_error_message(error, key)
        if tab.settings.allow_any_model:  # never show the server's own paths
            message = public_message(message, key, _folder(key))
        if not isinstance(error, TokvizError):
            log.warning("loading %s failed", key, exc_info=error)
        tab.state.error = message
        if not tab.state.closed:
            tab.views.picker.hide_progress()
            if self._keep_current():
                message = f"Still using {tab.state.model.label}: {message}"
            tab.views.picker.set_status(message, error=True)
            tab.notify(message, "negative")

    def _keep_current(self) -> bool:
        """After a failed load or switch, the dropdown shows the model in use again (nothing changed).
        False when no model is in use."""
        tab, state = self.tab, self.tab.state
        model, picker = state.model, tab.views.picker
        if model is None:
            return False
        if model.key in picker.infos and picker.select.value != model.key:
            picker.select.set_value(model.key)  # select() finds it attached already: nothing loads
        state.model_key = model.key
        picker.describe(model.key)
        tab.views.show_model()
        return True

    def show_import(self, snapshot: SessionSnapshot) -> None:
        """A read-only import of a model not loaded here: the dropdown switches to that model, and says so."""
        tab = self.tab
        picker = tab.views.picker
        key = snapshot.model.get("key")
        label = snapshot.model.get("label") or key or "an unknown model"
        if key in picker.infos:
            if picker.select.value != key:
                picker.select.set_value(key)  # select(): it waits for Initialize (a loaded one was restored live)
            message = f"This session was made with {label}; initialize it to continue."
        else:
            message = f"This session was made with {label}, which is not offered here: it stays read-only."
        tab.views.show_model()
        picker.set_status(message)
        tab.notify(message, "info")

    def _permitted(self, key: str) -> str | None:
        """The catalog key to load, or None with a message: only the offered models load, unless the
        server runs with --allow-any-model; then a typed hub id or server-side folder joins the catalog."""
        tab = self.tab
        if key in {info.key for info in tab.service.catalog()}:
            return key
        if not tab.settings.allow_any_model:
            message = f"'{key}' is not one of the models offered here (the server does not allow other models)."
        else:
            try:  # cheap: a name check or a folder lookup, no download; offered to all once it loads
                info = tab.service.add(key, offer=False)
            except TokvizError as error:
                message = public_message(str(error), key, _folder(key))
            else:
                tab.views.picker.refresh_catalog([*tab.service.catalog(), info])  # this tab's list only
                tab.views.picker.select.set_value(info.key)
                tab.state.model_key = info.key
                return info.key
        tab.state.error = message
        if self._keep_current():
            message = f"Still using {tab.state.model.label}: {message}"
        tab.views.picker.set_status(message, error=True)
        tab.notify(message, "negative")
        return None

    def _on_progress(self, fraction: float | None, message: str) -> None:
        """Progress from the loading thread, delivered on the event loop by the service."""
        if not self.tab.state.closed and self.tab.state.loading:
            self.tab.views.picker.show_progress(fraction, message)


def _folder(name: str) -> str | None:
    """The absolute path a typed folder name resolves to (to hide it from messages), else None."""
    try:
        return str(Path(name.strip()).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return None
