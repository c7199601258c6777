"""Top-p (nucleus) without sorting the vocabulary.

The nucleus is the shortest run of most likely tokens (ties: lower id first) whose mass reaches top_p; the token
that crosses top_p stays. Sorting 50k probabilities costs 4-9 ms a row (2-core AMD EPYC, AVX-512), more than the
rest of a step's statistics together. The same set is found by cheaper means, each used only where it decides a
row with room to spare, so float rounding in a different summation order cannot change the answer:

1. among the FIRST most likely tokens (`topk`, under 1 ms): a trained model's nucleus is usually there;
2. else the dropped tail among the LAST least likely tokens (~2 ms): a flat distribution (a random-weight
   model's) keeps tens of thousands of tokens and at top-p 0.9 drops a few thousand;
3. else (a tie, or a sum within MARGIN of top_p) the sort, as transformers' TopPLogitsWarper: ascending, drop
   while the cumulative mass stays within 1 - top_p; where its sort leaves a tie to chance, the lower id is kept.

All sums are float64. The warper sums in float32, whose rounding over 50k tokens (~1e-5 of the mass) would decide
which token crosses the line in a flat distribution; in float64 the three ways agree to the last token. Where the
warper's rounding picks the other side of the line, the two distributions differ by that one token (a flat
distribution's crossing token holds ~2e-5 of the mass).
"""

from __future__ import annotations

import torch

FIRST = 1024
MARGIN = 1e-9  # room between a deciding float64 sum and top_p: 50k terms round by < 1e-11
LAST = 8192


def nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """[R, V] bool: the tokens top-p keeps in each row of `scores` (logits after temperature and top-k)."""
    probs = scores.double().softmax(dim=-1)
    keep = torch.zeros_like(probs, dtype=torch.bool)
    todo = torch.arange(probs.shape[0], device=probs.device)
    for find in (_among_first, _among_last):
        if len(todo):
            todo = find(probs, top_p, todo, keep)
    if len(todo):
        keep[todo] = _sorted(scores[todo], top_p)
    return keep


def _among_first(probs: torch.Tensor, top_p: float, todo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    k = min(FIRST, probs.shape[-1] - 1)
    if k < 1:
        return todo
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
    return todo[~done]


def _among_last(probs: torch.Tensor, top_p: float, todo: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The dropped tail among the LAST least likely tokens (ascending, ties: the higher id is less likely)."""
    vocab = probs.shape[-1]
    k, tail = min(LAST, vocab - 2), 1 - top_p
    if k < 1:
        return todo
    values, order = (-probs[todo]).flip(-1).topk(k + 1, dim=-1)  # flipped: among equals the higher id comes first
    values, order = -values, (vocab - 1) - order
    values, order, beyond = values[:, :k], order[:, :k], values[:, k]
    below = values.cumsum(-1)  # the mass of each token and all less likely ones
    dropped = below <= tail
    count = dropped.sum(-1)
    last = values.gather(-1, (count - 1).clamp(min=0).unsqueeze(-1))[:, 0]
    following = torch.where(count < k, values.gather(-1, count.clamp(max=k - 1).unsqueeze(-1))[:, 0], beyond)
    done = ((below[:, -1] >= tail * (1 + MARGIN)) & ~((below - tail).abs() <= MARGIN).any(-1)
            & ((count == 0) | (last < following)))
    rows = todo[done]
    keep[rows] = ~torch.zeros_like(keep[rows]).scatter(-1, order[done], dropped[done])
    return todo[~done]


def _sorted(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """transformers' own way: ascending sort, drop while the cumulative mass stays within 1 - top_p."""
    vocab = scores.shape[-1]
    # ascending; the flip makes ties list the higher id first, so the lower id is kept
    sorted_scores, order = scores.flip(-1).sort(dim=-1, stable=True)
    order = (vocab - 1) - order
    remove = sorted_scores.double().softmax(dim=-1).cumsum(dim=-1) <= 1 - top_p
    remove[..., -1:] = False  # the most likely token always stays
    return ~remove.scatter(-1, order, remove)
