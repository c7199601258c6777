"""The fake's logit lens (mixed into `tests.fake_backend.FakeSession`): honest, synthetic layers.

Layer k of LAYERS mixes the position's own logits with noise of its own: (k / LAYERS) · logits +
(1 - k / LAYERS) · NOISE · gauss, so the last layer is exactly the token's distribution and the top-1 settles
at different depths for different tokens (the heatmap shows every band). Plain Python, like the fake.
"""

from __future__ import annotations

import math
import random
import zlib

from tokviz_app.core.errors import PositionError
from tokviz_app.core.types import Alternative, LayerRow

LAYERS = 4  # blocks: the lens has LAYERS + 1 rows, 0 = the embeddings
NOISE = 3.0
TOP = 5


def layer_logits(logits: list[float], index: int, k: int, salt: int) -> list[float]:
    if k == LAYERS:
        return list(logits)
    rng = random.Random(zlib.crc32(repr((salt, index, k)).encode()))
    share = k / LAYERS
    return [share * v + (1 - share) * NOISE * rng.gauss(0.0, 1.0) for v in logits]


def lens_row(logits: list[float], k: int, target: int, text) -> LayerRow:
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    probs = [e / total for e in exps]
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    entropy = -sum(p * math.log2(p) for p in probs if p > 0)
    return LayerRow(k, tuple(Alternative(i, text(i), probs[i], None) for i in order[:TOP]),
                    1 + sum(v > logits[target] for v in logits), probs[target], entropy)


class FakeLayers:
    """`layer_lens` / `decided_layers` over the fake session's own logits (`_logits_at`)."""

    def layer_lens(self, position: int, *, prompt: bool = False) -> list[LayerRow]:
        with self._lock:
            self._check_open()
            index = self._lens_index(position, prompt)
            logits, target = self._logits_at(index), self._ids[index]
            text = lambda i: self.model.token_text(i)[0]  # noqa: E731
            return [lens_row(layer_logits(logits, index, k, self.model.salt), k, target, text)
                    for k in range(LAYERS + 1)]

    def decided_layers(self, *, prompt: bool = False) -> list[int | None]:
        with self._lock:
            self._check_open()
            indices = range(1, self._n_prompt) if prompt else range(self._n_prompt, len(self._ids))
            decided = [self._decided(i) for i in indices]
            return [None, *decided] if prompt else decided

    def _decided(self, index: int) -> int | None:
        logits, target, layer = self._logits_at(index), self._ids[index], None
        for k in range(LAYERS, -1, -1):  # from the output down, while the token stays the top-1
            values = layer_logits(logits, index, k, self.model.salt)
            if values[target] < max(values):
                break
            layer = k
        return layer

    def _lens_index(self, position: int, prompt: bool) -> int:
        if prompt:
            if not 1 <= position < self._n_prompt:
                raise PositionError(f"There is no prompt token with a prediction at position {position}.")
            return position
        if not 0 <= position < len(self.tokens):
            raise PositionError(f"There is no generated token at position {position}.")
        return self._n_prompt + position
