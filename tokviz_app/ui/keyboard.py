"""The keyboard map: ←/→ select, ↑/↓ move in the open menu, Enter picks, n next, g to end, Esc, ?."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from nicegui import background_tasks
from nicegui.events import KeyEventArguments

if TYPE_CHECKING:
    from .tab import Tab


class Keyboard:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    def on_key(self, e: KeyEventArguments) -> None:
        if not e.action.keydown or e.modifiers.ctrl or e.modifiers.alt or e.modifiers.meta:
            return
        tab, key = self.tab, e.key.name
        view = tab.views.tokens
        n = len(tab.state.tokens)
        selected = tab.state.selected
        current = selected.position if selected is not None and not selected.is_prompt else None
        if key in ("ArrowLeft", "ArrowRight") and n:
            step = -1 if key == "ArrowLeft" else 1
            target = (n - 1 if step < 0 else 0) if current is None else max(0, min(n - 1, current + step))
            tab.explore.select_position(target)
        elif key in ("ArrowDown", "ArrowUp"):
            if view.menu is None and current is not None:
                view.clicked(current)
            view.move_focus(1 if key == "ArrowDown" else -1)
        elif key == "Enter":
            token_id = view.focused_token()
            if token_id is not None and view.menu_position is not None:
                position = view.menu_position
                view.close_menu()
                background_tasks.create(tab.branching.choose(position, token_id), name="tokviz choose")
            elif current is not None:
                view.clicked(current)
        elif key == "Escape":
            if view.menu is not None:
                view.close_menu()
            elif time.monotonic() - view.menu_closed_at > 0.5:  # not the Esc that just closed a menu
                tab.generation.stop()
        elif key == "n":
            tab.generation.next(queue=True)
        elif key == "g":
            tab.generation.to_end()
        elif key == "?":
            tab.views.help.open()
