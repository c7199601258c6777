"""The branch panel: every continuation kept by the session, switchable with one click."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nicegui import ui

from ..core.types import Branch
from ..present.text import visible_text


def split_positions(branches: list[Branch], active: int) -> set[int]:
    """Positions in the active branch where another branch leaves it (same tokens before the split)."""
    current = next((b for b in branches if b.id == active), None)
    if current is None:
        return set()
    ids = [t.token_id for t in current.tokens]
    out = set()
    for b in branches:  # b left its parent at b.split; both share tokens[:split]
        if b.parent is not None and b.split < len(ids) and [t.token_id for t in b.tokens[: b.split]] == ids[: b.split]:
            out.add(b.split)
    return out


def describe(branch: Branch) -> str:
    first = branch.first_token
    where = "root" if branch.parent is None else f"from #{branch.parent} at token {branch.split}"
    token = f" · “{visible_text(first.text)}”" if first is not None and branch.parent is not None else ""
    ppl = "–" if branch.perplexity is None else f"{branch.perplexity:.2f}"
    return (f"#{branch.id} {where}{token} · {len(branch.tokens)} tokens · log-prob {branch.logprob:.2f} · "
            f"perplexity {ppl}")


class BranchPanel:
    def __init__(self, on_switch: Callable[[int], Any]) -> None:
        self.on_switch = on_switch
        with ui.card().classes("tv-card w-full tv-branches").mark("branches"):
            ui.label("Branches").classes("text-subtitle1 tv-card-title")
            self.body = ui.column().classes("w-full gap-1")
        self.show([], None)

    def show(self, branches: list[Branch], active: int | None) -> None:
        self.body.clear()
        with self.body:
            if len(branches) <= 1:
                ui.label("Pick an alternative for a token: the old continuation stays here as a branch.") \
                    .classes("tv-muted text-caption").mark("branches-empty")
            for branch in branches:
                entry = ui.element("div").classes("tv-branch" + (" tv-branch-active" if branch.id == active else ""))
                entry.mark("branch", f"branch-{branch.id}")
                entry._props["data-branch"] = branch.id  # pylint: disable=protected-access
                entry.on("click", lambda _, b=branch.id: self.on_switch(b), js_handler="() => emit()")
                with entry:
                    ui.label(describe(branch)).classes("tv-branch-text")
