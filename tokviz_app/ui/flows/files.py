"""Export (JSON, self-contained HTML) and import of sessions."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from nicegui import ui
from nicegui.elements.upload_files import FileUpload

from ...core.errors import ImportFormatError, TokvizError
from ...core.types import SessionSnapshot, TokenStep
from ...exports.html import render_html
from ...exports.snapshot import MAX_IMPORT_BYTES, to_json, too_big
from ...present.text import count
from ...service import SessionHandle
from ..memory import SavedTab

if TYPE_CHECKING:
    from ..tab import Tab

CHIPS_PER_YIELD = 256  # an import's chips are built in slices, so the event loop is never held for long


class Files:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    # ------------------------------------------------------------------ export
    async def export_json(self) -> None:
        snapshot = await self._snapshot()
        if snapshot is not None:
            self.download(to_json(snapshot).encode("utf-8"), "tokviz-session.json", "application/json")

    async def export_html(self) -> None:
        snapshot = await self._snapshot()
        if snapshot is not None:
            page = render_html(snapshot, mode=self.tab.state.mode, palette=self.tab.state.palette)
            self.download(page.encode("utf-8"), "tokviz-session.html", "text/html")

    @staticmethod
    def download(content: bytes, filename: str, media_type: str) -> None:
        ui.download.content(content, filename, media_type)

    async def _snapshot(self) -> SessionSnapshot | None:
        """The session to export, with the comparison that holds for its shown text."""
        state = self.tab.state
        handle = state.handle
        if handle is not None and handle.session is not None and not handle.closed:
            return self.tab.compare.for_snapshot(await self.tab.service.snapshot(handle))
        if state.imported is None:
            self.tab.notify("Nothing to export yet: generate or score some text first.", "warning")
            return None
        return self.tab.compare.for_snapshot(state.imported)

    # ------------------------------------------------------------------ import
    async def import_file(self, file: FileUpload) -> None:
        """An uploaded file: refused by its size before it is read into memory."""
        if file.size() > MAX_IMPORT_BYTES:
            self.tab.notify(str(too_big(file.size())), "negative")
            return
        await self.import_json(await file.read())

    async def import_json(self, text: str | bytes) -> None:
        """Show an exported session: live (its model is loaded) or read-only until it is.

        The file is parsed and checked in a worker thread; the tab keeps its current session (and view)
        until the new one is valid and, for a loaded model, restored."""
        try:
            snapshot = await self.tab.service.read_snapshot(text)
        except TokvizError as error:
            self.tab.notify(str(error), "negative")
            return
        await self.import_snapshot(snapshot)

    async def import_snapshot(self, snapshot: SessionSnapshot) -> None:
        """A checked snapshot onto the page: live where its model is loaded here, read-only otherwise."""
        tab, state = self.tab, self.tab.state
        if state.closed:
            return
        if state.generating:
            tab.generation.stop()
        key = snapshot.model.get("key")
        model = state.model if state.model is not None and state.model.key == key else \
            (tab.service.loaded_model(key) if key else None)
        handle = None
        if model is not None:
            op = tab.begin()
            if op is None:
                return
            async with tab.guard(op, "Import"):
                try:
                    handle = await tab.service.restore(model, snapshot)
                except ImportFormatError:  # not this model's ids or context: keep what the tab has
                    raise
                except TokvizError as error:  # the model could not take it now: show it read-only
                    tab.notify(str(error), "negative")
                    model = None
            if op.failed or not op.current:
                if handle is not None:
                    tab.drop_session(handle)
                return
        self._show(snapshot, model, handle)
        await self._add_chips()

    def _show(self, snapshot: SessionSnapshot, model, handle: SessionHandle | None) -> None:
        tab, state = self.tab, self.tab.state
        tab.cancel()
        tab.drop_session()
        tab.clear_view()
        if model is not None and model is not state.model:
            tab.models.attach(model)
        state.show_request(snapshot.prompt, snapshot.messages)
        state.show_settings(snapshot.settings)
        if handle is not None:
            state.handle = handle
            state.prompt_tokens, state.tokens = handle.prompt_tokens, list(handle.session.tokens)
        else:
            state.imported = snapshot  # read-only until its model is initialized
            state.prompt_tokens, state.tokens = list(snapshot.prompt_tokens), list(snapshot.tokens)
            state.branches, state.active_branch = snapshot.branches, snapshot.branches[snapshot.active].id
            tab.models.show_import(snapshot)  # the dropdown switches to its model, and the page says so
        state.compare = snapshot.compare  # shown with the chips (_add_chips)
        tab.views.tokens.show_prompt(state.prompt_tokens)

    async def _add_chips(self) -> None:
        """The generated chips, yielding to the event loop every CHUNK: 20,000 chips take ~8 s to build, and
        /healthz, other tabs and this tab's websocket pings must not wait that long. Stops when the tab moved
        on (Reset, another import, closed) meanwhile."""
        tab, state = self.tab, self.tab.state
        steps: list[TokenStep] = state.tokens
        op = tab.begin()
        if op is None:
            return
        async with tab.guard(op, "Import"):
            for start in range(0, len(steps), CHIPS_PER_YIELD):
                for step in steps[start:start + CHIPS_PER_YIELD]:
                    tab.views.tokens.append(step)
                await asyncio.sleep(0)
                if not op.current:
                    return
        if not op.current:
            return
        tab.views.chart.render_all()
        tab.compare.refresh()
        tab.show_perplexity()
        n = count(len(state.tokens), "token")
        if state.handle is not None:
            tab.say(f"imported {n} · live: you can continue")
            tab.refresh_on_demand()
            await tab.branching.refresh()
            return
        tab.views.show_branches()
        label = state.imported.model.get("label") or state.imported.model.get("key")
        tab.say(f"imported {n} · read-only: initialize {label} to continue")

    async def restore_saved(self, saved: SavedTab) -> None:
        """A reloaded tab: its model, prompt, settings and text as they were (live where the model is loaded)."""
        tab, state = self.tab, self.tab.state
        state.prompt, state.max_tokens, state.mode = saved.prompt, saved.max_tokens, saved.mode
        state.chat, state.system_message, state.user_message = saved.chat

        state.show_settings(saved.settings)
        tab.explore.set_mode(saved.mode)
        if saved.model_key is not None and saved.model_key in tab.views.picker.infos:
            tab.views.picker.select.set_value(saved.model_key)  # attaches it if another tab loaded it
        if saved.snapshot is not None:
            await self.import_snapshot(saved.snapshot)
            tab.notify("Your text from before the reload is back.", "positive")

    async def make_import_live(self) -> None:
        """The imported session's model was just initialized: import it again, now live."""
        state = self.tab.state
        snapshot = state.imported
        if snapshot is not None and state.model is not None and state.model.key == snapshot.model.get("key"):
            await self.import_json(to_json(snapshot))
