"""Comparing the text on screen: with a second model, or with the same model after context B.

The comparison lives in the tab's state (`state.compare`) next to the tokens it was made for. After every
change of the shown text (`Tab.show_readouts`), `refresh` shows the part that still holds (`kept_for`): the
Δ colour classes (the on-demand colour mode mechanism of present/scales.py), the chips' hover lines, the
chart's second line, the panel's summary. Export, import and reload carry it in the snapshot.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

from ...core.compare import CONTEXT, MODEL, Comparison
from ...core.errors import TokvizError
from ...core.types import SessionSnapshot, TokenStep
from ...inputs import clean_prompt
from ...present.compare import chart_line, delta_classes, details, hover_lines, side_b, span_classes, summary
from ...present.scales import DELTA, SCALE
from ...service_compare import compare_text
from ..compare_panel import show_details

if TYPE_CHECKING:
    from ..tab import Tab


class Compare:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.applied = False  # chips carry a comparison's classes and hover lines (to be taken off when it goes)

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        """The Compare button: score the shown text with model B (loaded like the main picker loads), or after
        context B; then colour by Δ."""
        tab, state = self.tab, self.tab.state
        panel = tab.views.compare
        prompt, shown = list(state.prompt_tokens), list(state.tokens)
        if len(prompt) + len(shown) < 2:
            tab.notify("There is nothing to compare yet: generate or score some text first.", "warning")
            return
        mode, key = panel.mode.value, panel.select.value
        context_b = ""
        if mode == CONTEXT:
            context_b, replaced = clean_prompt(panel.context.value or "")
            if len(context_b) > tab.settings.max_prompt_chars:
                tab.notify(f"Context B is {len(context_b):,} characters long; this server takes at most "
                           f"{tab.settings.max_prompt_chars:,}. Shorten it.", "negative")
                return
            if replaced:
                tab.notify("Context B held half a character (e.g. half an emoji); it was replaced by �.", "warning")
        elif key not in {info.key for info in tab.service.catalog()}:  # the select could be bypassed
            tab.notify(f"'{key}' is not one of the models offered here.", "negative")
            return
        handle = state.handle
        a = handle.model if handle is not None and handle.session is not None else None
        op = tab.begin("comparing…")
        if op is None:
            return
        state.task = asyncio.current_task()
        result = None
        async with tab.guard(op, "Comparing"):
            b = None
            if mode == MODEL:
                b = tab.service.loaded_model(key)
                if b is None:
                    labels = {info.key: info.label for info in tab.service.catalog()}
                    panel.say(f"Loading {labels.get(key, key)}…")
                    b = await tab.service.load(key, on_progress=lambda _, message: self._loading(op, message))
            panel.say("Scoring the text…" if mode == MODEL else "Scoring the continuation after context B…")
            result = await compare_text(tab.service, a, prompt, shown, mode=mode, b=b, context_b=context_b,
                                        should_stop=lambda: not op.current)
        if op.failed:
            if op.current:
                error = op.error
                panel.say(str(error) if isinstance(error, TokvizError)
                          else f"Comparing failed: {type(error).__name__}: {error}", error=True)
            return
        if result is None or not op.current or [s.token_id for s in [*prompt, *shown]] != \
                [s.token_id for s in [*state.prompt_tokens, *state.tokens]]:
            return
        self.keep(result)
        tab.views.mode_select.set_value(DELTA)  # the select's handler colours the chips by Δ
        tab.say(f"compared with {side_b(result)} · colour by Δ")
        tab.remember()

    def _loading(self, op, message: str) -> None:
        if op.current:
            self.tab.views.compare.say(message)

    def keep(self, comparison: Comparison | None) -> None:
        """A new comparison for the shown text (None: none), shown at once."""
        state = self.tab.state
        state.compare = comparison
        if state.imported is not None and state.handle is None:  # a read-only import: it travels with the import
            state.imported = replace(state.imported, compare=comparison)
        self.refresh()

    def clear(self) -> None:
        """The Clear button."""
        if not self.tab.state.busy:
            self.keep(None)

    # ------------------------------------------------------------------ show
    def kept(self) -> Comparison | None:
        """The part of the comparison that holds for the text on screen."""
        state = self.tab.state
        if state.compare is None:
            return None
        return state.compare.kept_for([s.token_id for s in [*state.prompt_tokens, *state.tokens]])

    def refresh(self) -> None:
        """Show the comparison's valid part (or take an old one off): chips, hover, chart, panel."""
        tab, state = self.tab, self.tab.state
        if state.closed:
            return
        views, kept = tab.views, self.kept()
        if kept is None and not self.applied:
            views.compare.say(self._changed_note() if state.compare is not None else "")
            return
        steps, n = [*state.prompt_tokens, *state.tokens], len(state.prompt_tokens)
        for prefix, values in ((SCALE[DELTA].prefix, delta_classes(kept, steps)),
                               ("span", span_classes(kept, len(steps)))):
            views.tokens.set_mode_classes(prefix, values[:n], values[n:])
        lines = hover_lines(kept, steps)
        views.tokens.add_titles(lines[:n], lines[n:])
        views.chart.second = (lambda metric: chart_line(kept, steps, n, metric)) if kept is not None else None
        views.chart.second_name = f"B: {side_b(kept)}" if kept is not None else ""
        views.chart.flush()
        self.applied = kept is not None
        if kept is None:
            views.compare.say(self._changed_note() if state.compare is not None else "")
        else:
            views.compare.say(summary(kept, steps) + (" The text changed since: press Compare to score the rest."
                                                      if kept is not state.compare else ""))
        if state.selected is not None:
            self.show_details(state.selected)

    def _changed_note(self) -> str:
        return (f"The text changed since it was compared with {side_b(self.tab.state.compare)}: press Compare "
                "to compare it again.")

    def show_details(self, step: TokenStep) -> None:
        """The details panel's comparison section for `step` (empty where it has no comparison)."""
        state, panel = self.tab.state, self.tab.views.details
        box = panel.compare
        if box is None or box.is_deleted or panel.step is not step:
            return
        box.clear()
        kept = self.kept()
        index = step.position + (0 if step.is_prompt else len(state.prompt_tokens))
        shown = state.prompt_tokens if step.is_prompt else state.tokens
        if kept is None or step.position >= len(shown) or shown[step.position] is not step:
            return
        found = details(kept, [*state.prompt_tokens, *state.tokens], index)
        if found is not None:
            show_details(box, found)

    def for_snapshot(self, snapshot: SessionSnapshot) -> SessionSnapshot:
        """The snapshot with the comparison that holds for its shown text (for export and reload)."""
        steps = [*snapshot.prompt_tokens, *snapshot.tokens]
        compare = self.tab.state.compare
        kept = compare.kept_for([s.token_id for s in steps]) if compare is not None else None
        return replace(snapshot, compare=kept)
