"""The per-position line chart (ui.echart), synchronised with the token text.

Updated at most every THROTTLE seconds while streaming (and once at the end), never per token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import TokenStep
from .state import TabState
from ..present.scales import CHART_METRICS, SCALE, metric_value

THROTTLE = 0.2


class TokenChart:
    def __init__(self, state: TabState, on_point: Callable[[int], Any]) -> None:
        self.state = state
        self.on_point = on_point
        self.metric = "prob"
        self.selected: int | None = None
        self._last = 0.0
        self._dirty = False
        with ui.row().classes("w-full items-center gap-2 tv-chart-bar"):
            ui.label("Chart").classes("text-subtitle2")
            self.toggle = ui.toggle(CHART_METRICS, value="prob", on_change=lambda e: self.set_metric(e.value)) \
                .props("dense no-caps size=sm").mark("chart-metric")
        self.chart = ui.echart(self._options(), on_point_click=lambda e: self.on_point(int(e.data_index))) \
            .classes("tv-chart w-full").mark("chart")

    def _options(self) -> dict:
        return {
            "animation": False,
            "grid": {"left": 48, "right": 16, "top": 24, "bottom": 28},
            "tooltip": {"trigger": "axis"},
            "xAxis": {"type": "category", "data": [], "name": "position"},
            "yAxis": {"type": "value", "name": CHART_METRICS[self.metric], "min": 0,
                      "splitLine": {"lineStyle": {"color": "rgba(128, 128, 128, 0.25)"}}},
            "series": [{"type": "line", "data": [], "symbolSize": 7, "showAllSymbol": True,
                        "lineStyle": {"width": 1.5},
                        "markPoint": {"symbol": "circle", "symbolSize": 14, "silent": True, "label": {"show": False},
                                      "itemStyle": {"color": "#ff6f00"}, "data": []}}],
        }

    # ----------------------------------------------------------------- data
    @property
    def steps(self) -> list[TokenStep]:
        """The generated tokens shown: the tab's state is the only list of them."""
        return self.state.tokens

    def render_all(self) -> None:
        if self.selected is not None and self.selected >= len(self.steps):
            self.selected = None
        self.flush()

    def changed(self) -> None:
        """Tokens were added or removed: pushed to the browser at most every THROTTLE seconds."""
        self._dirty = True
        if time.monotonic() - self._last >= THROTTLE:
            self.flush()

    def set_metric(self, metric: str) -> None:
        self.metric = metric
        self.flush()

    def select(self, position: int | None) -> None:
        self.selected = position if position is not None and 0 <= position < len(self.steps) else None
        self.flush()

    def flush(self) -> None:
        options = self.chart.options
        values = [metric_value(s, self.metric) for s in self.steps]
        options["xAxis"]["data"] = list(range(len(values)))
        options["yAxis"]["name"] = CHART_METRICS[self.metric]
        options["yAxis"]["max"] = SCALE[self.metric].axis_max
        series = options["series"][0]
        series["data"] = values
        mark = []
        if self.selected is not None and self.selected < len(values):
            mark = [{"coord": [self.selected, values[self.selected]], "value": self.selected}]
        series["markPoint"]["data"] = mark
        self.chart.update()
        self._last = time.monotonic()
        self._dirty = False

    def flush_if_dirty(self) -> None:
        if self._dirty:
            self.flush()
