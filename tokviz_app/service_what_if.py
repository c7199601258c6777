"""The what-if replay call of `ModelService` (kept apart so service.py stays small): session work on the service's
inference pool, like every other session call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.types import SamplingParams

if TYPE_CHECKING:
    from .service import SessionHandle


class WhatIfCalls:
    """Mixed into `ModelService` (it has `_infer` and `_reconciled`)."""

    async def what_if(self, handle: SessionHandle, params: SamplingParams,
                      expected: int) -> tuple[list[float | None], list[float | None]]:
        """(prompt tokens, generated tokens): the probability each shown token would have had under `params`
        (the first call for a text runs one re-scoring pass; later ones mostly reuse it)."""

        def work() -> tuple[list[float | None], list[float | None]]:
            with handle.lock:
                session = self._reconciled(handle, expected)
                return session.what_if(params, prompt=True), session.what_if(params)

        return await self._infer(work)
