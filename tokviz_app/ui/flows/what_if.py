"""What-if replay (issue 14): the text on screen re-coloured by the probability each token would have had under the
What if panel's settings; nothing is generated and no token changes. The chips' `tv-w-*` class is the "What-if
probability" colour mode's (present/scales.py, computed on demand), `tv-whatif-zero` strikes through the impossible."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nicegui import background_tasks

from ...present.scales import SCALE, WHAT_IF, value_class

if TYPE_CHECKING:
    from ..tab import Tab

ZERO = "whatif"  # the prefix of the struck-through class, tv-whatif-zero


class WhatIf:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self._running = False  # one replay at a time: changes meanwhile are taken up when it ends
        self._again = False

    def changed(self) -> None:
        """A setting of the panel changed: colour by what-if probability (the mode select follows) and replay."""
        tab = self.tab
        if tab.state.mode != WHAT_IF:
            tab.views.mode_select.set_value(WHAT_IF)  # its handler switches the mode, which replays
        else:
            self.refresh()

    def copy_settings(self) -> None:
        """The panel starts from the settings the text was sampled with."""
        state = self.tab.state
        params = state.sampling_params()
        state.what_if_temperature = 0 if params.greedy else params.temperature
        state.what_if_top_k, state.what_if_top_p, state.what_if_min_p = params.top_k, params.top_p, params.min_p

    def refresh(self) -> None:
        """In the What-if colour mode, replay the shown text under the panel's settings: after the mode is chosen,
        after every change of the settings and of the text (new chips show "none" until then)."""
        state = self.tab.state
        if state.mode != WHAT_IF or state.generating or state.closed:
            return
        if self._running:
            self._again = True
            return
        self._running = True
        background_tasks.create(self._replay(), name="tokviz what-if")

    async def _replay(self) -> None:
        try:
            while True:
                self._again = False
                await self._once()
                if not self._again or self.tab.state.mode != WHAT_IF:
                    return
        finally:
            self._running = False

    async def _once(self) -> None:
        tab, state = self.tab, self.tab.state
        panel, handle = tab.views.what_if, state.handle
        if handle is None or handle.session is None:
            panel.say("The replay needs a live session: generate or score a text first.")
            return
        if not handle.model.capabilities.what_if:
            panel.say(f"{handle.model.label} cannot replay its text under other sampling settings.")
            return
        params = state.what_if_params()
        op = tab.begin()
        if op is None:  # busy: the text's next change replays it (Tab.show_readouts)
            return
        panel.say("Replaying the text under these settings…")
        async with tab.guard(op, "The what-if replay"):
            prompt, generated = await tab.service.what_if(handle, params, len(state.tokens))
        if op.failed or not op.current or handle is not state.handle or state.mode != WHAT_IF:
            return
        tokens = tab.views.tokens
        tokens.set_mode_classes(SCALE[WHAT_IF].prefix, [value_class(v, WHAT_IF) for v in prompt],
                                [value_class(v, WHAT_IF) for v in generated])
        zero = lambda values: [f"tv-{ZERO}-zero" if v == 0 else "" for v in values]  # noqa: E731
        tokens.set_mode_classes(ZERO, zero(prompt), zero(generated))
        panel.show(params, [v for v in (*prompt, *generated) if v is not None])
