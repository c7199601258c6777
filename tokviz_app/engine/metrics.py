"""Distribution maths on logits: probabilities, ranks, entropy, the samplers, draws.

Pure functions on float32 tensors so they can be checked against numpy and transformers.
All functions take logits of shape [V] or [T, V] unless they say otherwise.

The samplers apply in one fixed order, transformers' (`GenerationMixin._get_logits_processor`: the
repetition penalty is a logits processor, the rest are warpers applied after it):

    repetition penalty → temperature → top-k → top-p → min-p → typical

Penalty and temperature commute (dividing by a positive temperature keeps a logit's sign), so putting
the penalty first changes only float rounding. Each cut sees what the previous ones kept; a token is
"dropped by" the first cut that removes it. Every cut is written as transformers writes it (same
comparisons, same arithmetic) so `sampled_prob` agrees with its processors to float rounding; top-p
is found without a full sort and summed in float64 (`nucleus.py`).
Where transformers' sorts leave ties to the sort, ours keep the lowest token id.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from ..core.types import DROP_REASONS, SamplingParams
from .nucleus import nucleus

LN2 = math.log(2.0)
DROPPED_BY = (None, *DROP_REASONS)  # dropped codes: 0 = kept; a code names the sampler that removed the token
GREEDY, TOP_K, TOP_P, MIN_P, TYPICAL = 1, 2, 3, 4, 5


class Sampled(NamedTuple):
    """The distribution the sampler draws from, and why tokens have none of it."""

    probs: torch.Tensor  # [T, V] float32, rows sum to 1
    dropped: torch.Tensor | None  # [T, V] int8 codes into DROPPED_BY; None: nothing was cut (plain sampling)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """fp32 log-probabilities whose normaliser is summed in float64 (not on MPS, which has none): torch's fp32
    log-sum over 50k tokens in AVX2 lanes was off by 2e-5, which a near-uniform row's entropy multiplies by ~10.
    Only the sum is float64 (its terms are fp32 exps, each within 1e-7): no float64 copy of the logits, whose
    [tokens, vocabulary] size a long prompt makes hundreds of MB."""
    logits = logits.float()
    if logits.device.type == "mps":
        return torch.log_softmax(logits, dim=-1)
    peak = logits.amax(dim=-1, keepdim=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # rows of infinities or NaN stay so
    total = torch.exp(logits - peak).sum(dim=-1, keepdim=True, dtype=torch.float64)
    normaliser = peak.double() + total.log()
    high = normaliser.float()  # subtracted in two fp32 parts: within an ulp of a float64 subtraction rounded once
    return (logits - high) - (normaliser - high.double()).float()


def entropy_bits(logprobs: torch.Tensor, probs: torch.Tensor | None = None) -> torch.Tensor:
    """Shannon entropy in bits of each row; 0·log0 counts as 0."""
    probs = logprobs.exp() if probs is None else probs
    return -(probs * logprobs).nansum(-1) / LN2  # 0 * -inf is nan: nansum counts it as 0, in one pass


def ranks(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target token: 1 + number of strictly more likely tokens."""
    target = logits.gather(-1, token_ids.unsqueeze(-1))
    # int32 counts: a bool sum into int64 first copies the whole [T, V] mask to int64 (2x slower over a prompt)
    return (logits > target).sum(-1, dtype=torch.int32) + 1


def is_plain(params: SamplingParams) -> bool:
    """Sampling from the raw distribution: no temperature, no penalty, no cuts."""
    return params.plain


def is_plain_greedy(params: SamplingParams) -> bool:
    """Greedy decoding on the raw logits (no penalty): the argmax, whatever the other settings say."""
    return params.greedy and params.repetition_penalty == 1.0


def seen_before(context: Sequence[int], rows: int, vocab: int) -> torch.Tensor:
    """[rows, V] bool: row r marks the ids in `context[:len(context) - rows + 1 + r]`.

    `context` holds the ids before the last row's token, so each row sees exactly the ids before its own
    token (the prompt's rows in a prefill chunk, or the one row of a step). Built from each id's first
    position, in one comparison."""
    ids = torch.tensor(list(context), dtype=torch.long)
    first = torch.full((vocab,), len(ids) + 1, dtype=torch.long)
    keep = (ids >= 0) & (ids < vocab)  # ids past the logits' width cannot be drawn: nothing to penalise
    first.scatter_reduce_(0, ids[keep], torch.arange(len(ids), dtype=torch.long)[keep], reduce="amin")
    ends = torch.arange(len(context) - rows + 1, len(context) + 1, dtype=torch.long)
    return first.unsqueeze(0) < ends.unsqueeze(1)


