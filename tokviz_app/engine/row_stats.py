"""Rows of logits -> their targets' statistics in one native call (`row_stats.c`), where the C kernels build.

The raw distribution's numbers only: a prompt's tokens and plain sampling steps (`token_steps`), scored texts
(`compare.score_ids`) and scored windows (`window_scoring`). Where it returns None (no C compiler, logits on a
GPU, a row holding NaN or no finite logit) `token_steps` keeps its torch code; `target_stats` is the same call
with torch's equivalent behind it, for callers that only need these numbers.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from . import metrics
from .quant_library import LazyFunction

SOURCE = Path(__file__).with_name("row_stats.c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")  # no fast-math: the kernel must see NaN and infinities
MAX_TOP = 32  # the kernel's list of best tokens (core.types.MAX_TOP_N is 20)
ROWS_PER_THREAD = 32  # fewer rows are not worth starting a thread for


@dataclass
class RowStats:
    """Per row: log-probability and rank of its target, entropy (nats), how many tokens have a non-zero fp32
    probability, the top tokens (ids, log-probabilities)."""

    logprob: torch.Tensor  # [T] float32
    rank: torch.Tensor  # [T] int32
    entropy_nats: torch.Tensor  # [T] float64
    kept: torch.Tensor  # [T] int32
    top_ids: torch.Tensor  # [T, k] int64
    top_logprobs: torch.Tensor  # [T, k] float32


_p, _n = ctypes.c_void_p, ctypes.c_int64
kernel = LazyFunction(SOURCE, FLAGS, "tokviz_row_stats", [_p, _n, _n, _p, ctypes.c_int, _p, _p, _p, _p, _p, _p],
                      "token statistics use torch")


def row_stats(logits: torch.Tensor, targets: list[int], k: int) -> RowStats | None:
    """The statistics of `targets` under logits [T, V] (float32, CPU) with the top `k` tokens; None: use torch."""
    run = kernel() if logits.device.type == "cpu" and k <= MAX_TOP else None
    if run is None:
        return None
    logits = logits.float().contiguous()
    rows, vocab = logits.shape
    out = RowStats(torch.empty(rows), torch.empty(rows, dtype=torch.int32), torch.empty(rows, dtype=torch.float64),
                   torch.empty(rows, dtype=torch.int32), torch.empty(rows, k, dtype=torch.long),
                   torch.empty(rows, k))
    ids = torch.tensor(targets, dtype=torch.long)
    if not ((ids >= 0) & (ids < vocab)).all():
        raise IndexError("a target token is outside the logits' vocabulary")
    def part(start: int, end: int) -> int:
        return run(logits[start].data_ptr(), end - start, vocab, ids[start].data_ptr(), k,
                   out.logprob[start].data_ptr(), out.rank[start].data_ptr(), out.entropy_nats[start].data_ptr(),
                   out.kept[start].data_ptr(), out.top_ids[start].data_ptr(), out.top_logprobs[start].data_ptr())

    if rows == 0:
        return out
    # A prompt's rows on every core torch may use (ctypes lets go of the GIL): ~60 us a row of GPT-2's vocabulary
    parts = max(1, min(torch.get_num_threads(), rows // ROWS_PER_THREAD))
    bounds = [rows * i // parts for i in range(parts + 1)]
    refused = [0] * parts
    helpers = [threading.Thread(target=lambda i=i: refused.__setitem__(i, part(bounds[i], bounds[i + 1])),
                                name="tokviz-row-stats") for i in range(1, parts)]
    for helper in helpers:
        helper.start()
    refused[0] = part(bounds[0], bounds[1])
    for helper in helpers:
        helper.join()
    return None if any(refused) else out


def target_stats(logits: torch.Tensor, targets: list[int], k: int) -> RowStats:
    """`row_stats`, or the same numbers from torch where the kernel does not serve."""
    stats = row_stats(logits, targets, k)
    if stats is not None:
        return stats
    logprobs = metrics.log_softmax(logits)
    ids = torch.tensor(targets, dtype=torch.long, device=logits.device)
    probs = logprobs.exp()
    top_logprobs, top_ids = logprobs.topk(k, dim=-1)
    return RowStats(logprobs.gather(-1, ids.unsqueeze(-1)).squeeze(-1), metrics.ranks(logits, ids),
                    -(probs * logprobs).nansum(-1).double(), (probs > 0).sum(-1, dtype=torch.int32),
                    top_ids, top_logprobs)
