"""The details panel for the selected token: numbers, its top-10 as bars, and its layers (the logit lens)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import LayerRow, TokenStep
from ..present.scales import prob_class
from ..present.text import after_sampling, details_rows, fmt, kept_text, percent, visible_text
from .alternatives import bar, sampled_cell


# Phones: a tapped chip low on the screen would be hidden by the sheet that opens: scroll it up above the sheet.
KEEP_SELECTED_IN_VIEW = """setTimeout(() => {
  const chip = document.querySelector('.tv-selected'), sheet = document.querySelector('.tv-details.tv-sheet-open');
  if (!chip || !sheet || getComputedStyle(sheet).position !== 'fixed') return;
  const hidden = chip.getBoundingClientRect().bottom + 12 - sheet.getBoundingClientRect().top;
  if (hidden > 0) window.scrollBy({top: hidden, behavior: 'instant'});
}, 80)"""


class DetailsPanel:
    def __init__(self, on_search: Callable[[TokenStep, str], Any] | None = None,
                 on_choose: Callable[[int, int], Any] | None = None,
                 on_layers: Callable[[TokenStep], Any] | None = None,
                 on_compare: Callable[[TokenStep], Any] | None = None) -> None:
        self.on_search = on_search
        self.on_choose = on_choose
        self.on_layers = on_layers  # asked to fill the Layers section of each token shown (ui/flows/explore.py)
        self.results: ui.column | None = None
        self.layers: ui.column | None = None
        self.on_compare = on_compare  # asked to fill the comparison section (ui/flows/compare.py)
        self.compare: ui.column | None = None
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
            if step.alternatives:  # raw → after the samplers, the dropped ones greyed (ui/alternatives.py)
                ui.label(f"Top {len(step.alternatives)}: raw → after the samplers").classes("text-caption tv-muted q-mt-sm")
                with ui.element("div").classes("tv-topchart").mark("details-chart"):
                    for i, alt in enumerate(step.alternatives):
                        dim = " tv-chart-dropped" if alt.dropped_by else ""
                        ui.label(visible_text(alt.text)).classes("tv-chart-label" + dim + (
                            " tv-chart-current" if alt.token_id == step.token_id else ""))
                        bar(alt.prob, f"chart-bar-{i}")
                        ui.label(percent(alt.prob)).classes("tv-chart-prob" + dim)
                        sampled_cell(alt, f"chart-{i}")
                ui.label(kept_text(step)).classes("text-caption").mark("details-kept")
            self.compare = ui.column().classes("w-full gap-1 q-mt-sm").mark("compare-details")
            if not step.is_prompt and self.on_search is not None:
                self._search_box(step)
            self.layers = ui.column().classes("w-full gap-1 q-mt-sm").mark("layers")
        if self.on_layers is not None:
            self.on_layers(step)
        if self.on_compare is not None:
            self.on_compare(step)

    # ------------------------------------------------------------------ layers
    def layers_note(self, step: TokenStep, text: str) -> None:
        """The Layers section says why it shows no rows (or that they are on their way)."""
        if self._layers_for(step):
            with self.layers:
                ui.label(text).classes("tv-muted text-caption").mark("layers-note")

    def show_layers(self, step: TokenStep, rows: list[LayerRow]) -> None:
        """One row per layer: its top 5, this token's rank and probability, the entropy; a sparkline of the rank."""
        if not rows or not self._layers_for(step):
            return
        last = rows[-1].layer
        with self.layers:
            ui.label(decided_text(rows)).classes("text-caption").mark("layers-decided")
            _sparkline([row.token_rank for row in rows])
            # a narrow panel: per layer one line of numbers, then its top 5 across the whole width
            with ui.element("div").classes("tv-layer-grid").mark("layers-table"):
                for head in ("layer", "this token: rank · p", "entropy"):
                    ui.label(head).classes("tv-muted tv-layer-head")
                for row in rows:
                    ui.label(layer_name(row.layer, last)).classes("tv-layer-name").mark(f"layer-{row.layer}")
                    ui.label(f"#{row.token_rank:,} · {percent(row.token_prob)}").mark(f"layer-rank-{row.layer}") \
                        .classes(f"tv-layer-num tv-layer-prob {prob_class(row.token_prob)}")
                    ui.label(fmt(row.entropy, 2, " bits")).classes("tv-layer-num")
                    with ui.element("div").classes("tv-layer-top").mark(f"layer-top-{row.layer}"):
                        for alt in row.top:
                            current = " tv-layer-current" if alt.token_id == step.token_id else ""
                            ui.label(f"{visible_text(alt.text)} {percent(alt.prob)}").classes("tv-layer-alt" + current)

    def _layers_for(self, step: TokenStep) -> bool:
        """Clear the Layers section and give it its title, if `step` is still the token shown."""
        if self.layers is None or self.layers.is_deleted or self.step is not step:
            return False
        self.layers.clear()
        with self.layers:
            ui.label("Layers").classes("text-caption tv-muted").mark("layers-title")
        return True

    def _search_box(self, step: TokenStep) -> None:
        ui.label("Any token at this position").classes("text-caption tv-muted q-mt-sm")
        with ui.row().classes("w-full items-center no-wrap gap-1"):
            box = ui.input(placeholder="type text, e.g. ' cat'").props("dense outlined").classes("grow") \
                .mark("token-search")
            box.on("keydown.enter", lambda: self.on_search(step, box.value))
            ui.button(icon="search", on_click=lambda: self.on_search(step, box.value)).props("flat dense") \
                .mark("token-search-button")
        self.results = ui.column().classes("w-full gap-0 tv-search-results").mark("search-results")

    def show_results(self, step: TokenStep, rows: list[tuple[int, str, float | None, int | None, float | None]],
                     message: str = "") -> None:
        """Search hits as (token_id, text, prob, rank, prob after the samplers); "use" picks one at this position."""
        if self.results is None or self.results.is_deleted or self.step is not step:
            return
        self.results.clear()
        with self.results:
            if message:
                ui.label(message).classes("tv-muted text-caption").mark("search-message")
            for i, (token_id, text, prob, rank, sampled) in enumerate(rows):
                with ui.row().classes("w-full items-center no-wrap gap-2 tv-search-hit").mark(f"search-hit-{i}"):
                    ui.label(visible_text(text)).classes("tv-alt-text grow")
                    ui.label(percent(prob)).classes("tv-alt-prob").mark(f"search-prob-{i}")
                    ui.label(after_sampling(sampled)).classes("tv-alt-sampled").mark(f"search-sampled-{i}")
                    ui.label(f"rank {fmt(rank)}").classes("tv-muted text-caption") \
                        .mark(f"search-rank-{i}")
                    ui.button("use", on_click=lambda _, t=token_id: self.on_choose(step.position, t)) \
                        .props("flat dense no-caps").mark(f"search-use-{i}")


