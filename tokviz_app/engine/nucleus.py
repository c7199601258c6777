"""Top-p (nucleus) without sorting the vocabulary where it can be.

The nucleus is the shortest run of most likely tokens (ties: lower id first) whose mass reaches top_p; the token
that crosses top_p stays. Sorting 50k probabilities costs 2-9 ms a row (2-core AMD EPYC, AVX-512), more than the
rest of a step's statistics together, while a trained model's nucleus usually lies among its FIRST most likely
tokens (`topk`, well under 1 ms). There it is found from those, where that decides the row with room to spare
(no sum within MARGIN of top_p, no tie at the cut), so float rounding in another summation order cannot change
the answer. Every other row (a flat distribution, a random-weight model's, keeps tens of thousands of tokens) is
sorted as transformers' TopPLogitsWarper does it: ascending, drop while the cumulative mass stays within
1 - top_p; where its sort leaves a tie to chance, the lower id is kept.

All sums are float64. The warper sums in float32, whose rounding over 50k tokens (~1e-5 of the mass) decides
which token crosses the line in a flat distribution; in float64 the two ways agree to the last token. Where the
warper's rounding picks the other side of the line, the two distributions differ by that one token (a flat
distribution's crossing token holds ~2e-5 of the mass).
"""

from __future__ import annotations

import torch

FIRST = 1024
MARGIN = 1e-9  # room between a deciding float64 sum and top_p: 50k terms round by < 1e-11


def nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """[R, V] bool: the tokens top-p keeps in each row of `scores` (logits after temperature and top-k)."""
    probs = scores.double().softmax(dim=-1)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    todo = _among_first(probs, top_p, torch.arange(probs.shape[0], device=probs.device), keep)
    if len(todo):
        keep[todo] = _sorted(scores[todo], top_p)
    return keep


def _among_first(probs: torch.Tensor, top_p: float, todo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    k = min(FIRST, probs.shape[-1] - 1)
    if k < 1:
        return todo
    fits = probs[todo].amax(-1) * k >= top_p  # else k tokens hold less than top_p: the nucleus is longer
    todo, longer = todo[fits], todo[~fits]
    if not len(todo):
        return longer
    values, order = probs[todo].topk(k + 1, dim=-1)  # one past the last candidate: a tie at the cut shows
    values, order, beyond = values[:, :k], order[:, :k], values[:, k]
    before = values.cumsum(-1) - values  # the mass before each token, most likely first
    kept = before < top_p
    count = kept.sum(-1)
    last = values.gather(-1, (count - 1).unsqueeze(-1))[:, 0]
    following = torch.where(count < k, values.gather(-1, count.clamp(max=k - 1).unsqueeze(-1))[:, 0], beyond)
    done = ((values.sum(-1) >= top_p * (1 + MARGIN)) & ~((before - top_p).abs() <= MARGIN * top_p).any(-1)
            & (last > following))
    rows = todo[done]
    keep[rows] = keep[rows].scatter(-1, order[done], kept[done])
    return torch.cat([todo[~done], longer])


def _sorted(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """transformers' own way: ascending sort, drop while the cumulative mass stays within 1 - top_p."""
    vocab = scores.shape[-1]
    # ascending; the flip makes ties list the higher id first, so the lower id is kept
    sorted_scores, order = scores.flip(-1).sort(dim=-1, stable=True)
    order = (vocab - 1) - order
    remove = sorted_scores.double().softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    remove[..., -1:] = False  # the most likely token always stays
    return ~remove.scatter(-1, order, remove)
