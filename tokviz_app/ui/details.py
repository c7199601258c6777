"""The details panel for the selected token: numbers and its top-10 as bars."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..engine.types import TokenStep
from .colors import prob_class
from .tokens import percent, visible_text


def _fmt(value: float | None, digits: int = 3, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


class DetailsPanel:
    def __init__(self, on_search: Callable[[TokenStep, str], Any] | None = None,
                 on_choose: Callable[[int, int], Any] | None = None) -> None:
        self.on_search = on_search
        self.on_choose = on_choose
        self.results: ui.column | None = None
        with ui.card().classes("tv-details w-full").mark("details") as self.card:
            ui.label("Token details").classes("text-subtitle1 tv-card-title")
            self.body = ui.column().classes("w-full gap-1")
        self.step: TokenStep | None = None
        self.clear()

    def clear(self) -> None:
        self.step = None
        self.body.clear()
        with self.body:
            ui.label("Click a token to see its details and alternatives.").classes("tv-muted").mark("details-empty")

    def show(self, step: TokenStep) -> None:
        self.step = step
        self.body.clear()
        with self.body:
            where = f"prompt token {step.position}" if step.is_prompt else f"generated token {step.position}"
            with ui.row().classes("items-center gap-2 no-wrap"):
                ui.label(visible_text(step.text)).classes(f"tv-detail-chip {prob_class(step.prob)}") \
                    .mark("details-text")
                ui.label(where).classes("tv-muted").mark("details-where")
            rows = [
                ("repr", repr(step.text), "details-repr"),
                ("token id", str(step.token_id), "details-id"),
                ("position", str(step.position), "details-position"),
                ("probability", percent(step.prob), "details-prob"),
                ("log-prob", _fmt(step.logprob, 4), "details-logprob"),
                ("surprisal", _fmt(step.surprisal, 2, " bits"), "details-surprisal"),
                ("rank", "–" if step.rank is None else str(step.rank), "details-rank"),
                ("entropy", _fmt(step.entropy, 2, " bits"), "details-entropy"),
                ("p (sampling)", percent(step.sampled_prob), "details-sampled"),
            ]
            if step.partial:
                rows.append(("bytes", "partial UTF-8 (joins with its neighbours)", "details-partial"))
            if step.sampling is not None:
                s = step.sampling
                how = "greedy" if s.greedy else (f"T={s.temperature:g}, top-k={s.top_k or 'off'}, "
                                                 f"top-p={s.top_p:g}" + (f", seed={s.seed}" if s.seed is not None else ""))
                rows.append(("sampling", how, "details-sampling"))
            with ui.element("div").classes("tv-detail-grid"):
                for name, value, marker in rows:
                    ui.label(name).classes("tv-muted")
                    ui.label(value).classes("tv-detail-value").mark(marker)
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
                    ui.label(f"rank {'–' if rank is None else rank}").classes("tv-muted text-caption") \
                        .mark(f"search-rank-{i}")
                    ui.button("use", on_click=lambda _, t=token_id: self.on_choose(step.position, t)) \
                        .props("flat dense no-caps").mark(f"search-use-{i}")
