"""The layer lens calls of `ModelService` (kept apart so service.py stays small): session work on the
service's inference pool, like every other session call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.types import LayerRow, TokenStep

if TYPE_CHECKING:
    from .service import SessionHandle


class LayerCalls:
    """Mixed into `ModelService` (it has `_infer`, `_open` and `_reconciled`)."""

    async def layer_lens(self, handle: SessionHandle, step: TokenStep) -> list[LayerRow] | None:
        """The logit lens at the shown token `step`, one row per layer (the first call for a text runs one forward
        pass with hidden states); None where the session no longer has that token there. It only reads: it cuts
        nothing back, so it may run while the tab does something else (the handle's lock orders the calls)."""

        def work() -> list[LayerRow] | None:
            with handle.lock:
                session = self._open(handle)
                shown = session.prompt_tokens if step.is_prompt else session.tokens
                if step.position >= len(shown) or shown[step.position].token_id != step.token_id:
                    return None
                return session.layer_lens(step.position, prompt=step.is_prompt)

        return await self._infer(work)

    async def decided_layers(self, handle: SessionHandle, expected: int) -> tuple[list[int | None], list[int | None]]:
        """(prompt tokens, generated tokens): the layer from which each was the top-1 through the last layer."""

        def work() -> tuple[list[int | None], list[int | None]]:
            with handle.lock:
                session = self._reconciled(handle, expected)
                return session.decided_layers(prompt=True), session.decided_layers()

        return await self._infer(work)
