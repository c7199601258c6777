"""What-if replay from the kept logits (`engine/what_if.py` makes the pass): which rows the top logits of each
position decide exactly under given settings, and their probabilities."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from . import metrics
from ..core.types import SamplingParams

MARGIN = 1e-5  # a cut this close to its line is left to `metrics.samplers` (its own sums decide it there)
EXACT = 1e-6  # relative width of the normaliser's bounds accepted for a temperature with no cut


@dataclass
class Replay:
    """One re-scoring pass over `ids`: row r is the prediction of ids[r + 1]."""

    ids: list[int]
    values: torch.Tensor  # [R, KEPT + 1] float32 raw logits, largest first, ties by id; -inf past the vocabulary
    token_ids: torch.Tensor  # [R, KEPT + 1] int64; -1 past the vocabulary
    rest: torch.Tensor  # [R] float64: sum(exp(z - z_max)) over every token but the first KEPT
    target: torch.Tensor  # [R] float32: the logit of the token that is there
    hidden: torch.Tensor | None  # [R, d] final hidden states (the head gives the logits), or None
    vocab: int
    results: OrderedDict = field(default_factory=OrderedDict)  # SamplingParams -> list of probabilities

    @property
    def kept(self) -> int:
        return self.values.shape[1] - 1

    @property
    def rows(self) -> int:
        return self.values.shape[0]


def _rest_bounds(r: Replay, q: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds of sum(exp(q (z - z_max))) over the tokens not kept (x = exp(z - z_max) <= a, the (KEPT+1)-th)."""
    n = max(r.vocab - r.kept, 0)
    if n == 0:
        zero = torch.zeros(r.rows, dtype=torch.float64)
        return zero, zero
    v = r.values.double()
    log_a = v[:, r.kept] - v[:, 0]
    s1 = r.rest.clamp(min=0.0) * (1 + MARGIN)  # its float32 terms: a little room
    s0 = r.rest.clamp(min=0.0) * (1 - MARGIN)
    if q == 1.0:
        return s0, s1
    power = lambda s: torch.exp(q * torch.log(s.clamp(min=1e-300)))  # noqa: E731
    spread = torch.exp((q - 1) * log_a)  # a^(q-1)
    mean = n ** (1 - q)
    lo, hi = (mean * power(s0), spread * s1) if q > 1 else (spread * s0, mean * power(s1))
    largest = torch.exp(q * log_a)  # the (KEPT+1)-th itself, and n of them at most
    lo, hi = torch.maximum(lo, largest), torch.minimum(hi, n * largest)
    return lo, torch.maximum(hi, lo)


def from_kept(r: Replay, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(probability of each row's token under `params` [R] float64, rows the kept logits cannot decide [R])."""
    rows, kept = r.rows, r.kept
    targets = torch.tensor(r.ids[1:], dtype=torch.long)
    undecided = torch.zeros(rows, dtype=torch.bool)
    if params.repetition_penalty != 1.0 or (params.typical_p < 1.0 and not params.greedy) or not rows:
        return torch.zeros(rows, dtype=torch.float64), ~undecided
    v = r.values.double()
    ids = r.token_ids[:, :kept]
    if params.greedy:  # the first maximum (lowest id), unless the maximum reaches past the kept tokens
        return (r.token_ids[:, 0] == targets).double(), ~(v[:, 0] > v[:, kept])
    if params.plain:
        return torch.exp(r.target.double() - v[:, 0]) / (torch.exp(v[:, :kept] - v[:, :1]).sum(-1) + r.rest), undecided
    if 0 < params.top_k < r.vocab:  # every later cut sees kept tokens only: the samplers' own code on them
        if params.top_k > kept:
            return torch.zeros(rows, dtype=torch.float64), ~undecided
        scores = r.values / params.temperature if params.temperature != 1.0 else r.values
        undecided = ~(scores[:, params.top_k - 1] > scores[:, kept])  # a tie with the k-th could be past them
        probs = metrics.samplers(r.values[:, :kept], params).probs.double()
        return (probs * (ids == targets[:, None])).sum(-1), undecided
    return _without_top_k(r, params, targets)


def _without_top_k(r: Replay, params: SamplingParams, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, top-p and min-p over the whole vocabulary, from the kept logits and the rest's bounds."""
    kept, q = r.kept, 1.0 / params.temperature
    v = r.values.double()
    x = q * (v[:, :kept] - v[:, :1])  # log weight of each kept token against the most likely
    weight = torch.exp(x)
    alive = r.token_ids[:, :kept] >= 0
    decided = torch.ones(r.rows, dtype=torch.bool)
    lo, hi = _rest_bounds(r, q)
    total = weight.sum(-1)
    whole = True  # the tokens past the kept ones are still in
    if params.top_p < 1.0:
        before = torch.cumsum(weight, -1) - weight  # mass before each token, most likely first
        keep = before < (params.top_p * (total + lo) * (1 - MARGIN)).unsqueeze(-1)
        drop = before >= (params.top_p * (total + hi) * (1 + MARGIN)).unsqueeze(-1)
        decided &= (keep | drop | ~alive).all(-1)
        alive &= keep
        # every token after the kept ones, kept logit or not, has at least their mass before it: surely dropped
        decided &= (weight * alive).sum(-1) >= params.top_p * (total + hi) * (1 + MARGIN)
        last = (alive.sum(-1) - 1).clamp(min=0)
        decided &= v.gather(-1, last.unsqueeze(-1))[:, 0] > v[:, kept]  # no other token ranks between
        whole = False
    if params.min_p > 0.0:  # p >= min_p * p_max  <=>  x >= log(min_p): the normaliser cancels
        line = math.log(params.min_p)
        decided &= ~(((x - line).abs() <= MARGIN) & alive).any(-1)
        if whole:
            decided &= q * (v[:, kept] - v[:, 0]) < line - MARGIN
        alive &= x >= line
        whole = False
    target = torch.exp(q * (r.target.double() - v[:, 0]))
    if whole:  # a temperature alone: the whole vocabulary's normaliser
        decided &= (hi - lo) <= EXACT * (total + lo)
        return target / (total + (lo + hi) / 2), ~decided
    hit = (r.token_ids[:, :kept] == targets[:, None]) & alive
    return (weight * hit).sum(-1) / (weight * alive).sum(-1), ~decided
