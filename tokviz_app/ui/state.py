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
from ..core.types import MAX_TOP_N, Branch, SamplingParams, SessionSnapshot, TokenStep
from ..inputs import MAX_TEMPERATURE, parse_seed
from ..service import SessionHandle


@binding.bindable_dataclass(bindable_fields=["prompt", "max_tokens", "temperature", "top_k", "top_p", "seed",
                                             "greedy", "continue_after_pick", "chat", "system_message",
                                             "user_message", "min_p", "typical_p", "repetition_penalty", "top_n",
                                             "what_if_temperature", "what_if_top_k", "what_if_top_p",
                                             "what_if_min_p"])
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
    min_p: float | str | None = 0.0
    typical_p: float | str | None = 1.0
    repetition_penalty: float | str | None = 1.0
    top_n: int = 10  # alternatives listed per token: 10 or MAX_TOP_N
    # the What if panel's settings (ui/what_if.py): the text on screen re-coloured under them, nothing generated
    what_if_temperature: float | str | None = 1.0
    what_if_top_k: float | str | None = 0
    what_if_top_p: float | str | None = 1.0
    what_if_min_p: float | str | None = 0.0
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
        try:
            seed = parse_seed(self.seed)[0]
        except ValueError:
            seed = None
        return clamped(self.temperature, self.top_k, self.top_p, self.min_p, seed=seed, greedy=bool(self.greedy),
                       typical_p=self.typical_p, repetition_penalty=self.repetition_penalty, top_n=self.top_n)

    def what_if_params(self) -> SamplingParams:
        """The What if panel's settings (temperature 0: greedy), clamped as the sampling settings are."""
        return clamped(self.what_if_temperature, self.what_if_top_k, self.what_if_top_p, self.what_if_min_p)

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
        self.min_p, self.typical_p, self.repetition_penalty = params.min_p, params.typical_p, params.repetition_penalty
        self.top_n = params.top_n if params.top_n == MAX_TOP_N else 10


def clamped(temperature, top_k, top_p, min_p, *, seed: int | None = None, greedy: bool = False, typical_p=1.0,
            repetition_penalty=1.0, top_n=10) -> SamplingParams:
    """Widget values as SamplingParams, clamped as inputs.sampling_notes says (temperature 0 or below: greedy)."""
    t, typical, penalty = _number(temperature, 1.0), _number(typical_p, 1.0), _number(repetition_penalty, 1.0)
    return SamplingParams(
        temperature=min(MAX_TEMPERATURE, t) if t > 0 else 1.0,
        top_k=max(0, int(_number(top_k, 0))),
        top_p=min(1.0, max(1e-6, _number(top_p, 1.0) or 1.0)),
        seed=seed,
        greedy=greedy or t <= 0,
        min_p=min(1.0, max(0.0, _number(min_p, 0.0))),
        typical_p=min(1.0, typical) if typical > 0 else 1.0,
        repetition_penalty=penalty if penalty > 0 else 1.0,
        top_n=MAX_TOP_N if top_n == MAX_TOP_N else 10,
    )


def _number(value: float | str | None, default: float) -> float:
    """A widget's number, or `default` where it is blank, inf or nan."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else default
