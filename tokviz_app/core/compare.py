"""One text under two models, or under one model after two contexts: the data and the pure maths.

`TokenScore` is what `Model.score_ids` hands out; `Comparison` is what the page shows, exports and imports.
Side A is the text on screen with its own numbers (its `TokenStep`s); side B is the other model, or the same
model after context B. With the same tokens on both sides every token gets B's numbers (`scores`); with two
tokenizers the text is cut into aligned spans (`scoring/align.py`) and each span gets both summed log-probs.
No torch, no NiceGUI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .errors import TokvizError
from .types import MAX_TOP_N, Alternative, SamplingParams

if TYPE_CHECKING:
    from .contract import Model, ScoreReference, StopCheck

MODEL, CONTEXT = "model", "context"  # another model on the same text; the same model after another context
MODES = (MODEL, CONTEXT)
COMPARE_TOP = 5  # B's most likely tokens kept per position (the details panel's top-5)
KL_MASS_SLACK = 1e-6  # KL from top lists: the reference's list must hold all but this much of its mass
LN2 = math.log(2.0)


@dataclass(frozen=True)
class TokenScore:
    """One token of a given text as a model scores it (`Model.score_ids`): log-prob and rank at temperature 1,
    the most likely tokens there, and where asked the KL divergence from a reference distribution."""

    token_id: int
    logprob: float | None  # None: no prediction (the server did not say)
    rank: int | None
    top: tuple[Alternative, ...] = ()  # the most likely tokens (`sampled_prob` None: nothing is sampled here)
    kl: float | None = None  # KL(reference ‖ this model) in bits; None where either distribution is not known


@dataclass(frozen=True)
class CompareSpan:
    """Characters [start, end) of the text where both tokenizations have a boundary at each end: A's tokens
    [first, stop) (prompt and shown tokens counted together) and B's tokens, with their summed log-probs."""

    start: int
    end: int
    first: int
    stop: int
    ids_b: tuple[int, ...]
    pieces_b: tuple[str, ...]  # B's tokens' characters (their boundaries are shown on hover)
    logprob_a: float | None  # sum of the known log-probs (None: none known)
    logprob_b: float | None
    complete: bool  # every token of the span has a prediction on both sides

    @property
    def delta(self) -> float | None:
        """log p_B − log p_A of the span (nats), where both sums are complete."""
        if not self.complete or self.logprob_a is None or self.logprob_b is None:
            return None
        return self.logprob_b - self.logprob_a


@dataclass
class Comparison:
    """Side B's numbers for the text `token_ids` (A's ids: prompt, then the shown tokens)."""

    model: dict  # B's model: {"key", "label", "source"} (in context mode, the text's own model)
    mode: str  # MODEL or CONTEXT
    context_b: str | None  # CONTEXT: the text B's continuation is scored after
    token_ids: list[int]
    n_prompt: int  # how many of token_ids are the prompt
    scores: list[TokenScore | None]  # one per token (same tokens on both sides); None: not compared there
    spans: list[CompareSpan] | None = None  # two tokenizers: the aligned spans (then `scores` is all None)

    def kept_for(self, ids: Sequence[int]) -> Comparison | None:
        """The part that still holds for the text `ids` (after a pick, a branch switch, more tokens): with the
        same tokens, each score depends only on the tokens before it, so the common prefix stays; spans stay
        only for the very same text (another tokenizer may cut a changed text differently anywhere near it)."""
        ids = list(ids)
        if ids == self.token_ids:
            return self
        if self.spans is not None or ids[: self.n_prompt] != self.token_ids[: self.n_prompt]:
            return None
        same = next((i for i, (x, y) in enumerate(zip(ids, self.token_ids)) if x != y),
                    min(len(ids), len(self.token_ids)))
        if same <= self.n_prompt:
            return None
        return replace(self, token_ids=self.token_ids[:same], scores=self.scores[:same])

    def covers(self, index: int) -> bool:
        """Token `index` (prompt and shown tokens counted together) has B's numbers."""
        if self.spans is not None:
            return index < len(self.token_ids)
        return index < len(self.scores) and self.scores[index] is not None


def kl_from_lists(reference: Sequence[Alternative], other: Sequence[Alternative]) -> float | None:
    """KL(reference ‖ other) in bits from two top lists, where they allow it: the reference's list holds all but
    KL_MASS_SLACK of its mass and the other list names every token of it. Else None (a server's numbers)."""
    p = {a.token_id: a.prob for a in reference if a.prob > 0}
    if not p or math.fsum(p.values()) < 1 - KL_MASS_SLACK:
        return None
    q = {a.token_id: a.prob for a in other}
    if any(not q.get(token, 0.0) > 0 for token in p):
        return None
    kl = math.fsum(pt * (math.log(pt) - math.log(q[token])) for token, pt in p.items())
    return max(0.0, kl / LN2)


def span_of(spans: Sequence[CompareSpan], index: int) -> CompareSpan | None:
    """The span that holds token `index` of A's text."""
    lo, hi = 0, len(spans)
    while lo < hi:  # spans are in text order and cover A's tokens in order
        mid = (lo + hi) // 2
        if spans[mid].stop <= index:
            lo = mid + 1
        else:
            hi = mid
    return spans[lo] if lo < len(spans) and spans[lo].first <= index < spans[lo].stop else None


def check_scored(ids: Sequence[int], start: int, reference: ScoreReference | None) -> None:
    """`Model.score_ids`' arguments: a prediction for every scored token, a reference aligned with them."""
    if not 1 <= start <= len(ids):
        raise TokvizError(f"Scoring needs at least one token before the first scored one (start {start} of "
                          f"{len(ids)} tokens).")
    if reference is not None and len(reference.ids) - reference.start != len(ids) - start:
        raise TokvizError("The reference text does not have the same number of scored tokens.")


def score_by_session(model: Model, ids: list[int], start: int, *, top_n: int, reference: ScoreReference | None,
                     should_stop: StopCheck | None = None) -> list[TokenScore]:
    """`Model.score_ids` through the contract: one session whose prompt is `ids` (a server scores it with one
    echo request), its prompt tokens' numbers; the KL from the two top lists where they allow it."""
    if not model.capabilities.text_scoring:
        raise TokvizError(f"{model.label} cannot score a given text: its server does not return the "
                          "log-probabilities of a prompt.")
    check_scored(ids, start, reference)
    listed = MAX_TOP_N if reference is not None else max(1, min(top_n, MAX_TOP_N))
    session = model.start_from_ids(list(ids), SamplingParams(top_n=listed), should_stop=should_stop)
    try:
        steps = list(session.prompt_tokens[start:])
    finally:
        session.close()
    theirs = None if reference is None else reference.model.score_ids(
        reference.ids, reference.start, top_n=MAX_TOP_N, should_stop=should_stop)
    return [TokenScore(s.token_id, s.logprob, s.rank, tuple(s.alternatives[:top_n]),
                       None if theirs is None else kl_from_lists(theirs[k].top, s.alternatives))
            for k, s in enumerate(steps)]
