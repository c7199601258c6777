"""One tab: its state, its views, its flows, and the one guard every operation goes through.

The guard: `begin()` claims the tab (busy, a new epoch) before anything is awaited, so double clicks
and clicks during an operation are ignored instead of racing; `guard()` turns every failure into a
message and releases the tab, unless another operation or a cancel has taken it since (the epoch moved
on), in which case the stale operation keeps its hands off.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from nicegui import background_tasks, ui

from ..config import Settings
from ..core.errors import ContextFullError, TokvizError
from ..core.types import Branch, SessionSnapshot, TokenStep
from ..present.scales import DECIDED, WHAT_IF
from ..present.text import perplexity_text
from ..service import ModelService, SessionHandle
from .memory import MEMORY, SavedTab
from .state import TabState
from .views import TabViews

log = logging.getLogger("tokviz.ui")


@dataclass(eq=False)
class Operation:
    """One claim on the tab, from `Tab.begin` to the end of `Tab.guard`."""

    tab: Tab
    epoch: int
    error: BaseException | None = None  # what failed (already shown to the user)

    @property
    def current(self) -> bool:
        """Still the tab's operation: no cancel, no newer operation, tab open."""
        state = self.tab.state
        return state.epoch == self.epoch and not state.closed

    @property
    def failed(self) -> bool:
        return self.error is not None


