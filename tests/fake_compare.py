"""The fake's `Model.score_ids` (mixed into `tests.fake_backend.FakeModel`): its own logits, exactly.

Each position's distribution is the one its sessions draw from (the fake's logits depend on the last two ids,
the position and the model's salt), so a fake compared with itself gives Δ = 0 and KL = 0, and two fakes
(different salts) a KL computed over the whole vocabulary. A reference that is no fake goes through the
contract's default (top lists). Plain Python, like the fake.
"""

from __future__ import annotations

import math

from tokviz_app.core.compare import LN2, TokenScore, check_scored
from tokviz_app.core.contract import Model, ScoreReference, StopCheck
from tokviz_app.core.errors import CancelledWork, PromptTooLongError
from tokviz_app.core.types import Alternative


class FakeScoring:
    """Needs the FakeModel's `salt`, `context_length`, `label` and `token_text`."""

    def distribution(self, ids: list[int], k: int) -> list[float]:
        """The probabilities of the token at position k after ids[:k] (as a session computes them)."""
        from tests.fake_backend import _logits, _softmax

        return _softmax(_logits(tuple(ids[max(0, k - 2):k]), k, self.salt, 0.0))

    def score_ids(self, ids: list[int], start: int = 1, *, top_n: int = 5, reference: ScoreReference | None = None,
                  should_stop: StopCheck | None = None) -> list[TokenScore]:
        check_scored(ids, start, reference)
        if len(ids) > self.context_length:
            raise PromptTooLongError(f"The text is {len(ids)} tokens long for {self.label}, which reads at most "
                                     f"{self.context_length} tokens.")
        if reference is not None and not isinstance(reference.model, FakeScoring):
            return Model.score_ids(self, ids, start, top_n=top_n, reference=reference, should_stop=should_stop)
        out = []
        for k in range(start, len(ids)):
            if should_stop is not None and should_stop():
                raise CancelledWork("The work was cancelled.")
            probs = self.distribution(ids, k)
            order = sorted(range(len(probs)), key=lambda i: -probs[i])
            kl = None
            if reference is not None:
                p = reference.model.distribution(reference.ids, reference.start + k - start)
                kl = max(0.0, math.fsum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, probs) if pi > 0) / LN2)
            top = tuple(Alternative(i, self.token_text(i)[0], probs[i], None) for i in order[:top_n])
            out.append(TokenScore(ids[k], math.log(probs[ids[k]]), order.index(ids[k]) + 1, top, kl))
        return out
