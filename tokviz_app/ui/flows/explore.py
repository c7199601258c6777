"""Looking at the text: selecting tokens, colour modes, any-token search, scoring pasted text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nicegui import ui

from ...core.errors import TokvizError
from ...core.types import TokenStep
from ...present.text import count

if TYPE_CHECKING:
    from ..tab import Tab


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

    def set_palette(self, colorblind: bool) -> None:
        self.tab.state.palette = "colorblind" if colorblind else "default"
        body = ui.query("body")
        body.classes(add="tv-cb") if colorblind else body.classes(remove="tv-cb")
        self.tab.views.chart.flush()  # canvas colours: not from the page's CSS variables

    async def search_tokens(self, step: TokenStep, query: str) -> None:
        """Probability and rank of any vocabulary token at the position of `step`."""
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
        rows = sorted(((t, texts[t], p, r) for t, p, r in scored), key=lambda row: (row[3] is None, row[3] or 0))
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
        await tab.branching.refresh()
