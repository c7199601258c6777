"""One token's alternatives as the menu and the details panel show them (issue 14): each with its raw probability
and its probability after the samplers, side by side; one the samplers removed is greyed and says which did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nicegui import ui

from ..core.types import Alternative, TokenStep
from ..present.scales import prob_class
from ..present.text import after_sampling, dropped_text, percent, visible_text

Choose = Callable[[int, int], Awaitable[None] | None]


def bar(prob: float, marker: str = "") -> None:
    """A bar as long as the raw probability, in its level's colour."""
    with ui.element("div").classes("tv-alt-bar"):
        fill = ui.element("div").classes(f"tv-alt-fill {prob_class(prob)}").style(f"width: {max(prob * 100, 0.5):.1f}%")
        if marker:
            fill.mark(marker)


def sampled_cell(alt: Alternative, marker: str) -> None:
    """"→ 30.1%", or the sampler that removed the token ("dropped by top-p")."""
    if alt.dropped_by:
        ui.label(dropped_text(alt.dropped_by)).classes("tv-alt-sampled tv-alt-drop").mark(f"{marker}-dropped")
    else:
        ui.label(after_sampling(alt.sampled_prob)).classes("tv-alt-sampled").mark(f"{marker}-sampled")


def fill_menu(step: TokenStep, position: int, on_choose: Choose) -> list[ui.menu_item]:
    """The inside of the alternatives menu of generated token `position`; returns its items (keyboard ↑/↓)."""
    ui.label(f"Alternatives for token {position}").classes("tv-alt-title")
    ui.label("probability: raw → after the samplers").classes("tv-alt-head")
    items, listed = [], False
    for rank, alt in enumerate(step.alternatives):
        current = alt.token_id == step.token_id
        listed = listed or current
        item = ui.menu_item(on_click=lambda _, t=alt.token_id: on_choose(position, t))
        item.classes("tv-alt" + (" tv-alt-current" if current else "") + (" tv-alt-dropped" if alt.dropped_by else ""))
        item.mark("alt", f"alt-{rank}")
        item._props["data-token-id"] = alt.token_id  # pylint: disable=protected-access
        items.append(item)
        with item:
            ui.label("✓" if current else "").classes("tv-alt-mark")
            ui.label(visible_text(alt.text)).classes("tv-alt-text")
            bar(alt.prob)
            ui.label(percent(alt.prob)).classes("tv-alt-prob")
            sampled_cell(alt, f"alt-{rank}")
    if not listed:
        ui.label(f"Chosen: “{visible_text(step.text)}” · {percent(step.prob)} {after_sampling(step.sampled_prob)} · "
                 f"rank {step.rank}").classes("tv-alt-note").mark("alt-current-note")
    return items
