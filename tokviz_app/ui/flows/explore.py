"""Looking at the text: selecting tokens, colour modes, any-token search, scoring pasted text, the layer lens."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from nicegui import background_tasks, ui

from ...core.contract import layers_hidden
from ...core.errors import TokvizError
from ...core.types import TokenStep
from ...present.scales import DECIDED, SCALE, decided_value, value_class
from ...present.text import count

if TYPE_CHECKING:
    from ...service import SessionHandle
    from ..tab import Tab

log = logging.getLogger(__name__)


class Explore:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    def select(self, step: TokenStep) -> None:
        tab = self.tab
        tab.state.selected = step
        tab.views.details.show(step)
        tab.views.chart.select(None if step.is_prompt else step.position)

    def select_position(self, position: int, *, menu: bool = False) -> None:
        """Select generated token `position` (chart click, keyboard)."""
        tokens = self.tab.views.tokens
        if not 0 <= position < len(self.tab.state.tokens):
            return
        if menu or tokens.menu is not None:
            tokens.clicked(position)
        else:
            tokens.highlight_position(position)
            self.select(self.tab.state.tokens[position])

    def set_mode(self, mode: str) -> None:
        self.tab.state.mode = mode
        self.tab.views.tokens.set_mode(mode)
        self.tab.views.legend.show(mode)
        self.tab.views.chart.flush()  # its points are coloured by the mode
        self.tab.refresh_on_demand()

    def set_palette(self, colorblind: bool) -> None:
        self.tab.state.palette = "colorblind" if colorblind else "default"
        body = ui.query("body")
        body.classes(add="tv-cb") if colorblind else body.classes(remove="tv-cb")
        self.tab.views.chart.flush()  # canvas colours: not from the page's CSS variables

    async def search_tokens(self, step: TokenStep, query: str) -> None:
        """Probability (raw and after the samplers) and rank of any vocabulary token at the position of `step`."""
        tab, state = self.tab, self.tab.state
        details, model, handle = tab.views.details, state.model, state.handle
        if not query or model is None:
            return
        if step.is_prompt or handle is None:
            details.show_results(step, [], "Search works on generated tokens of a live session.")
            return
        if not model.capabilities.vocabulary_search:
            details.show_results(step, [], "This model cannot search its vocabulary.")
            return
        if state.busy:
            details.show_results(step, [], "Busy: try again when the generation has finished.")
            return
        try:
            found = await tab.service.find_tokens(model, query, 12)
            scored = await tab.service.score(handle, step.position, [t for t, _ in found], len(state.tokens)) \
                if found else []
        except TokvizError as error:
            details.show_results(step, [], str(error))
            return
        texts = dict(found)
        rows = sorted(((t, texts[t], p, r, q) for t, p, r, q in scored), key=lambda row: (row[3] is None, row[3] or 0))
        if not state.closed:
            details.show_results(step, rows, "" if rows else f"No token contains “{query}”.")

    async def score_text(self) -> None:
        """Colour every token of the text in the prompt box; the user can branch from any of them."""
        tab, state = self.tab, self.tab.state
        if not tab.generation.ready():
            return
        if not state.prompt:
            tab.notify("Paste some text into the prompt box first.", "warning")
            return
        text = tab.generation.checked_prompt()
        if text is None:
            tab.say("not scored: the text is too long")
            return
        tab.cancel()
        tab.drop_session()
        tab.clear_view()
        op = tab.begin("scoring…")
        if op is None:
            return
        handle = None
        async with tab.guard(op, "Scoring"):
            handle = await tab.service.score_text(state.model, text, state.sampling_params())
        if op.failed:
            if op.current:
                error = op.error
                tab.say("not scored: " + (str(error) if isinstance(error, TokvizError)
                                          else f"Scoring failed: {type(error).__name__}: {error}"))
            return
        if handle is None or not op.current:
            await tab.service.close(handle)
            return
        state.handle = handle
        state.prompt_tokens, state.tokens = handle.prompt_tokens, list(handle.session.tokens)
        tab.views.show_text()
        tab.show_perplexity()
        tab.say(f"{count(len(state.tokens), 'token')} scored · click one to branch from it")
        tab.refresh_on_demand()
        await tab.branching.refresh()

    # ------------------------------------------------------------------ layers
    def show_layers(self, step: TokenStep) -> None:
        """The details' Layers section for `step` (the details panel asks for every token it shows): computed on
        demand in the engine, which keeps one forward pass per text; never while tokens stream in."""
        tab, state = self.tab, self.tab.state
        details, handle = tab.views.details, state.handle
        if handle is None or handle.session is None:
            details.layers_note(step, "The layers are shown for a live session: initialize this text's model.")
        elif not handle.model.capabilities.layer_access:
            details.layers_note(step, layers_hidden(handle.model))
        elif step.is_prompt and step.position == 0:
            details.layers_note(step, "The first token has no prediction, so it has no layers to show.")
        elif state.generating:
            details.layers_note(step, "The layers are available when generation stops.")
        else:
            details.layers_note(step, "Reading the layers…")
            background_tasks.create(self._load_layers(handle, step), name="tokviz layers")

    async def _load_layers(self, handle: SessionHandle, step: TokenStep) -> None:
        """It only reads (the service cuts nothing back and checks the token is still there), so it does not claim
        the tab: clicking through tokens never blocks Generate, and the session's lock orders it with the rest."""
        tab = self.tab
        rows, message = None, "The text changed: select the token again."
        try:
            rows = await tab.service.layer_lens(handle, step)
        except TokvizError as error:
            message = str(error)
        except Exception as error:  # a bug must not leave the section saying "Reading…"
            log.warning("The layer lens failed", exc_info=error)
            message = f"The layers could not be read: {type(error).__name__}: {error}"
        if tab.state.closed or handle is not tab.state.handle:
            return
        if rows:
            tab.views.details.show_layers(step, rows)
        else:
            tab.views.details.layers_note(step, message)

    def refresh_layers(self) -> None:
        """In the "Decided at layer" colour mode, colour the chips by the layer where each token was decided: after
        the mode is chosen and after every change of the text (chips streamed in show "none" until the end)."""
        state = self.tab.state
        if state.mode == DECIDED and state.handle is not None and not state.generating and not state.closed:
            background_tasks.create(self._colour_by_layers(), name="tokviz decided layers")

    async def _colour_by_layers(self) -> None:
        tab, state = self.tab, self.tab.state
        handle = state.handle
        if handle is None or handle.session is None:
            return
        if not handle.model.capabilities.layer_access:
            tab.say(layers_hidden(handle.model))
            return
        op = tab.begin("finding the layer where each token was decided…")
        if op is None:
            return
        async with tab.guard(op, "Colouring by layer"):
            prompt, generated = await tab.service.decided_layers(handle, len(state.tokens))
        if op.failed or not op.current or handle is not state.handle or state.mode != DECIDED:
            return
        layers = handle.model.capabilities.layer_count
        classes = lambda values: [value_class(decided_value(k, layers), DECIDED) for k in values]  # noqa: E731
        first = value_class(None, DECIDED)  # the first prompt token has no prediction: unknown, not "never"
        tab.views.tokens.set_mode_classes(SCALE[DECIDED].prefix, [first, *classes(prompt[1:])], classes(generated))
        tab.say(f"{count(len(state.tokens), 'token')} · coloured by the layer (of {layers}) where each was decided")