class Tab:
    def __init__(self, service: ModelService, settings: Settings, state: TabState) -> None:
        from .flows.branching import Branching
        from .flows.compare import Compare
        from .flows.explore import Explore
        from .flows.files import Files
        from .flows.generation import Generation
        from .flows.models import Models
        from .flows.what_if import WhatIf
        from .keyboard import Keyboard

        self.service = service
        self.settings = settings
        self.state = state
        self.models = Models(self)
        self.generation = Generation(self)
        self.branching = Branching(self)
        self.explore = Explore(self)
        self.files = Files(self)
        self.compare = Compare(self)
        self.what_if = WhatIf(self)
        self.keyboard = Keyboard(self)
        self.views = TabViews(self)  # built last: the views call into the flows above
        self.tab_id: str | None = None  # the browser tab's id (kept across reloads), once the page is connected
        self._remembered_at = 0.0

    # --------------------------------------------------------------- the guard
    def begin(self, status: str = "", *, generating: bool = False) -> Operation | None:
        """Claim the tab for one operation, or None (with nothing changed) when it is busy."""
        state = self.state
        if state.busy or state.loading or state.closed:
            return None
        state.busy, state.generating = True, generating
        state.epoch += 1
        if status:
            self.say(status)
        self.refresh()
        return Operation(self, state.epoch)

    @asynccontextmanager
    async def guard(self, op: Operation, what: str) -> AsyncIterator[Operation]:
        """Run one operation's awaits: an error becomes a message (`op.error`), the tab is released."""
        try:
            yield op
        except asyncio.CancelledError:
            raise
        except ContextFullError as error:
            op.error = error
            self.notify(str(error), "warning")
        except TokvizError as error:
            op.error = error
            self.notify(str(error), "negative")
        except Exception as error:  # a bug or an odd input must not take the tab (or the server) down
            op.error = error
            log.warning("%s failed", what, exc_info=error)
            self.notify(f"{what} failed: {type(error).__name__}: {error}", "negative")
        finally:
            if op.current:
                self.state.busy = self.state.generating = False
                self.state.task = None
                self.refresh()

    def cancel(self) -> bool:
        """Cancel the running operation, if any; the tab is idle right away. True if one was running."""
        state = self.state
        task, state.task = state.task, None
        state.epoch += 1
        running = state.busy
        state.busy = state.generating = False
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        return running

    # ------------------------------------------------------------- the session
    def drop_session(self, handle: SessionHandle | None = None) -> None:
        """Free `handle` (default: the tab's session) in the background."""
        handle = handle or self.state.handle
        if handle is None:
            return
        if self.state.handle is handle:
            self.state.handle = None
        if not handle.closed:
            handle.closed = True
            background_tasks.create(self.service.close(handle), name="tokviz close session")

    def clear_view(self) -> None:
        """Forget the shown text (prompt chips, tokens, selection, branches, import)."""
        state = self.state
        state.imported = None
        state.tokens, state.prompt_tokens, state.selected = [], [], None
        state.branches, state.active_branch = [], None
        state.finish_reason = ""
        state.compare = None
        self.views.clear()
        self.compare.refresh()

    def is_eos(self, step: TokenStep) -> bool:
        handle = self.state.handle
        return handle is not None and handle.session is not None and handle.session.is_eos(step)

    def show_warnings(self) -> None:
        """The session's caveats about its numbers (remote servers), each once."""
        handle = self.state.handle
        session = handle.session if handle is not None else None
        for warning in session.warnings if session is not None else []:
            if warning not in self.state.warned:
                self.state.warned.add(warning)
                self.notify(warning, "warning")

    # ------------------------------------------------------------------ output
    def refresh(self) -> None:
        """Buttons enabled as the state allows."""
        if not self.state.closed:
            self.views.refresh()

    def say(self, text: str) -> None:
        """The line under the buttons."""
        if not self.state.closed:
            self.views.controls.status.set_text(text)

    def show_perplexity(self) -> None:
        self.views.perplexity.set_text(perplexity_text(self.state.tokens))

    def show_readouts(self) -> None:
        """Perplexity, chart, details and branch panel, all from the state: after every action they agree
        with the tokens on screen (the chart's point and the details follow the selection)."""
        if self.state.closed:
            return
        state, views = self.state, self.views
        selected = state.selected
        if selected is not None and not selected.is_prompt and selected.position >= len(state.tokens):
            selected = state.selected = None
        self.show_perplexity()
        views.chart.selected = None if selected is None or selected.is_prompt else selected.position
        views.chart.render_all()
        views.details.show(selected) if selected is not None else views.details.clear()
        views.show_branches()
        self.compare.refresh()  # the comparison's part that still holds for the text (and the Δ colours)
        self.refresh_on_demand()

    def refresh_on_demand(self) -> None:
        """An on-demand colour mode's values (present/scales.py `on_demand`) are computed for the text on screen:
        again after every change of the text or of the mode. Δ comes with the comparison (`compare.refresh`)."""
        refresh = {DECIDED: self.explore.refresh_layers, WHAT_IF: self.what_if.refresh}.get(self.state.mode)
        if refresh is not None:
            refresh()

    # ---------------------------------------------------------- across reloads
    def shown_snapshot(self) -> SessionSnapshot | None:
        """The text on screen with its branches, from the state alone (no engine call: also while a step runs)."""
        state = self.state
        if state.imported is not None and state.handle is None:
            return self.compare.for_snapshot(state.imported)
        handle = state.handle
        if handle is None or not state.prompt_tokens:
            return None
        branches = [b.copy() for b in state.branches] or [Branch(0, [])]
        active = next((i for i, b in enumerate(branches) if b.id == state.active_branch), 0)
        branches[active].tokens = list(state.tokens)
        model = handle.model
        return SessionSnapshot(model={"key": model.key, "label": model.label, "source": model.source},
                               settings=handle.params, prompt=handle.prompt,
                               prompt_ids=[t.token_id for t in state.prompt_tokens],
                               prompt_tokens=list(state.prompt_tokens), branches=branches, active=active,
                               messages=handle.messages, compare=self.compare.kept())

    def remember(self, *, throttle: bool = False) -> None:
        """Keep the tab's work for a reload (at most once a second while tokens stream in)."""
        now = time.monotonic()
        if self.tab_id is None or (throttle and now - self._remembered_at < 1.0):
            return
        self._remembered_at = now
        state = self.state
        MEMORY.save(self.tab_id, self, SavedTab(state.model_key, state.prompt, state.sampling_params(),
                                                state.max_tokens, self.shown_snapshot(), state.mode,
                                                (state.chat, state.system_message, state.user_message)))

    def notify(self, message: str, kind: str) -> None:
        if not self.state.closed:
            with self.views.root:
                ui.notify(message, type=kind, multi_line=True)

    def dispose(self) -> None:
        """The tab is gone: keep its work for a reload, cancel what runs and free its session."""
        self.remember()
        if self.tab_id is not None:
            MEMORY.closed(self.tab_id, self)
        self.state.closed = True
        self.cancel()
        self.drop_session()
