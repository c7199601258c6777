"""Scoring token ids with a model: every token's log-prob, rank and entropy, in sliding windows.

Two paths give the same numbers:
- `score_batched` (local models): windows of many texts padded into one forward pass. Right padding
  needs no attention mask: a causal model's real tokens never see the padding after them. The logits of
  the positions that are scored go through the engine's own maths (`engine.metrics`). It calls the
  model's forward directly, not through its inference lane: the lane batches one-token decoding steps and
  runs every multi-token prefill on its own, and on the command line the scorer is the model's only user.
- `score_sessions` (any model of the contract: remote servers too): one `start_from_ids` session per
  window, its prompt tokens' numbers; several windows at once from a thread pool (a server batches them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..core.contract import Model
from .windows import Window, plan

Progress = Callable[[int], None]  # tokens just scored


@dataclass(frozen=True)
class Score:
    """The numbers for one token of a text. None where the model had nothing to predict it from (the first
    token of a model without a beginning-of-text token) or where a server does not say."""

    logprob: float | None
    rank: int | None
    entropy_bits: float | None
    context_tokens: int  # tokens the prediction saw before this one (prefix included)
    full_context: bool  # it saw the whole text before it (no window cut it off)


def text_ids(model: Model, text: str) -> list[int]:
    """The text's token ids without special tokens (the scorer adds the beginning-of-text token itself)."""
    tokenizer = getattr(model, "tokenizer", None) or getattr(getattr(model, "vocab", None), "tokenizer", None)
    if tokenizer is not None:
        return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
    ids = model.encode(text) if text else []
    bos = bos_id(model)
    if ids and bos is not None and ids[0] == bos and not text.startswith(model.decode([bos])):
        ids = ids[1:]  # added by the tokenizer, not written in the text
    return ids


def bos_id(model: Model) -> int | None:
    """The token every text is scored after: the model's beginning-of-text token (the local engine falls
    back to end-of-text, as lm-evaluation-harness does); None where it has neither."""
    return getattr(model, "bos_token_id", None)


def prefix_ids(model: Model, context: str | None) -> list[int]:
    bos = bos_id(model)
    return ([] if bos is None else [bos]) + (text_ids(model, context) if context else [])


def plan_all(model: Model, texts: Sequence[list[int]], prefix: list[int], stride: int | None) -> list[Window]:
    return [w for doc, ids in enumerate(texts) for w in plan(doc, ids, prefix, model.context_length, stride)]


def empty_scores(texts: Sequence[list[int]]) -> list[list[Score | None]]:
    return [[None] * len(ids) for ids in texts]


def fill(scores: list[list[Score | None]], window: Window, rows: Sequence[tuple]) -> None:
    """rows[i] = (logprob, rank, entropy) of text token window.score_from + i."""
    for token, (logprob, rank, entropy) in zip(range(window.score_from, window.score_to), rows):
        if logprob is not None and not math.isfinite(logprob):
            logprob = None  # probability 0 (a masked vocabulary entry): no finite number to write
        scores[window.doc][token] = Score(logprob, rank, entropy, window.position(token), window.first == 0)


def session_rows(model: Model, window: Window) -> list[tuple]:
    """(logprob, rank, entropy) of the window's scored tokens from one session's prompt tokens."""
    session = model.start_from_ids(list(window.ids))
    try:
        steps = session.prompt_tokens
        return [(steps[p].logprob, steps[p].rank, steps[p].entropy) if p > 0 else (None, None, None)
                for p in map(window.position, range(window.score_from, window.score_to))]
    finally:
        session.close()


def score_sessions(model: Model, texts: Sequence[list[int]], prefix: list[int], stride: int | None = None, *,
                   threads: int = 1, progress: Progress | None = None) -> list[list[Score]]:
    """Through the contract: one session per window, its prompt tokens' numbers."""
    scores = empty_scores(texts)
    windows = plan_all(model, texts, prefix, stride)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for window, rows in zip(windows, pool.map(lambda w: session_rows(model, w), windows)):
            fill(scores, window, rows)
            if progress is not None:
                progress(window.score_to - window.score_from)
    return scores  # type: ignore[return-value]


