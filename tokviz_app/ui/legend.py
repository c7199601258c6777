"""The colour legend: always the levels of the current colour mode."""

from __future__ import annotations

from nicegui import ui

from ..present.scales import MODES, legend_entries, level_class
from ..present.text import CONTINUES

# how chips show what is not plain text (present/text.py: visible_text, chip_texts)
SYMBOLS = (f"· space  ↵ newline  → tab  ‹F0 9F› partial bytes  "
           f"🙂{CONTINUES} one character split over tokens (shown on the first)")


class Legend:
    """The legend of the current colour mode (rebuilt when the mode changes: a handful of elements)."""

    def __init__(self, mode: str = "prob") -> None:
        self.container = ui.element("div").classes("tv-legend-box")
        self.mode = ""
        self.show(mode)

    def show(self, mode: str) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        self.container.clear()
        with self.container:
            with ui.element("div").classes("tv-legend").mark("legend", f"legend-mode-{mode}"):
                ui.label(f"{MODES[mode]}:").classes("tv-legend-title").mark("legend-title")
                for name, text in legend_entries(mode):
                    with ui.element("span").classes("tv-legend-item").mark(f"legend-{name}"):
                        ui.element("span").classes(f"tv-swatch {level_class(name)}")
                        ui.label(text).classes("tv-legend-label")
                with ui.element("span").classes("tv-legend-item"):
                    ui.label(SYMBOLS).classes("tv-legend-label tv-muted").mark("legend-symbols")
