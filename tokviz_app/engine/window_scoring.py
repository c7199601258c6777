"""`LoadedModel.score_windows`: many windows padded into one forward pass.

Right padding needs no attention mask: a causal model's real tokens never see the padding after them. The
scored positions' logits go through the engine's own maths (`row_stats.target_stats`), as a session's
prompt does. The forward runs in the calling thread, not the inference lane (which batches one-token steps
and runs every prefill on its own): `tokviz score` is the model's only user. A window over the budget takes a session's
chunked pass, whose KV cache bounds the memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..core.windows import UNSCORED, WindowScore, session_scores
from . import metrics
from .row_stats import target_stats


def batch_budget(device: str, vocab_size: int) -> int:
    """Padded tokens per forward pass: its logits (and the few copies the maths makes) are budget x vocabulary
    x 4 bytes, about 256 MB on a CPU (1,024 tokens of GPT-2) and 2 GB on a GPU."""
    memory = (2 << 30) if str(device).startswith("cuda") else (256 << 20)
    return max(256, min(16384, memory // (4 * vocab_size)))


def batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices of windows grouped longest first, each group's rows x longest row within the budget."""
    groups: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(index)
        else:
            groups.append([index])
    return groups


def score_windows(model, windows: Sequence[Sequence[int]], *, budget: int | None = None,
                  done: Callable[[int], None] | None = None) -> list[list[WindowScore]]:
    budget = budget or batch_budget(model.device, model.vocab_size)
    results: list[list[WindowScore] | None] = [None] * len(windows)
    for index, ids in enumerate(windows):
        if len(ids) > budget:
            results[index] = session_scores(model, ids)
            if done is not None:
                done(index)
    fitting = [i for i, ids in enumerate(windows) if len(ids) <= budget]
    for group in batches([len(windows[i]) for i in fitting], budget):
        chosen = [fitting[g] for g in group]
        for index, rows in zip(chosen, _forward(model, [windows[i] for i in chosen])):
            results[index] = rows
            if done is not None:
                done(index)
    return results  # type: ignore[return-value]


def _forward(model, group: Sequence[Sequence[int]]) -> list[list[WindowScore]]:
    width = max(len(ids) for ids in group)
    ids = torch.zeros((len(group), width), dtype=torch.long)
    for row, window in enumerate(group):
        ids[row, : len(window)] = torch.tensor(list(window))
    wanted = [(row, p) for row, window in enumerate(group) for p in range(1, len(window))]
    with torch.inference_mode():
        logits = model.hf_model(input_ids=ids.to(model.device), use_cache=False).logits
        rows = torch.tensor([r for r, _ in wanted], dtype=torch.long, device=logits.device)
        cols = torch.tensor([p - 1 for _, p in wanted], dtype=torch.long, device=logits.device)
        targets = ids.to(logits.device)[rows, cols + 1]
        picked = logits[rows, cols].float()
        del logits
        stats = target_stats(picked, targets.tolist(), 1)
        numbers = zip(stats.logprob.tolist(), stats.rank.tolist(), (stats.entropy_nats / metrics.LN2).tolist())
    out: list[list[WindowScore]] = [[UNSCORED] for _ in group]
    for (row, _), values in zip(wanted, numbers):
        out[row].append(tuple(values))
    return out
