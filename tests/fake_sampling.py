"""The samplers in plain Python for the fake backend: the engine's definitions and order
(`tokviz_app/engine/metrics.py`: repetition penalty → temperature → top-k → top-p → min-p → typical),
so UI tests on the fake see numbers that behave like the real ones. Ties keep the lowest id, as there.
`tests/test_samplers.py` checks this against the engine on the fake's own logits."""

from __future__ import annotations

import math
from collections.abc import Sequence

from tokviz_app.core.types import SamplingParams


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) if v > -math.inf else 0.0 for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def sample(logits: Sequence[float], params: SamplingParams,
           context: Sequence[int] = ()) -> tuple[list[float], list[str | None]]:
    """(probability after the samplers, the sampler that dropped the token or None) for every id;
    `context`: the ids before this position (the repetition penalty's)."""
    scores = list(logits)
    n = len(scores)
    if params.repetition_penalty != 1.0:
        r = params.repetition_penalty
        for i in set(context):
            if 0 <= i < n:
                scores[i] = scores[i] * r if scores[i] < 0 else scores[i] / r
    if params.greedy:
        best = max(range(n), key=scores.__getitem__)  # the first maximum: the lowest id
        return [float(i == best) for i in range(n)], [None if i == best else "greedy" for i in range(n)]
    scores = [s / params.temperature for s in scores]
    alive = sorted(range(n), key=lambda i: (-scores[i], i))  # most likely first; every cut keeps a prefix or a set
    dropped: list[str | None] = [None] * n

    def keep(kept: list[int], name: str) -> list[int]:
        for i in set(alive) - set(kept):
            dropped[i] = name
        return kept

    if 0 < params.top_k < n:
        kth = scores[alive[params.top_k - 1]]
        alive = keep([i for i in alive if scores[i] >= kth], "top-k")
    if params.top_p < 1.0:
        probs, before, kept = _softmax([scores[i] for i in alive]), 0.0, []
        for i, p in zip(alive, probs):  # the smallest prefix whose mass reaches top_p
            if kept and before >= params.top_p:
                break
            kept.append(i)
            before += p
        alive = keep(kept, "top-p")
    if params.min_p > 0.0:
        probs = _softmax([scores[i] for i in alive])
        alive = keep([i for i, p in zip(alive, probs) if p >= params.min_p * probs[0]], "min-p")
    if params.typical_p < 1.0:
        alive = keep(_typical(alive, _softmax([scores[i] for i in alive]), params.typical_p), "typical")
    kept_probs = dict(zip(alive, _softmax([scores[i] for i in alive])))
    return [kept_probs.get(i, 0.0) for i in range(n)], dropped


def _typical(alive: list[int], probs: list[float], mass: float) -> list[int]:
    """Tokens by |surprisal - entropy|, kept until their mass reaches `mass` (ties at the cut all stay)."""
    entropy = -sum(p * math.log(p) for p in probs if p > 0)
    shift = {i: abs(-math.log(p) - entropy) if p > 0 else math.inf for i, p in zip(alive, probs)}
    prob = dict(zip(alive, probs))
    order = sorted(alive, key=lambda i: (shift[i], i))
    total, last = 0.0, len(order) - 1
    for position, i in enumerate(order):
        total += prob[i]
        if total >= mass:
            last = position
            break
    return [i for i in order if shift[i] <= shift[order[last]]]


class FakeWhatIf:
    """`what_if` for `tests.fake_backend.FakeSession` (mixed in): each shown token's probability under other
    settings, from its own logits through `sample`, as the engine replays a text (nothing drawn, nothing kept)."""

    def what_if(self, params: SamplingParams, *, prompt: bool = False) -> list[float | None]:
        with self._lock:
            self._check_open()
            indices = range(1, self._n_prompt) if prompt else range(self._n_prompt, len(self._ids))
            probs = [sample(self._logits_at(i), params, self._ids[:i])[0][self._ids[i]] for i in indices]
            return [None, *probs] if prompt else probs
