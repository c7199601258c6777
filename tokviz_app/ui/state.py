"""Everything one tab knows, in one object: created inside the page function, rendered by the views.

The prompt and settings fields are bound both ways to their widgets (NiceGUI bindable fields: event-driven,
no polling), so flows read and write the state, never the widgets. The rest is written by the flows only.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import field

from nicegui import binding

from ..core.compare import Comparison
from ..core.contract import Model
from ..core.types import Branch, SamplingParams, SessionSnapshot, TokenStep
from ..inputs import MAX_TEMPERATURE, parse_seed
from ..service import SessionHandle


@binding.bindable_dataclass(bindable_fields=["prompt", "max_tokens", "temperature", "top_k", "top_p", "seed",
                                             "greedy", "continue_after_pick", "chat", "system_message",
                                             "user_message"])
class TabState:
    # model
    model_key: str | None = None  # selected in the dropdown
    model: Model | None = None  # the model this tab uses (shared with other tabs)
    loading: bool = False
    error: str = ""
    # prompt and settings, as the widgets hold them (a number may be None, or "inf"/"nan": the flows check them)
    prompt: str = ""
    max_tokens: float | str | None = 50
    temperature: float | str | None = 1.0
    top_k: float | str | None = 0
    top_p: float | str | None = 1.0
    seed: float | str | None = None
    greedy: bool = False
    continue_after_pick: bool = True  # a picked alternative is followed by new text, as Generate to End does
    chat: bool = False  # the model reads a chat (system + user message, through its template), not the prompt
    system_message: str = ""
    user_message: str = ""
    # the session and what is shown of it
    handle: SessionHandle | None = None
    prompt_tokens: list[TokenStep] = field(default_factory=list)
    tokens: list[TokenStep] = field(default_factory=list)  # generated tokens shown, position = index
    selected: TokenStep | None = None
    branches: list[Branch] = field(default_factory=list)
    active_branch: int | None = None
    imported: SessionSnapshot | None = None  # shown read-only until its model is initialized
    warned: set[str] = field(default_factory=set)  # the session's caveats already shown
    finish_reason: str = ""
    compare: Comparison | None = None  # the text scored by a second model or after context B (flows/compare.py)
    # view settings
    mode: str = "prob"
    palette: str = "default"
    # the one operation in flight (see Tab.begin)
    busy: bool = False
    generating: bool = False
    queued_steps: int = 0  # "n" presses while a generation runs: generated after it, one by one
    task: asyncio.Task | None = None
    epoch: int = 0  # bumped by every new operation and every cancel: stale tasks keep their hands off
    closed: bool = False  # the tab is gone: never touch its UI again

    def sampling_params(self) -> SamplingParams:
        """The settings as entered; temperature 0 means greedy. The seed was checked by the flow."""
        temperature = _number(self.temperature, 1.0)
        top_p = _number(self.top_p, 1.0) or 1.0
        try:
            seed = parse_seed(self.seed)[0]
        except ValueError:
            seed = None
        return SamplingParams(  # clamped as inputs.sampling_notes says
            temperature=min(MAX_TEMPERATURE, temperature) if temperature > 0 else 1.0,
            top_k=max(0, int(_number(self.top_k, 0))),
            top_p=min(1.0, max(1e-6, top_p)),
            seed=seed,
            greedy=bool(self.greedy) or temperature <= 0,
        )

    def chat_messages(self) -> list[dict[str, str]]:
        """The chat as the model's template takes it (the system message only where one was written)."""
        system = [{"role": "system", "content": self.system_message}] if self.system_message.strip() else []
        return [*system, {"role": "user", "content": self.user_message}]

    def show_request(self, prompt: str, messages: list[dict[str, str]] | None) -> None:
        """A session's prompt or chat, back into the bound fields (an import, a reload, "keep my branches")."""
        self.chat = messages is not None
        if messages is None:
            self.prompt = prompt
            return
        self.system_message = next((m["content"] for m in messages if m["role"] == "system"), "")
        self.user_message = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")

    def show_settings(self, params: SamplingParams) -> None:
        """An import's settings, into the bound fields (and so into the widgets)."""
        self.temperature, self.top_k, self.top_p = params.temperature, params.top_k, params.top_p
        self.seed, self.greedy = params.seed, params.greedy


def _number(value: float | str | None, default: float) -> float:
    """A widget's number, or `default` where it is blank, inf or nan."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else default
