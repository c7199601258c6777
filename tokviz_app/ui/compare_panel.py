"""The Compare card (under the text) and the comparison section of the details panel (views only, no logic).

Two ways to compare the text on screen: another model (any offered one: its picker lists the same catalog as
the model picker) or another context for the same model ("context B"). The flow is `ui/flows/compare.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.compare import CONTEXT, MODEL
from ..core.types import Alternative, ModelInfo
from ..present.compare import Details
from ..present.scales import prob_class
from ..present.text import percent, visible_text
from .controls import option_label

HINT = ("Score the text on screen with a second model, or after another context: the Δ colours show how much "
        "more or less likely each token is for B, in bits.")


class ComparePanel:
    def __init__(self, catalog: list[ModelInfo], current: str | None, *, on_compare: Callable[[], Any],
                 on_clear: Callable[[], Any]) -> None:
        with ui.card().classes("tv-card w-full tv-compare").mark("compare-card"):
            with ui.row().classes("w-full items-center gap-2"):
                ui.label("Compare").classes("text-subtitle2")
                self.mode = ui.toggle({MODEL: "Another model", CONTEXT: "Another context"}, value=MODEL,
                                      on_change=lambda e: self.show_mode(e.value)) \
                    .props("dense no-caps size=sm").mark("compare-mode")
            with ui.row().classes("w-full items-end gap-2 no-wrap") as self.model_row:
                self.select = ui.select({}, label="Model B").classes("grow tv-compare-select").mark("compare-model")
                self.select.on("popup-show", lambda: self.on_open())
            self.context = ui.textarea("Context B", placeholder="Score the same continuation after this text instead "
                                       "of the prompt: e.g. without the system message, or with a document") \
                .props("autogrow outlined dense").classes("w-full").mark("compare-context")
            with ui.row().classes("items-center gap-2"):
                self.button = ui.button("Compare", icon="compare_arrows", on_click=on_compare) \
                    .props("no-caps").mark("Compare", "compare-button")
                self.clear_button = ui.button("Clear", on_click=on_clear).props("flat no-caps dense") \
                    .mark("compare-clear")
            self.status = ui.label(HINT).classes("tv-muted text-caption").mark("compare-status")
        self.on_open: Callable[[], Any] = lambda: None  # the flow refreshes the model list when it opens
        self.set_catalog(catalog, current)
        self.show_mode(MODEL)

    def set_catalog(self, catalog: list[ModelInfo], current: str | None = None) -> None:
        """The offered models; the choice stays, else the first model other than the one in use."""
        options = {info.key: option_label(info) for info in catalog}
        value = self.select.value if self.select.value in options else \
            next((key for key in options if key != current), next(iter(options), None))
        self.select.set_options(options, value=value)

    def show_mode(self, mode: str) -> None:
        self.model_row.set_visibility(mode == MODEL)
        self.context.set_visibility(mode == CONTEXT)

    def say(self, text: str, *, error: bool = False) -> None:
        self.status.set_text(text or HINT)
        self.status.classes(replace="tv-muted text-caption" + (" tv-error" if error else ""))

    def set_enabled(self, enabled: bool) -> None:
        self.button.set_enabled(enabled)


def show_details(box: ui.column, details: Details) -> None:
    """The details panel's comparison section: B's numbers, both ranks and the KL, both top-5 lists."""
    box.clear()
    with box:
        ui.label(details.title).classes("text-caption tv-muted").mark("compare-title")
        with ui.element("div").classes("tv-detail-grid"):
            for key, name, value in details.rows:
                ui.label(name).classes("tv-muted")
                ui.label(value).classes("tv-detail-value").mark(f"compare-{key}")
        if details.top_a or details.top_b:
            with ui.element("div").classes("tv-compare-tops").mark("compare-tops"):
                _top("Top 5 · A", details.top_a, "compare-top-a")
                _top("Top 5 · B", details.top_b, "compare-top-b")


def _top(title: str, alternatives: tuple[Alternative, ...], marker: str) -> None:
    with ui.column().classes("gap-0 tv-compare-top").mark(marker):
        ui.label(title).classes("text-caption tv-muted")
        for alt in alternatives:
            with ui.row().classes("items-center no-wrap gap-1"):
                ui.label(visible_text(alt.text)).classes(f"tv-compare-alt {prob_class(alt.prob)}")
                ui.label(percent(alt.prob)).classes("tv-compare-prob")
