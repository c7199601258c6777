"""The per-position line chart (ui.echart), synchronised with the token text.

Updated at most every THROTTLE seconds while streaming (and once at the end), never per token.
Two series: the line (series 0, plain values, silent) and the points on it (series 1, a scatter), each point
[position, value, level, token text, value text], coloured by its level in the tab's colour mode (a hidden
piecewise visualMap over the level, in the tab's palette) and clickable within ~10 px (a transparent border
widens the hit area beyond the drawn dot). Series 2 is a comparison's line; series 3, under "probability", the
probability after the samplers (where the tokens were not drawn from the raw distribution).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import TokenStep
from .state import TabState
from ..present.scales import CHART_METRICS, LEVELS, PALETTES, SCALE, level, metric_value
from ..present.text import after_sampling, fmt, percent, visible_text

THROTTLE = 0.2
AFTER = "after the samplers"  # the second line under "probability": what each token was drawn from
NO_LEVEL = len(LEVELS)  # the level index of a token whose colour-mode number is unknown
# The tooltip: position, token text and value, escaped (token text is untrusted: it may be markup).
TOOLTIP = """(params) => {
  const list = Array.isArray(params) ? params : [params];
  const point = list.find((p) => p.seriesIndex === 1 && Array.isArray(p.data));
  if (!point) return '';
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  const [position, , , text, value] = point.data;
  const other = list.find((p) => p.seriesIndex === 2 && Array.isArray(p.data) && p.data[1] !== null);
  return 'token ' + position + ': <span style="font-family: monospace; white-space: pre; font-weight: 600">'
    + esc(text) + '</span><br>' + esc(value) + (other ? '<br>' + esc(other.data[2]) : '');
}"""


def _sampled(step: TokenStep) -> bool:
    """Drawn with samplers (temperature, penalty or a cut): its probability after them is worth a second number."""
    return step.sampling is not None and not step.sampling.plain


class TokenChart:
    def __init__(self, state: TabState, on_point: Callable[[int], Any]) -> None:
        self.state = state
        self.on_point = on_point
        self.metric = "prob"
        self.selected: int | None = None
        self._last = 0.0
        # a comparison's line (ui/flows/compare.py): metric -> [[position, value, tooltip text], ...], or None
        self.second: Callable[[str], list[list] | None] | None = None
        self.second_name = ""
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
            "tooltip": {"trigger": "axis", ":formatter": TOOLTIP},
            "xAxis": {"type": "category", "data": [], "name": "position"},
            "yAxis": {"type": "value", "name": CHART_METRICS[self.metric], "min": 0,
                      "splitLine": {"lineStyle": {"color": "rgba(128, 128, 128, 0.25)"}}},
            "visualMap": {"type": "piecewise", "show": False, "seriesIndex": 1, "dimension": 2,
                          "pieces": self._pieces()},
            "series": [{"type": "line", "data": [], "showSymbol": False, "silent": True,
                        "lineStyle": {"width": 1.5, "color": "#90a4ae"}, "itemStyle": {"color": "#90a4ae"},
                        "markPoint": {"symbol": "circle", "symbolSize": 16, "silent": True, "label": {"show": False},
                                      "itemStyle": {"color": "#ff6f00"}, "data": []}},
                       {"type": "scatter", "data": [], "symbolSize": 10, "z": 3, "emphasis": {"scale": 1.5},
                        "itemStyle": {"borderWidth": 10, "borderColor": "rgba(0, 0, 0, 0)"}},
                       {"type": "line", "data": [], "showSymbol": False, "silent": True, "connectNulls": True,
                        "lineStyle": {"width": 1.5, "type": "dashed", "color": "#ef6c00"},
                        "itemStyle": {"color": "#ef6c00"}},
                       {"type": "line", "data": [], "showSymbol": False, "silent": True, "name": AFTER,
                        "lineStyle": {"width": 1.2, "color": "#00897b"}, "itemStyle": {"color": "#00897b"}}],
            "legend": {"show": False, "top": 0, "right": 8, "data": []},
        }

    def _pieces(self) -> list[dict]:
        """The colour of each level (accent colours of the tab's palette, as the chips' underlines)."""
        colours = PALETTES[self.state.palette]
        return [{"value": i, "color": colours[name][1]}
                for i, name in enumerate((*SCALE[self.state.mode].colours, "none"))]

    def _point(self, position: int, step: TokenStep, value: float | None) -> list:
        """[position, value, level index in the colour mode, token text, value text] (the tooltip reads them)."""
        name = level(step, self.state.mode)
        shown = percent(value) if self.metric == "prob" else fmt(value, 2, " bits")
        index = SCALE[self.state.mode].colours.index(name) if name else NO_LEVEL
        after = f" {after_sampling(step.sampled_prob)} after the samplers" \
            if self.metric == "prob" and _sampled(step) else ""
        return [position, value, index, visible_text(step.text),
                f"{CHART_METRICS[self.metric].split(' (')[0]} {shown}{after}"]

    def _after_sampling(self) -> list[float | None]:
        """Under "probability", the probability after the samplers as a second line, where tokens were drawn with
        samplers (from the raw distribution the two lines are one)."""
        if self.metric != "prob" or not any(_sampled(s) for s in self.steps):
            return []
        return [None if s.sampled_prob is None else round(float(s.sampled_prob), 6) for s in self.steps]

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
        options["series"][1]["data"] = [self._point(i, s, v) for i, (s, v) in enumerate(zip(self.steps, values))]
        options["visualMap"]["pieces"] = self._pieces()  # the palette may have changed
        mark = []
        if self.selected is not None and self.selected < len(values):
            mark = [{"coord": [self.selected, values[self.selected]], "value": self.selected}]
        series["markPoint"]["data"] = mark
        second = self.second(self.metric) if self.second is not None else None
        options["series"][2]["data"] = second or []
        names = [self.second_name, "A (shown)"] if second else []
        options["series"][0]["name"], options["series"][2]["name"] = "A (shown)", self.second_name
        options["legend"].update(show=bool(second), data=names[::-1])
        sampled = options["series"][3]["data"] = self._after_sampling()  # issue 14: raw and sampled together
        if sampled:
            options["series"][0]["name"] = options["series"][0]["name"] if second else "raw"
            options["legend"].update(show=True, data=[*(names[::-1] or ["raw"]), AFTER])
        self.chart.update()
        self._last = time.monotonic()