def layer_name(layer: int, last: int) -> str:
    return "embeddings" if layer == 0 else f"block {layer}" + (" · output" if layer == last else "")


def decided_text(rows: list[LayerRow]) -> str:
    """Where the token became the top-1 and stayed it (the heatmap's "decided at layer"), in words."""
    layer = None
    for row in reversed(rows):
        if row.token_rank != 1:
            break
        layer = row.layer
    last = rows[-1].layer
    if layer is None:
        return f"Never the top-1: rank {rows[-1].token_rank:,} at the output."
    if layer == last:
        return f"Decided only at the output (block {last}): no earlier layer ranks it first."
    return f"Decided at {'the embeddings' if layer == 0 else f'block {layer}'} of {last}: the top-1 from there on."


def _sparkline(ranks: list[int]) -> None:
    """The token's rank by layer, rank 1 at the top (log scale): a tiny inline SVG, numbers only."""
    top = math.log(max(max(ranks), 2))
    points = " ".join(f"{100 * i / max(1, len(ranks) - 1):.1f},{2 + 26 * math.log(rank) / top:.1f}"
                      for i, rank in enumerate(ranks))
    with ui.element("svg").props('viewBox="0 0 100 30" preserveAspectRatio="none"').classes("tv-spark") \
            .mark("layers-spark") as svg:
        ui.element("polyline").props(f'points="{points}"')
    svg._props["aria-label"] = "rank by layer: " + ", ".join(f"{rank:,}" for rank in ranks)  # pylint: disable=protected-access
