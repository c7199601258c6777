"""Generating: the next token, or to the end (streamed); Stop and Reset."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from nicegui import background_tasks, ui

from ...core.errors import ContextFullError
from ...core.types import TokenStep
from ...inputs import clean_prompt, parse_max_tokens, parse_seed, sampling_notes
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
        self._rate = (-1, "")  # (tokens shown, " · 85 ms/token · 11.8 tokens/s") at the last streamed token

    # ----------------------------------------------------------------- buttons
    def next(self, *, queue: bool = False) -> None:
        """One token. With `queue` (the "n" key) a press during a generation runs after it: fast typing is
        not lost. A button cannot queue: a double click must not make two tokens."""
        state = self.tab.state
        if queue and state.generating and state.task is not None:
            state.queued_steps += 1
            return
        self.start(1)

    def to_end(self) -> None:
        n = self.max_new_tokens()
        if n is not None:
            self.start(n)

    def max_new_tokens(self) -> int | None:
        """The Max new tokens box as a number of tokens, or None after saying what is wrong with it."""
        tab = self.tab
        try:
            n, note = parse_max_tokens(tab.state.max_tokens, tab.settings.default_max_tokens,
                                       tab.settings.max_tokens_limit)
        except ValueError as error:  # inf, nan: say so, generate nothing
            tab.notify(str(error), "negative")
            return None
        if note:
            tab.notify(note, "warning")
        return n

    def stop(self) -> None:
        """Stop at once; what was generated stays (a step in flight is dropped), and every read-out
        (perplexity, chart, branches) shows exactly the tokens on screen."""
        tab = self.tab
        tab.state.queued_steps = 0
        if tab.cancel():
            tab.state.finish_reason = "stopped"
            self.show_finish()
            tab.show_readouts()
            tab.remember()
            background_tasks.create(tab.branching.refresh(), name="tokviz branches")
        tab.refresh()

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
    def start(self, n: int) -> None:
        """Generate up to `n` tokens in the background (streamed onto the page; Stop cancels)."""
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
                if not await self.may_start_over():
                    reason = ""
                    return
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
                tab.show_readouts()
                tab.show_warnings()
                tab.remember()
                queued, state.queued_steps = state.queued_steps, 0
                if queued and reason in ("", "length"):
                    self.start(queued)
                else:
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
        request = self.request()
        if request is None:
            return None
        prompt, messages = request
        handle = state.handle
        if handle is not None and handle.session is not None and not handle.closed \
                and handle.model is state.model and self.same_request(handle, prompt, messages):
            return handle
        tab.drop_session()
        tab.clear_view()
        handle = state.handle = tab.service.new_handle(state.model, prompt, state.sampling_params(), messages)
        epoch = state.epoch

        def scoring(done: int, total: int) -> None:  # a long prompt takes seconds: say how far it got
            if state.epoch == epoch and state.busy:
                tab.say(f"scoring the prompt: {done:,} / {total:,} tokens")

        try:
            await tab.service.start(handle, on_progress=scoring)
        except BaseException:
            tab.drop_session(handle)
            raise
        state.prompt_tokens = handle.prompt_tokens
        tab.views.tokens.show_prompt(state.prompt_tokens)
        return handle

    async def may_start_over(self) -> bool:
        """An edited prompt starts a new session: where that discards branches, ask first."""
        tab, state = self.tab, self.tab.state
        handle = state.handle
        request = self.request(quiet=True)
        if handle is None or len(state.branches) < 2 or request is None or self.same_request(handle, *request):
            return True
        with tab.views.root, ui.dialog() as dialog, ui.card().mark("start-over"):
            ui.label(f"The prompt was edited. Generating from it starts over: the current text and its "
                     f"{len(state.branches)} branches are discarded (Export JSON keeps them).")
            with ui.row():
                ui.button("Start over", on_click=lambda: dialog.submit(True)).props("no-caps").mark("start-over-yes")
                ui.button("Keep my branches", on_click=lambda: dialog.submit(False)).props("flat no-caps") \
                    .mark("start-over-no")
        try:
            start_over = bool(await dialog)
        finally:
            dialog.delete()
        if not start_over:  # back to the prompt (or chat) of the text on screen
            state.show_request(handle.prompt, handle.messages)
            tab.notify("Nothing was discarded: the prompt is back to the one of the text on screen.", "info")
        return start_over

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
                self._rate = len(state.tokens), f" · {elapsed * 1000 / self._count:.0f} ms/token · " \
                    f"{self._count / elapsed:.1f} tokens/s"
                text += self._rate[1]
        tab.say(text)
        tab.remember(throttle=True)

    def show_finish(self) -> None:
        state = self.tab.state
        text = count(len(state.tokens), "token")
        if state.finish_reason in FINISH_TEXT:
            text += " · " + FINISH_TEXT[state.finish_reason]
        if self._rate[0] == len(state.tokens):  # the speed stays readable once generation ends
            text += self._rate[1]
        self.tab.say(text)

    # ----------------------------------------------------------------- checks
    def request(self, *, quiet: bool = False) -> tuple[str, list[dict[str, str]] | None] | None:
        """What the model reads: (prompt, None), or ("", messages) in chat mode; None when refused (with
        a message unless `quiet`)."""
        tab, state = self.tab, self.tab.state
        model = state.model
        if state.chat and model is not None and model.capabilities.chat_template:
            if not state.user_message.strip():
                if not quiet:
                    tab.notify("Write a user message first: in chat mode the model answers it.", "warning")
                return None
            return "", state.chat_messages()
        prompt = self.checked_prompt() if not quiet else clean_prompt(state.prompt)[0]
        return None if prompt is None else (prompt, None)

    @staticmethod
    def same_request(handle: SessionHandle, prompt: str, messages: list[dict[str, str]] | None) -> bool:
        return handle.messages == messages if messages is not None else \
            (handle.messages is None and handle.prompt == prompt)

    def ready(self) -> bool:
        """The tab is idle, has a model and a usable seed (else a message says what is missing)."""
        tab, state = self.tab, self.tab.state
        if state.busy or state.loading or state.closed:
            return False
        if state.model is None:
            tab.notify("Initialize a model first.", "warning")
            return False
        for note in sampling_notes(state.temperature, state.top_k, state.top_p, state.min_p, state.typical_p,
                                   state.repetition_penalty, greedy=bool(state.greedy)):
            tab.notify(note, "warning")  # with greedy on, only the repetition penalty is used
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
