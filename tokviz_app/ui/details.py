"""The details panel for the selected token: numbers and its top-10 as bars."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import TokenStep
from ..present.scales import prob_class
from ..present.text import details_rows, fmt, percent, visible_text


# Phones: a tapped chip low on the screen would be hidden by the sheet that opens: scroll it up above the sheet.
KEEP_SELECTED_IN_VIEW = """setTimeout(() => {
  const chip = document.querySelector('.tv-selected'), sheet = document.querySelector('.tv-details.tv-sheet-open');
  if (!chip || !sheet || getComputedStyle(sheet).position !== 'fixed') return;
  const hidden = chip.getBoundingClientRect().bottom + 12 - sheet.getBoundingClientRect().top;
  if (hidden > 0) window.scrollBy({top: hidden, behavior: 'instant'});
}, 80)"""


class DetailsPanel:
    def __init__(self, on_search: Callable[[TokenStep, str], Any] | None = None,
                 on_choose: Callable[[int, int], Any] | None = None) -> None:
        self.on_search = on_search
        self.on_choose = on_choose
        self.results: ui.column | None = None
        # one panel: beside the text on wide screens; on phones (CSS below 900 px) a bottom sheet over the page
        # while a token is selected (class tv-sheet-open), so tapping a token shows something in view
        with ui.card().classes("tv-details w-full").mark("details") as self.card:
            with ui.row().classes("w-full items-center no-wrap tv-sheet-head"):
                ui.label("Token details").classes("text-subtitle1 tv-card-title")
                ui.space()
                ui.button(icon="close", on_click=self.close_sheet).props("flat round dense") \
                    .classes("tv-sheet-close").tooltip("Close the details").mark("details-close")
            self.body = ui.column().classes("w-full gap-1")
        self.step: TokenStep | None = None
        self.clear()

    def clear(self) -> None:
        self.step = None
        self.close_sheet()
        self.body.clear()
        with self.body:
            ui.label("Click a token to see its details and alternatives.").classes("tv-muted").mark("details-empty")

    def close_sheet(self) -> None:
        """Phones: the sheet goes; the details stay in the page's flow below the text."""
        self.card.classes(remove="tv-sheet-open")

    def show(self, step: TokenStep) -> None:
        self.step = step
        self.card.classes(add="tv-sheet-open")
        self.card.client.run_javascript(KEEP_SELECTED_IN_VIEW)
        self.body.clear()
        with self.body:
            where = f"prompt token {step.position}" if step.is_prompt else f"generated token {step.position}"
            with ui.row().classes("items-center gap-2 no-wrap"):
                ui.label(visible_text(step.text)).classes(f"tv-detail-chip {prob_class(step.prob)}") \
                    .mark("details-text")
                ui.label(where).classes("tv-muted").mark("details-where")
            with ui.element("div").classes("tv-detail-grid"):
                for key, name, value in details_rows(step):
                    ui.label(name).classes("tv-muted")
                    ui.label(value).classes("tv-detail-value").mark(f"details-{key}")
            if step.alternatives:
                ui.label("Top 10").classes("text-caption tv-muted q-mt-sm")
                with ui.element("div").classes("tv-topchart").mark("details-chart"):
                    for i, alt in enumerate(step.alternatives):
                        current = alt.token_id == step.token_id
                        ui.label(visible_text(alt.text)).classes("tv-chart-label" + (" tv-chart-current" if current
                                                                                      else ""))
                        with ui.element("div").classes("tv-alt-bar"):
                            ui.element("div").classes(f"tv-alt-fill {prob_class(alt.prob)}").style(
                                f"width: {max(alt.prob * 100, 0.5):.1f}%").mark(f"chart-bar-{i}")
                        ui.label(percent(alt.prob)).classes("tv-chart-prob")
            if not step.is_prompt and self.on_search is not None:
                self._search_box(step)

    def _search_box(self, step: TokenStep) -> None:
        ui.label("Any token at this position").classes("text-caption tv-muted q-mt-sm")
        with ui.row().classes("w-full items-center no-wrap gap-1"):
            box = ui.input(placeholder="type text, e.g. ' cat'").props("dense outlined").classes("grow") \
                .mark("token-search")
            box.on("keydown.enter", lambda: self.on_search(step, box.value))
            ui.button(icon="search", on_click=lambda: self.on_search(step, box.value)).props("flat dense") \
                .mark("token-search-button")
        self.results = ui.column().classes("w-full gap-0 tv-search-results").mark("search-results")

    def show_results(self, step: TokenStep, rows: list[tuple[int, str, float | None, int | None]],
                     message: str = "") -> None:
        """Search hits as (token_id, text, prob, rank); "use" picks one at this position."""
        if self.results is None or self.results.is_deleted or self.step is not step:
            return
        self.results.clear()
        with self.results:
            if message:
                ui.label(message).classes("tv-muted text-caption").mark("search-message")
            for i, (token_id, text, prob, rank) in enumerate(rows):
                with ui.row().classes("w-full items-center no-wrap gap-2 tv-search-hit").mark(f"search-hit-{i}"):
                    ui.label(visible_text(text)).classes("tv-alt-text grow")
                    ui.label(percent(prob)).classes("tv-alt-prob").mark(f"search-prob-{i}")
                    ui.label(f"rank {fmt(rank)}").classes("tv-muted text-caption") \
                        .mark(f"search-rank-{i}")
                    ui.button("use", on_click=lambda _, t=token_id: self.on_choose(step.position, t)) \
                        .props("flat dense no-caps").mark(f"search-use-{i}")
