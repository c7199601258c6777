"""The colour legend for token probabilities."""

from __future__ import annotations

from nicegui import ui

from .colors import BUCKETS


def build_legend() -> ui.element:
    with ui.element("div").classes("tv-legend").mark("legend") as legend:
        ui.label("Probability:").classes("tv-legend-title")
        for bucket in BUCKETS:
            with ui.element("span").classes("tv-legend-item").mark(f"legend-{bucket.name}"):
                ui.element("span").classes(f"tv-swatch tv-p-{bucket.name}")
                ui.label(f"{bucket.name} {bucket.label}").classes("tv-legend-label")
        with ui.element("span").classes("tv-legend-item"):
            ui.label("· space  ↵ newline  → tab  ‹F0 9F› partial bytes").classes("tv-legend-label tv-muted")
    return legend
