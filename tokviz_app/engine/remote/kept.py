"""What the samplers kept, read from a server's top list: decided only where the listed tokens decide it.

The local engine's order is transformers' (repetition penalty → temperature → top-k → top-p → min-p →
typical); llama.cpp applies temperature last. So a kept set is computed only where the order cannot
matter and the list reaches far enough: greedy, top-k within the listed tokens, a nucleus or a min-p cut
reached within them at temperature 1. The repetition penalty needs the logits' signs and typical
sampling the whole distribution's entropy: neither can be read from logprobs, so both are unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from ...core.types import SamplingParams

if TYPE_CHECKING:
    from .logprobs import _Known


@dataclass(frozen=True)
class Kept:
    """The sampling distribution as far as the server's list tells it."""

    probs: dict[int, float]  # token id -> probability after the samplers
    closed: bool  # every token not in `probs` has probability 0 (else: unknown)
    dropped: dict[int, str]  # listed tokens the samplers removed -> the sampler that removed them
    count: int | None  # tokens kept
    mass: float | None  # their raw probability mass

    def prob(self, token_id: int) -> float | None:
        return self.probs.get(token_id, 0.0 if self.closed else None)


def is_plain(params: SamplingParams) -> bool:
    return params.plain


def kept(known: Sequence[_Known], ranked: int, params: SamplingParams, vocab_size: int | None = None) -> Kept | None:
    """`known`: the listed tokens, most likely first; the first `ranked` are the true top tokens with nothing
    missing between them. None where the list does not decide the kept set."""
    if is_plain(params):  # nothing is cut: the raw probabilities, known for the listed tokens
        return Kept({k.id: math.exp(k.logprob) for k in known}, False, {}, vocab_size, 1.0)
    head = list(known[:ranked])
    if not head or params.repetition_penalty != 1.0:
        return None
    if params.greedy:
        best = head[0]
        return Kept({best.id: 1.0}, True, {k.id: "greedy" for k in known if k.id != best.id}, 1,
                    math.exp(best.logprob))
    if params.typical_p < 1.0 or (params.temperature != 1.0 and (params.top_p < 1.0 or params.min_p > 0.0)):
        return None
    pool, closer, dropped = head, None, {}  # closer: the first sampler that cut the list short
    if 0 < params.top_k <= len(head):
        pool, closer = head[: params.top_k], "top-k"
    elif params.temperature != 1.0:
        return None  # the pool's total mass is unknown
    weights = [math.exp((k.logprob - pool[0].logprob) / params.temperature) for k in pool]
    probs = [w / sum(weights) for w in weights] if closer else [math.exp(k.logprob) for k in pool]

    def cut(n: int, name: str) -> None:
        nonlocal pool, probs, closer
        dropped.update((k.id, name) for k in pool[n:])
        pool, probs, closer = pool[:n], probs[:n], closer or name

    if params.top_p < 1.0:
        mass, n = 0.0, 0
        while n < len(probs) and mass < params.top_p:  # the smallest prefix reaching top_p
            mass, n = mass + probs[n], n + 1
        if mass >= params.top_p:
            cut(n, "top-p")
    if params.min_p > 0.0:
        n = sum(1 for p in probs if p >= params.min_p * probs[0])  # a prefix: probs are sorted
        if n < len(pool):
            cut(n, "min-p")
    if closer is None:
        return None  # every listed token survived: the kept set may reach past the list
    kept_ids = {k.id for k in pool}
    dropped.update((k.id, closer) for k in known if k.id not in kept_ids and k.id not in dropped)
    total = sum(probs)
    return Kept({k.id: p / total for k, p in zip(pool, probs)}, True, dropped, len(pool),
                sum(math.exp(k.logprob) for k in pool))
