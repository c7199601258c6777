"""Picking an alternative (a new branch), switching branches, and keeping the branch panel current."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ...core.errors import TokvizError
from ...present.text import count

if TYPE_CHECKING:
    from ..tab import Tab


class Branching:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab

    async def choose(self, position: int, token_id: int) -> None:
        """Replace token `position` by an alternative; the old continuation stays a branch. With "continue
        after a pick" on, new text follows at once, as Generate to End makes it."""
        tab, state = self.tab, self.tab.state
        shown = len(state.tokens)
        if state.generating:
            tab.generation.stop()
        if state.handle is None and state.imported is not None and not state.closed:
            tab.notify("This import is read-only: initialize its model to continue from it.", "warning")
            return
        handle = state.handle
        if handle is None or position > len(state.tokens):
            return
        op = tab.begin()
        if op is None:
            return
        state.task = asyncio.current_task()
        async with tab.guard(op, "Choosing"):
            step = await tab.service.choose(handle, position, token_id, len(state.tokens))
        if op.failed or not op.current or handle is not state.handle:
            return
        del state.tokens[position:]
        tab.views.tokens.truncate(position)
        tab.generation.append(step)
        state.finish_reason = ""
        state.selected = step
        tab.views.tokens.highlight_position(position)
        tab.show_readouts()
        tab.show_warnings()
        tab.say(f"{count(len(state.tokens), 'token')} · token {position} replaced")
        more = self.continuation(shown, position)
        if more and not tab.is_eos(step):
            tab.generation.start(more)  # refreshes the branches when it ends
        else:
            await self.refresh()
            tab.remember()

    def continuation(self, shown: int, position: int) -> int:
        """How many tokens follow a pick: as many as the text had after `position` (the same length
        again), or the Max new tokens setting where the pick was at the end; 0 when switched off."""
        state = self.tab.state
        if not state.continue_after_pick:
            return 0
        after = shown - position - 1
        return after if after > 0 else (self.tab.generation.max_new_tokens() or 0)

    async def switch(self, branch_id: int) -> None:
        """Show another branch of the tree (no tokens are recomputed for the view)."""
        tab, state = self.tab, self.tab.state
        if state.generating:
            tab.generation.stop()
        imported = state.imported
        if imported is not None and state.handle is None:  # a read-only import: its own tree
            index = next((i for i, b in enumerate(imported.branches) if b.id == branch_id), None)
            if index is not None and not state.busy:
                imported.active = index
                self._show(list(imported.tokens), imported.branches, branch_id)
            return
        handle = state.handle
        if handle is None:
            return
        op = tab.begin()
        if op is None:
            return
        async with tab.guard(op, "Switching branches"):
            tokens = await tab.service.switch_branch(handle, branch_id)
        if op.failed or not op.current or handle is not state.handle:
            return
        self._show(list(tokens), state.branches, branch_id)
        await self.refresh()

    async def refresh(self) -> None:
        """Re-read the branch tree (after a generation, a choice or a switch)."""
        tab, state = self.tab, self.tab.state
        handle = state.handle
        if handle is None or handle.session is None or handle.closed:
            return
        try:
            branches, active = await tab.service.branches(handle)
        except TokvizError:
            return
        if not state.closed and handle is state.handle:
            for branch in branches:  # a step that finished after Stop is not on screen (the session drops it)
                if branch.id == active:
                    del branch.tokens[len(state.tokens):]
            state.branches, state.active_branch = branches, active
            tab.views.show_branches()
            tab.remember()

    def _show(self, tokens, branches, active) -> None:
        tab, state = self.tab, self.tab.state
        state.tokens, state.selected, state.finish_reason = tokens, None, ""
        state.branches, state.active_branch = list(branches), active
        tab.views.tokens.render_all()
        tab.show_readouts()
        tab.say(count(len(tokens), "token"))
        tab.remember()
