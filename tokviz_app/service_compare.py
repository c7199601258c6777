"""The comparison call of the page (kept apart so service.py stays small): session work on the service's
inference pool, like every other call that runs a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .core.compare import Comparison
from .core.contract import Model, StopCheck
from .core.types import TokenStep
from .scoring.compare import compare

if TYPE_CHECKING:
    from .service import ModelService


async def compare_text(service: ModelService, a: Model | None, prompt: Sequence[TokenStep],
                       shown: Sequence[TokenStep], *, mode: str, b: Model | None = None, context_b: str = "",
                       should_stop: StopCheck | None = None) -> Comparison:
    """The text on screen (A's prompt and shown tokens, as the tab holds them) scored by model B or after
    context B (`scoring/compare.py`). `a` is None for a read-only import whose model is not loaded here.
    `should_stop` is asked between forward passes: a cancelled comparison stops there."""
    prompt, shown = list(prompt), list(shown)  # the tab's lists may change while the worker reads them

    def work() -> Comparison:
        return compare(a, prompt, shown, mode=mode, b=b, context_b=context_b, should_stop=should_stop)

    return await service._infer(work)  # pylint: disable=protected-access  # the service's own pool
