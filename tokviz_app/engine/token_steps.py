"""Per-token statistics from logits: probability, log-prob, rank, entropy, sampled probability, top-10."""

from __future__ import annotations

import math
from typing import Callable

import torch

from . import metrics
from ..core.types import Alternative, SamplingParams, TokenStep

TOP_N = 10


def token_steps(logits: torch.Tensor, token_ids: list[int], first_position: int, *, is_prompt: bool,
                params: SamplingParams, texts: Callable[[int], tuple[str, bool]],
                sampled: torch.Tensor | None = None) -> list[TokenStep]:
    """Vectorised statistics for rows of logits [T, V] and their chosen tokens (`texts`: id -> readable
    text and partial flag). `sampled`: the sampling distribution where the caller has it already."""
    logprobs = metrics.log_softmax(logits)
    probs = logprobs.exp()
    if sampled is None:
        sampled = probs if metrics.is_plain(params) else metrics.sampling_probs(logits, params)
    targets = torch.tensor(token_ids, dtype=torch.long, device=logits.device).unsqueeze(-1)
    chosen_logprob = logprobs.gather(-1, targets).squeeze(-1)
    chosen_sampled = sampled.gather(-1, targets).squeeze(-1)
    rank = metrics.ranks(logits, targets.squeeze(-1))
    entropy = metrics.entropy_bits(logprobs, probs)
    top_logprob, top_ids = logprobs.topk(min(TOP_N, logprobs.shape[-1]), dim=-1)
    top_sampled = sampled.gather(-1, top_ids)
    rows = zip(token_ids, chosen_logprob.tolist(), chosen_sampled.tolist(), rank.tolist(), entropy.tolist(),
               top_ids.tolist(), top_logprob.exp().tolist(), top_sampled.tolist())
    steps = []
    for offset, (token_id, logprob, s_prob, r, ent, alt_ids, alt_probs, alt_sampled) in enumerate(rows):
        text, partial = texts(token_id)
        alternatives = tuple(
            Alternative(a, texts(a)[0], p, sp) for a, p, sp in zip(alt_ids, alt_probs, alt_sampled)
        )
        steps.append(TokenStep(
            token_id=token_id, text=text, prob=math.exp(logprob), logprob=logprob, rank=int(r),
            entropy=ent, sampled_prob=s_prob, alternatives=alternatives, position=first_position + offset,
            is_prompt=is_prompt, partial=partial, sampling=params,
        ))
    return steps
