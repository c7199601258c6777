"""The What if panel (issue 14; views only, the flow is `ui/flows/what_if.py`): temperature, top-k, top-p and min-p
under which the text on screen is re-coloured by the probability each token would have had. Nothing is generated
and no token changes; tokens those settings make impossible are struck through and counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import SamplingParams
from ..present.text import count, fmt_general, percent
from .controls import NumberBox
from .state import TabState

HINT = ("Re-colour the text by the probability each token would have had under other settings. Nothing is generated "
        "and no token changes; a token these settings make impossible is struck through.")
FIELDS = ("temperature", "top_k", "top_p", "min_p")


def settings_text(params: SamplingParams) -> str:
    """"T 0.7 · top-k 40 · top-p 0.9 · min-p 0.05" (the samplers that are on), "greedy", or "no samplers"."""
    if params.greedy:
        return "greedy"
    parts = [f"T {fmt_general(params.temperature)}"] if params.temperature != 1.0 else []
    parts += [f"top-k {params.top_k}"] if params.top_k else []
    parts += [f"top-p {fmt_general(params.top_p)}"] if params.top_p < 1.0 else []
    parts += [f"min-p {fmt_general(params.min_p)}"] if params.min_p > 0.0 else []
    return " · ".join(parts) or "T 1, no cut (the raw probabilities)"


class WhatIfPanel:
    """Inside the output card, under the text; its values are the tab state's `what_if_*` fields (bound)."""

    def __init__(self, state: TabState, *, on_change: Callable[[], Any], on_copy: Callable[[], Any]) -> None:
        with ui.element("div").classes("w-full tv-whatif").mark("what-if"):
            with ui.row().classes("w-full items-center gap-2"):
                ui.label("What if…").classes("text-subtitle2")
                ui.label(HINT).classes("tv-muted text-caption")
            with ui.row().classes("items-center gap-3"):
                self.temperature = NumberBox("Temperature", min=0, max=5, step=0.1, format="%.2f") \
                    .classes("tv-num tv-whatif-temperature").mark("what-if-temperature")
                self.top_k = NumberBox("Top-k (0 = off)", min=0, step=1, precision=0) \
                    .classes("tv-num tv-whatif-top-k").mark("what-if-top-k")
                self.top_p = NumberBox("Top-p", min=0.01, max=1.0, step=0.05, format="%.2f") \
                    .classes("tv-num tv-whatif-top-p").mark("what-if-top-p")
                self.min_p = NumberBox("Min-p (0 = off)", min=0, max=1, step=0.01, format="%.2f") \
                    .classes("tv-num tv-whatif-min-p").mark("what-if-min-p")
                ui.button("Use the sampling settings", icon="content_copy", on_click=on_copy) \
                    .props("flat dense no-caps").mark("what-if-copy")
            self.status = ui.label("").classes("text-caption tv-whatif-status").mark("what-if-status")
        for name in FIELDS:
            box = getattr(self, name)
            box.bind_value(state, f"what_if_{name}")
            box.on_value_change(lambda _: on_change())

    def say(self, text: str) -> None:
        self.status.set_text(text)

    def show(self, params: SamplingParams, values: list[float]) -> None:
        """The replay's summary: how many shown tokens these settings make impossible, and their mean probability."""
        impossible = sum(1 for v in values if v == 0)
        mean = sum(values) / len(values) if values else None
        self.say(f"Under {settings_text(params)}: {impossible} of {count(len(values), 'token')} would be impossible "
                 f"(struck through) · mean probability {percent(mean)}.")