def can_batch(model: Model) -> bool:
    return hasattr(model, "hf_model") and hasattr(model, "lane")


def batch_budget(model: Model) -> int:
    """Padded tokens per forward pass: its logits (and the few copies the maths makes) are budget x vocabulary
    x 4 bytes, about 256 MB on a CPU (1,024 tokens of GPT-2) and 2 GB on a GPU."""
    memory = (2 << 30) if str(model.device).startswith("cuda") else (256 << 20)
    return max(256, min(16384, memory // (4 * (model.vocab_size or 50000))))


def batches(windows: list[Window], budget: int) -> list[list[Window]]:
    """Windows grouped longest first, each group's rows x longest row within the budget (at least one row)."""
    ordered = sorted(windows, key=lambda w: len(w.ids), reverse=True)
    groups: list[list[Window]] = []
    for window in ordered:
        if groups and (len(groups[-1]) + 1) * len(groups[-1][0].ids) <= budget:
            groups[-1].append(window)
        else:
            groups.append([window])
    return groups


def score_batched(model: Model, texts: Sequence[list[int]], prefix: list[int], stride: int | None = None, *,
                  budget: int | None = None, progress: Progress | None = None) -> list[list[Score]]:
    """Windows of all texts in padded batches through the model's forward pass (local models)."""
    import torch

    from ..engine import metrics

    scores = empty_scores(texts)
    hf_model, device, budget = model.hf_model, model.device, budget or batch_budget(model)
    windows = plan_all(model, texts, prefix, stride)
    for window in (w for w in windows if len(w.ids) > budget):  # a window over the budget: the session's
        fill(scores, window, session_rows(model, window))      # chunked pass with a KV cache bounds memory
        if progress is not None:
            progress(window.score_to - window.score_from)
    for group in batches([w for w in windows if len(w.ids) <= budget], budget):
        width = len(group[0].ids)
        ids = torch.zeros((len(group), width), dtype=torch.long)
        for row, window in enumerate(group):
            ids[row, : len(window.ids)] = torch.tensor(window.ids)
        # (row, position of the prediction, target id) for every scored token that has a prediction
        wanted = [(row, window.position(t) - 1, window.ids[window.position(t)])
                  for row, window in enumerate(group) for t in range(window.score_from, window.score_to)
                  if window.position(t) > 0]
        with torch.inference_mode():
            logits = hf_model(input_ids=ids.to(device), use_cache=False).logits
            rows = torch.tensor([w[0] for w in wanted], dtype=torch.long, device=logits.device)
            cols = torch.tensor([w[1] for w in wanted], dtype=torch.long, device=logits.device)
            targets = torch.tensor([w[2] for w in wanted], dtype=torch.long, device=logits.device)
            picked = logits[rows, cols].float()
            del logits
            logprobs = metrics.log_softmax(picked)
            numbers = zip(logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).tolist(),
                          metrics.ranks(picked, targets).tolist(), metrics.entropy_bits(logprobs).tolist())
        found = {(row, col): values for (row, col, _), values in zip(wanted, numbers)}
        for row, window in enumerate(group):
            fill(scores, window, [found.get((row, window.position(t) - 1), (None, None, None))
                                  for t in range(window.score_from, window.score_to)])
            if progress is not None:
                progress(window.score_to - window.score_from)
    return scores  # type: ignore[return-value]


def score(model: Model, texts: Sequence[list[int]], prefix: list[int], stride: int | None = None, *,
          batched: bool = True, progress: Progress | None = None) -> list[list[Score]]:
    """Every token of every text scored after `prefix`; the batched path where the model allows it."""
    if batched and can_batch(model):
        return score_batched(model, texts, prefix, stride, progress=progress)
    threads = 1 if can_batch(model) else 4  # a server answers several requests at once; a CPU does not
    return score_sessions(model, texts, prefix, stride, threads=threads, progress=progress)
