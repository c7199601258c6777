"""Token chips: an append-only container and a lazily built alternatives menu.

Cost per streamed token stays flat: chips go into small chunk spans (CHUNK chips
each), so appending one re-sends one chunk's child list, never the whole text.
Each chip is a single element with the hover info in its `title` attribute; the
ten alternatives are built only when a chip is clicked, in one menu per tab.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from nicegui import ui
from nicegui.element import Element
from nicegui.elements.mixins.text_element import TextElement

from ..core.types import TokenStep
from .alternatives import fill_menu
from .state import TabState
from ..present.scales import step_classes
from ..present.text import ChipText, chip_texts, hover_text, visible_text

CHUNK = 64
# a character has at most 4 bytes and a partial token at least 1: re-joining the last JOIN_BACK chips of a
# window twice as long is exact (chars starting before the window touch only its first 3 chips)
JOIN_BACK = 4


class TokenChip(TextElement):
    """A span showing one token's text (always as text, never HTML)."""

    def __init__(self, text: str) -> None:
        super().__init__(tag="span", text=text)


def _chip(step: TokenStep, *, prompt: bool, shown: ChipText | None = None) -> TokenChip:
    shown = shown or ChipText(visible_text(step.text))
    chip = TokenChip(shown.text)
    chip.classes(("tv-prompt-token " if prompt else "tv-token ") + step_classes(step))
    if step.partial:
        chip.classes("tv-partial")
    if "\n" in step.text:
        chip.classes("tv-newline")
    chip._props["title"] = hover_text(step, shown.note)  # pylint: disable=protected-access
    if not prompt:
        chip._props["data-position"] = step.position  # pylint: disable=protected-access
        chip._props["data-prob"] = f"{step.prob:.6f}" if step.prob is not None else ""  # pylint: disable=protected-access
    return chip


def _breaks(text: str) -> list[Element]:
    """One <br> per newline so the text keeps its lines."""
    return [ui.element("br").classes("tv-br") for _ in range(text.count("\n"))]