def samplers(logits: torch.Tensor, params: SamplingParams, context: Sequence[int] = ()) -> Sampled:
    """The sampling distribution for logits [T, V] (see the module docstring for the order); `context`:
    the ids before the last row's token, for the repetition penalty (see `seen_before`)."""
    logits = logits.float()
    if is_plain(params):
        return Sampled(torch.softmax(logits, dim=-1), None)
    scores = logits
    if params.repetition_penalty != 1.0 and len(context):
        penalty = params.repetition_penalty
        seen = seen_before(context, logits.shape[0], logits.shape[-1]).to(logits.device)
        scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty), scores)
    if params.greedy:  # a point mass on the argmax (after the penalty, as transformers' greedy search)
        probs = torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)
        return Sampled(probs, (probs == 0).to(torch.int8) * GREEDY)
    if params.temperature != 1.0:
        scores = scores / params.temperature
    dropped = torch.zeros(scores.shape, dtype=torch.int8, device=scores.device)
    cuts = ((TOP_K, _top_k, 0 < params.top_k < scores.shape[-1]), (TOP_P, _top_p, params.top_p < 1.0),
            (MIN_P, _min_p, params.min_p > 0.0), (TYPICAL, _typical, params.typical_p < 1.0))
    for code, cut, active in cuts:
        if active:
            remove = cut(scores, params)
            dropped.masked_fill_(remove & (dropped == 0), code)
            scores = scores.masked_fill(remove, float("-inf"))
    return Sampled(torch.softmax(scores, dim=-1), dropped)


def sampling_probs(logits: torch.Tensor, params: SamplingParams, context: Sequence[int] = ()) -> torch.Tensor:
    """The distribution the sampler draws from (the shape of `logits`)."""
    rows = logits.reshape(-1, logits.shape[-1])
    return samplers(rows, params, context).probs.reshape(logits.shape)


def _top_k(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    return scores < scores.topk(params.top_k, dim=-1).values[..., -1:]


def _top_p(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Drop the least likely tokens while their mass stays within 1 - top_p (the token crossing top_p stays)."""
    return ~nucleus(scores, params.top_p)


def _min_p(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    probs = scores.softmax(dim=-1)
    return probs < params.min_p * probs.amax(dim=-1, keepdim=True)  # the most likely token always stays


def _typical(scores: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Keep the tokens whose surprisal is closest to the entropy, until their mass reaches typical_p."""
    normalized = torch.log_softmax(scores, dim=-1)
    p = normalized.exp()
    entropy = -(normalized * p).nansum(-1, keepdim=True)
    sorted_shift, order = (-normalized - entropy).abs().sort(dim=-1, stable=True)
    cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < params.typical_p).sum(dim=-1).clamp_(max=scores.shape[-1] - 1)
    remove = sorted_shift > sorted_shift.gather(-1, last.unsqueeze(-1))
    remove[..., :1] = False  # the most typical token always stays
    return remove.scatter(-1, order, remove)


def draw(probs: torch.Tensor, generator: torch.Generator) -> int:
    """One token from a 1-D distribution using the session's own generator.

    A cumsum + searchsorted is cheaper than torch.multinomial on a 50k vocabulary.
    """
    # float32: a float64 cumsum over 50k entries costs ~3 ms on CPU, float32 0.05 ms; the
    # rounding (~1e-7 per token) is far below anything the page shows.
    cdf = probs.float().cumsum(-1)
    u = torch.rand((), generator=generator, dtype=torch.float32) * cdf[-1]
    index = int(torch.searchsorted(cdf, u.reshape(1), right=True).item())
    index = min(index, probs.shape[-1] - 1)
    # Guard against landing on a zero-probability token through rounding at the edge.
    while probs[index] <= 0 and index > 0:
        index -= 1
    return index
