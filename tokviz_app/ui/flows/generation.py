"""Generating: the next token, or to the end (streamed); Stop and Reset."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from nicegui import background_tasks

from ...core.errors import ContextFullError
from ...core.types import TokenStep
from ...inputs import clean_prompt, parse_max_tokens, parse_seed
from ...present.text import count
from ...service import SessionHandle

if TYPE_CHECKING:
    from ..tab import Operation, Tab

FINISH_TEXT = {
    "eos": "finished: end of text",
    "length": "finished: reached the max-tokens setting",
    "stopped": "stopped",
    "context": "finished: the context window is full",
    "error": "stopped by an error",
}


class Generation:
    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self._started = 0.0  # this generation's start and count, for the tokens/s read-out
        self._count = 0

    # ----------------------------------------------------------------- buttons
    def next(self) -> None:
        self._start(1)

    def to_end(self) -> None:
        tab = self.tab
        if tab.state.busy:
            return
        try:
            n, note = parse_max_tokens(tab.state.max_tokens, tab.settings.default_max_tokens,
                                       tab.settings.max_tokens_limit)
        except ValueError as error:  # inf, nan: say so, generate nothing
            tab.notify(str(error), "negative")
            return
        if note:
            tab.notify(note, "warning")
        self._start(n)

    def stop(self) -> None:
        """Stop at once; what was generated stays (a step in flight is dropped)."""
        if self.tab.cancel():
            self.tab.state.finish_reason = "stopped"
            self.show_finish()
        self.tab.refresh()

    def reset(self) -> None:
        """Stop, clear the generated tokens; keep prompt and model. The next generation starts afresh."""
        tab, state = self.tab, self.tab.state
        tab.cancel()
        tab.drop_session()
        prompt_tokens = state.prompt_tokens
        tab.clear_view()
        state.prompt_tokens = prompt_tokens  # the prompt's chips stay
        tab.views.tokens.show_prompt(prompt_tokens)
        tab.say("")
        tab.refresh()

    # -------------------------------------------------------------- the flow
    def _start(self, n: int) -> None:
        tab, state = self.tab, self.tab.state
        if not self.ready():
            return
        op = tab.begin("generating…", generating=True)
        if op is not None:
            state.finish_reason = ""
            state.task = background_tasks.create(self._run(op, n), name="tokviz generate")

    async def _run(self, op: Operation, n: int) -> None:
        tab, state = self.tab, self.tab.state
        reason = "length" if n > 1 else ""
        try:
            async with tab.guard(op, "Generation"):
                handle = await self.session()
                if handle is None:
                    reason = "error"
                    return
                reason = await self._generate(handle, n) or reason
        except asyncio.CancelledError:
            reason = "stopped"
            raise
        finally:
            if op.failed:
                reason = "context" if isinstance(op.error, ContextFullError) else "error"
            if op.current:
                state.finish_reason = reason
                self.show_finish()
                tab.views.chart.flush_if_dirty()
                tab.show_perplexity()
                tab.show_warnings()
                background_tasks.create(tab.branching.refresh(), name="tokviz branches")

    async def _generate(self, handle: SessionHandle, n: int) -> str:
        """Up to `n` tokens, shown as they come; "eos" when the model ended the text."""
        service, state = self.tab.service, self.tab.state
        self._started, self._count = time.perf_counter(), 0
        if n > 1 and handle.model.capabilities.streams:  # one streaming request; Stop cancels it
            async for step in service.stream(handle, len(state.tokens), state.sampling_params(), n):
                self.append(step)
                if service.is_eos(handle, step):
                    return "eos"
            return ""
        for _ in range(n):
            step = await service.step(handle, len(state.tokens), state.sampling_params())
            self.append(step)
            if service.is_eos(handle, step):
                return "eos"
        return ""

    async def session(self) -> SessionHandle | None:
        """The tab's session for the prompt as it reads now (a new prompt starts a new session)."""
        tab, state = self.tab, self.tab.state
        prompt = self.checked_prompt()
        if prompt is None:
            return None
        handle = state.handle
        if handle is not None and handle.session is not None and not handle.closed \
                and handle.model is state.model and handle.prompt == prompt:
            return handle
        tab.drop_session()
        tab.clear_view()
        handle = state.handle = tab.service.new_handle(state.model, prompt, state.sampling_params())
        try:
            await tab.service.start(handle)
        except BaseException:
            tab.drop_session(handle)
            raise
        state.prompt_tokens = handle.prompt_tokens
        tab.views.tokens.show_prompt(state.prompt_tokens)
        return handle

    def append(self, step: TokenStep) -> None:
        """One new token: into the state, then onto the page."""
        tab, state = self.tab, self.tab.state
        state.tokens.append(step)
        tab.views.tokens.append(step)
        tab.views.chart.changed()
        text = f"{count(len(state.tokens), 'token')} generated…"
        if state.generating and self._started:
            self._count += 1
            elapsed = time.perf_counter() - self._started
            if elapsed > 0:
                text += f" · {elapsed * 1000 / self._count:.0f} ms/token · {self._count / elapsed:.1f} tokens/s"
        tab.say(text)

    def show_finish(self) -> None:
        state = self.tab.state
        text = count(len(state.tokens), "token")
        if state.finish_reason in FINISH_TEXT:
            text += " · " + FINISH_TEXT[state.finish_reason]
        self.tab.say(text)

    # ----------------------------------------------------------------- checks
    def ready(self) -> bool:
        """The tab is idle, has a model and a usable seed (else a message says what is missing)."""
        tab, state = self.tab, self.tab.state
        if state.busy or state.loading or state.closed:
            return False
        if state.model is None:
            tab.notify("Initialize a model first.", "warning")
            return False
        return self.check_seed()

    def checked_prompt(self) -> str | None:
        """The prompt as the model may read it, or None (with a message) when it is refused.
        Generate and Score text share these checks."""
        tab = self.tab
        prompt, replaced = clean_prompt(tab.state.prompt)
        if len(prompt) > tab.settings.max_prompt_chars:
            tab.notify(f"The prompt is {len(prompt):,} characters long; this server takes at most "
                       f"{tab.settings.max_prompt_chars:,}. Shorten it.", "negative")
            return None
        if replaced:
            tab.notify(f"The prompt held {count(replaced, 'invalid character')} (unpaired surrogates); "
                       "each was replaced by �.", "warning")
        return prompt

    def check_seed(self) -> bool:
        """The seed is usable (a huge one is reduced, and the box shows the one used)."""
        tab = self.tab
        try:
            seed, note = parse_seed(tab.state.seed)
        except ValueError as error:
            tab.notify(str(error), "negative")
            return False
        if note:
            tab.notify(note, "warning")
            tab.state.seed = seed
        return True