class TokenView:
    """The prompt's chips, then the generated chips; callbacks report clicks and choices."""

    def __init__(self, state: TabState, *, on_select: Callable[[TokenStep], Any],
                 on_choose: Callable[[int, int], Awaitable[None] | None]) -> None:
        self.state = state
        self.on_select = on_select
        self.on_choose = on_choose
        self.chips: list[TokenChip] = []
        self._extras: list[list[Element]] = []  # line breaks that belong to each chip
        self._chunks: list[Element] = []
        self.menu: ui.menu | None = None
        self.menu_position: int | None = None
        self.highlighted: TokenChip | None = None
        self.menu_closed_at = 0.0  # Esc closes a menu in the browser first: that Esc must not also stop
        self.menu_items: list[ui.menu_item] = []  # the open menu's alternatives (keyboard ↑/↓)
        self.focus: int | None = None
        self.splits: list[TokenChip] = []
        self.mode = "prob"
        with ui.element("div").classes("tv-text tv-mode-prob").mark("tokens") as self.container:
            self.placeholder = ui.label("Tokens appear here.").classes("tv-placeholder").mark("tokens-placeholder")
            self.prompt_box = ui.element("span").classes("tv-prompt").mark("prompt-tokens")
            self.box = ui.element("span").classes("tv-generated").mark("generated-tokens")

    # ---------------------------------------------------------------- prompt
    def show_prompt(self, steps: list[TokenStep]) -> None:
        self.prompt_box.clear()
        with self.prompt_box:
            for i, (step, shown) in enumerate(zip(steps, chip_texts(steps))):
                chip = _chip(step, prompt=True, shown=shown).mark("prompt-token", f"prompt-token-{i}")
                chip.on("click", lambda _, s=step, c=chip: self._prompt_clicked(s, c), js_handler="() => emit()")
                _breaks(step.text)
        self._update_placeholder()

    # ------------------------------------------------------------- generated
    def append(self, step: TokenStep) -> TokenChip:
        position = len(self.chips)
        if not self._chunks or len(self._chunks[-1].default_slot.children) >= CHUNK:
            with self.box:
                self._chunks.append(ui.element("span").classes("tv-chunk"))
        with self._chunks[-1]:
            chip = _chip(step, prompt=False).mark("token", f"token-{position}")
            chip.on("click", lambda _, p=position: self.clicked(p), js_handler="() => emit()")
            chip.on("contextmenu.prevent", lambda _, p=position: self.clicked(p), js_handler="() => emit()")
            extras = _breaks(step.text)
        self.chips.append(chip)
        self._extras.append(extras)
        if step.partial and position < len(self.state.tokens) and self.state.tokens[position] is step:
            self._rejoin(position + 1)
        if position == 0:
            self._update_placeholder()
        return chip

    def _rejoin(self, end: int) -> None:
        """A character split over partial tokens shows once (present/text.py chip_texts): after the chips
        before `end` changed, the last few are shown again where their joined text changed."""
        steps = self.state.tokens
        if end > min(len(steps), len(self.chips)):
            return
        start = max(0, end - 2 * JOIN_BACK)
        for k, shown in enumerate(chip_texts(steps[start:end]), start):
            chip = self.chips[k]
            if (start == 0 or k >= end - JOIN_BACK) and chip.text != shown.text:
                chip.set_text(shown.text)
                chip._props["title"] = hover_text(steps[k], shown.note)  # pylint: disable=protected-access
                chip.update()

    def truncate(self, n: int) -> None:
        """Keep the first n generated chips."""
        if n >= len(self.chips):
            return
        if self.menu_position is not None and self.menu_position >= n:
            self.close_menu()
        for chip, extras in zip(self.chips[n:], self._extras[n:]):
            for element in (chip, *extras):
                if not element.is_deleted:
                    element.delete()
        if self.highlighted is not None and self.highlighted.is_deleted:
            self.highlighted = None
        del self.chips[n:], self._extras[n:]
        while self._chunks and not self._chunks[-1].default_slot.children:
            self._chunks.pop().delete()
        if 0 < n <= len(self.state.tokens) and self.state.tokens[n - 1].partial:  # a character may have lost its rest
            self._rejoin(n)
        self._update_placeholder()

    def clear(self) -> None:
        """Remove every generated chip (the prompt's stay)."""
        self.close_menu()
        if any(chip is self.highlighted for chip in self.chips):
            self.highlighted = None
        self.box.clear()
        self.chips.clear()
        self._extras.clear()
        self._chunks.clear()
        self._update_placeholder()

    def clear_all(self) -> None:
        self.clear()
        self.highlighted = None
        self.prompt_box.clear()
        self._update_placeholder()

    @property
    def steps(self) -> list[TokenStep]:
        """The generated tokens shown: the tab's state is the only list of them."""
        return self.state.tokens

    def render_all(self) -> None:
        """Show another branch: the generated chips are rebuilt once (a user action, not per token)."""
        self.clear()
        for step in self.state.tokens:
            self.append(step)

    def set_mode(self, mode: str) -> None:
        """Colour mode: one class on the container (every chip carries a class per mode)."""
        self.mode = mode
        self.container.classes(replace=f"tv-text tv-mode-{mode}")

    def set_mode_classes(self, prefix: str, prompt_classes: list[str], classes: list[str]) -> None:
        """An on-demand colour mode's values arrived (present/scales.py `on_demand`): each chip's tv-<prefix>-*
        class is replaced, the prompt's chips first, then the generated ones (only those that change)."""
        prompt_chips = [c for c in self.prompt_box.default_slot.children if isinstance(c, TokenChip)]
        for chip, new in (*zip(prompt_chips, prompt_classes), *zip(self.chips, classes)):
            old = next((c for c in chip.classes if c.startswith(f"tv-{prefix}-")), "")
            if old != new:
                chip.classes(remove=old, add=new)

    def add_titles(self, prompt_lines: list[str], lines: list[str]) -> None:
        """Lines under each chip's own hover text (a comparison's numbers; "" for none), prompt chips first."""
        prompt_chips = [c for c in self.prompt_box.default_slot.children if isinstance(c, TokenChip)]
        for chips, steps, extra in ((prompt_chips, self.state.prompt_tokens, prompt_lines),
                                    (self.chips, self.state.tokens, lines)):
            for chip, step, shown, more in zip(chips, steps, chip_texts(steps), extra):
                title = hover_text(step, shown.note) + (f"\n{more}" if more else "")
                if chip.props.get("title") != title:
                    chip._props["title"] = title  # pylint: disable=protected-access
                    chip.update()

    def mark_splits(self, positions: set[int]) -> None:
        """Mark the chips where another branch leaves this text."""
        for chip in self.splits:
            if not chip.is_deleted:
                chip.classes(remove="tv-split")
        self.splits = [self.chips[p] for p in sorted(positions) if 0 <= p < len(self.chips)]
        for chip in self.splits:
            chip.classes("tv-split")
            chip._props["data-split"] = "1"  # pylint: disable=protected-access

    # ------------------------------------------------------------ selection
    def highlight(self, chip: TokenChip | None) -> None:
        """Outline the selected chip (one at a time)."""
        old, self.highlighted = self.highlighted, chip
        if old is not None and old is not chip and not old.is_deleted:
            old.classes(remove="tv-selected")
        if chip is not None:
            chip.classes("tv-selected")

    def highlight_position(self, position: int) -> None:
        if 0 <= position < len(self.chips):
            self.highlight(self.chips[position])

    def _prompt_clicked(self, step: TokenStep, chip: TokenChip) -> None:
        self.highlight(chip)
        self.on_select(step)

    # ----------------------------------------------------------------- menu
    def clicked(self, position: int) -> None:
        if position >= len(self.steps):
            return
        self.highlight(self.chips[position])
        self.on_select(self.steps[position])
        self.open_menu(position)

    def open_menu(self, position: int) -> ui.menu:
        """Build the alternatives menu for one chip, now (never up front)."""
        self.close_menu()
        step, chip = self.steps[position], self.chips[position]
        with chip:
            # centred under the chip: where that overflows, Quasar shifts it inside the screen at full width
            # (a left-aligned menu is only narrowed to the room beside the chip: percentages went off a phone)
            menu = ui.menu().props('no-parent-event anchor="bottom middle" self="top middle"') \
                .classes("tv-alt-menu").mark("alt-menu")
        with menu:  # each alternative: raw and after the samplers, the dropped ones greyed (ui/alternatives.py)
            self.menu_items, self.focus = fill_menu(step, position, self.on_choose), None
        menu.on("hide", lambda _, m=menu: self._forget(m))
        self.menu, self.menu_position = menu, position
        menu.open()
        return menu

    def move_focus(self, delta: int) -> int | None:
        """Keyboard ↑/↓ inside the open menu; returns the focused alternative's index."""
        if self.menu is None or not self.menu_items:
            return None
        old = self.focus
        self.focus = 0 if old is None else max(0, min(len(self.menu_items) - 1, old + delta))
        if old is not None and old != self.focus:
            self.menu_items[old].classes(remove="tv-alt-focus")
        self.menu_items[self.focus].classes("tv-alt-focus")
        return self.focus

    def focused_token(self) -> int | None:
        """The token id of the focused alternative, if any."""
        if self.menu is None or self.focus is None or self.menu_position is None:
            return None
        return self.steps[self.menu_position].alternatives[self.focus].token_id

    def close_menu(self) -> None:
        self.menu_items, self.focus = [], None
        if self.menu is not None:
            self.menu_closed_at = time.monotonic()
        menu, self.menu, self.menu_position = self.menu, None, None
        if menu is not None and not menu.is_deleted:
            menu.delete()

    def _forget(self, menu: ui.menu) -> None:
        if self.menu is menu:
            self.close_menu()

    # -------------------------------------------------------------- helpers
    def _update_placeholder(self) -> None:
        self.placeholder.set_visibility(not self.chips and not self.prompt_box.default_slot.children)
