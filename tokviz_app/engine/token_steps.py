"""Per-token statistics from logits: probability, log-prob, rank, entropy, sampled probability, what the
samplers kept, and the top alternatives (`params.top_n`, 10 by default) with the sampler that dropped each.

The raw distribution's rows (a prompt, a plain sampling or greedy step) go through `row_stats` (one native
call); every other sampler setting, a GPU, and a machine without a C compiler through torch (`_torch_columns`)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from . import metrics
from .row_stats import row_stats
from ..core.types import Alternative, SamplingParams, TokenStep


# Logits per block of rows on torch's path: a 1,000-token prompt's statistics made ~10 temporaries of
# [1000, 50257] floats, each in fresh pages (glibc maps allocations that large anew): 0.6-2 s on a 2-core Xeon.
# Blocks of 8 MB stay in cache.
LOGITS_AT_ONCE = 2**21


def token_steps(logits: torch.Tensor, token_ids: list[int], first_position: int, *, is_prompt: bool,
                params: SamplingParams, texts: Callable[[int], tuple[str, bool]], context: Sequence[int] = (),
                sampled: metrics.Sampled | None = None) -> list[TokenStep]:
    """Vectorised statistics for rows of logits [T, V] and their chosen tokens (`texts`: id -> readable
    text and partial flag). `context`: the ids before the last row's token (the repetition penalty's;
    row r sees `context[:len(context) - T + 1 + r]`). `sampled`: the samplers' output where the caller
    has it already."""
    # the raw distribution says it all: plain sampling, or greedy decoding (the argmax) with nothing sampled yet
    native = metrics.is_plain(params) or (sampled is None and metrics.is_plain_greedy(params))
    columns = _native_columns(logits, token_ids, params) if native else None  # every row in one call
    block = max(1, LOGITS_AT_ONCE // logits.shape[-1])
    if columns is None and len(token_ids) > block and sampled is None:  # a prompt's rows, a block at a time
        steps: list[TokenStep] = []
        for start in range(0, len(token_ids), block):
            end = min(start + block, len(token_ids))
            steps += token_steps(logits[start:end], token_ids[start:end], first_position + start,
                                 is_prompt=is_prompt, params=params, texts=texts,
                                 context=context[: max(0, len(context) - len(token_ids) + end)])
        return steps
    if columns is None:
        columns = _torch_columns(logits, token_ids, params, context, sampled)
    rows = zip(token_ids, *columns)
    steps = []
    for offset, (token_id, logprob, s_prob, r, ent, alt_ids, alt_probs, alt_sampled, alt_dropped, count,
                 mass) in enumerate(rows):
        text, partial = texts(token_id)
        alternatives = tuple(
            Alternative(a, texts(a)[0], p, sp, metrics.DROPPED_BY[d])
            for a, p, sp, d in zip(alt_ids, alt_probs, alt_sampled, alt_dropped)
        )
        steps.append(TokenStep(
            token_id=token_id, text=text, prob=math.exp(logprob), logprob=logprob, rank=int(r),
            entropy=ent, sampled_prob=s_prob, alternatives=alternatives, position=first_position + offset,
            is_prompt=is_prompt, partial=partial, sampling=params, kept_count=int(count), kept_mass=min(mass, 1.0),
        ))
    return steps


def _native_columns(logits: torch.Tensor, token_ids: list[int], params: SamplingParams) -> list[list] | None:
    """The columns of plain sampling or plain greedy decoding from `row_stats.c` (one call for the block);
    None: torch's path."""
    k = min(params.top_n, logits.shape[-1])
    stats = row_stats(logits, token_ids, k)
    if stats is None:
        return None
    top_probs = stats.top_logprobs.exp()
    rows = len(token_ids)
    entropy_bits = stats.entropy_nats / metrics.LN2
    columns = [stats.logprob.tolist(), None, stats.rank.tolist(), entropy_bits.tolist(), stats.top_ids.tolist(),
               top_probs.tolist()]
    if metrics.is_plain(params):
        # The sampling distribution is the raw one (sampled_prob = prob). Every token that keeps a non-zero fp32
        # probability is kept, and those without one hold < 2**-150 of the mass each: the kept mass is all of it.
        columns[1] = stats.logprob.exp().tolist()
        return columns + [columns[5], [[0] * k] * rows, stats.kept.tolist(), [1.0] * rows]
    # Greedy keeps the argmax alone: the first top token (equal logits keep the lowest id first, as argmax does)
    argmax = stats.top_ids[:, 0]
    columns[1] = (torch.tensor(token_ids) == argmax).float().tolist()
    return columns + [[[1.0] + [0.0] * (k - 1)] * rows, [[0] + [metrics.GREEDY] * (k - 1)] * rows, [1] * rows,
                      top_probs[:, 0].tolist()]


def _torch_columns(logits: torch.Tensor, token_ids: list[int], params: SamplingParams, context: Sequence[int],
                   sampled: metrics.Sampled | None) -> list[list]:
    """Every column in torch: any sampler, any device."""
    logprobs = metrics.log_softmax(logits)
    probs = logprobs.exp()
    if sampled is None:  # plain sampling draws from the raw distribution: no second softmax
        sampled = metrics.Sampled(probs, None) if metrics.is_plain(params) else metrics.samplers(logits, params, context)
    targets = torch.tensor(token_ids, dtype=torch.long, device=logits.device).unsqueeze(-1)
    chosen_logprob = logprobs.gather(-1, targets).squeeze(-1)
    chosen_sampled = sampled.probs.gather(-1, targets).squeeze(-1)
    rank = metrics.ranks(logits, targets.squeeze(-1))
    entropy = metrics.entropy_bits(logprobs, probs)
    kept_count = (sampled.probs != 0).sum(-1, dtype=torch.int32)  # (count_nonzero converts to int64 first)
    kept_mass = (probs if sampled.probs is probs else probs.masked_fill(sampled.probs == 0, 0.0)).sum(-1)
    top_logprob, top_ids = logprobs.topk(min(params.top_n, logprobs.shape[-1]), dim=-1)
    top_sampled = sampled.probs.gather(-1, top_ids)
    top_dropped = (torch.zeros_like(top_ids) if sampled.dropped is None else sampled.dropped.gather(-1, top_ids))
    return [chosen_logprob.tolist(), chosen_sampled.tolist(), rank.tolist(), entropy.tolist(), top_ids.tolist(),
            top_logprob.exp().tolist(), top_sampled.tolist(), top_dropped.tolist(), kept_count.tolist(),
            kept_mass.tolist()]
