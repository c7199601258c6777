"""Per-tab state: one instance per page visit, created inside the page function."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from .core.types import SamplingParams, TokenStep


@dataclass(eq=False)
class TabState:
    # model
    model_key: str | None = None  # selected in the dropdown
    model: Any = None  # the LoadedModel this tab uses (shared with other tabs)
    loading: bool = False
    load_fraction: float | None = None
    load_message: str = ""
    error: str = ""
    # prompt and settings
    prompt: str = ""
    max_tokens: int = 50
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    greedy: bool = False
    # generation
    handle: Any = None  # service.SessionHandle
    prompt_tokens: list[TokenStep] = field(default_factory=list)
    tokens: list[TokenStep] = field(default_factory=list)  # generated tokens shown, position = index
    selected: TokenStep | None = None
    generating: bool = False
    busy: bool = False  # any session call in flight (generation, choose)
    task: asyncio.Task | None = None  # the running generation or choice
    epoch: int = 0  # bumped by every new operation and every cancel: stale tasks keep their hands off
    finish_reason: str = ""
    closed: bool = False  # the tab is gone: never touch its UI again

    def sampling_params(self) -> SamplingParams:
        """The settings as entered; temperature 0 means greedy."""
        temperature = float(self.temperature or 0.0)
        return SamplingParams(
            temperature=temperature if temperature > 0 else 1.0,
            top_k=max(0, int(self.top_k or 0)),
            top_p=min(1.0, max(1e-6, float(self.top_p or 1.0))),
            seed=None if self.seed in (None, "") else int(self.seed),
            greedy=bool(self.greedy) or temperature <= 0,
        )
