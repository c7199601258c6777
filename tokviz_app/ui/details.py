"""The details panel for the selected token: numbers and its top-10 as bars."""

from __future__ import annotations

from nicegui import ui

from ..engine.types import TokenStep
from .colors import prob_class
from .tokens import percent, visible_text


def _fmt(value: float | None, digits: int = 3, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


class DetailsPanel:
    def __init__(self) -> None:
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
                with ui.element("div").classes("tv-chart").mark("details-chart"):
                    for i, alt in enumerate(step.alternatives):
                        current = alt.token_id == step.token_id
                        ui.label(visible_text(alt.text)).classes("tv-chart-label" + (" tv-chart-current" if current
                                                                                      else ""))
                        with ui.element("div").classes("tv-alt-bar"):
                            ui.element("div").classes(f"tv-alt-fill {prob_class(alt.prob)}").style(
                                f"width: {max(alt.prob * 100, 0.5):.1f}%").mark(f"chart-bar-{i}")
                        ui.label(percent(alt.prob)).classes("tv-chart-prob")
