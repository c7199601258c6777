"""Scoring token ids with a model: every token's log-prob, rank and entropy, in sliding windows.

The windows of all texts go to `Model.score_windows` at once: a local model pads many of them into one forward
pass (`engine/window_scoring.py`); any other model of the contract (a server) runs one session per window, a few
at a time. `batched=False` takes that session path on any model (the benchmark's "one at a time").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..core.contract import Model
from ..core.windows import score_by_sessions
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
    ids = model.encode(text) if text else []
    bos = bos_id(model)
    if ids and bos is not None and ids[0] == bos and not text.startswith(model.decode([bos])):
        ids = ids[1:]  # added by the tokenizer, not written in the text
    return ids


def bos_id(model: Model) -> int | None:
    """The token every text is scored after: the model's beginning-of-text token (the local engine falls
    back to end-of-text, as lm-evaluation-harness does); None where it has neither."""
    return model.bos_token_id


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


def score(model: Model, texts: Sequence[list[int]], prefix: list[int], stride: int | None = None, *,
          batched: bool = True, progress: Progress | None = None) -> list[list[Score]]:
    """Every token of every text scored after `prefix`."""
    scores = empty_scores(texts)
    windows = plan_all(model, texts, prefix, stride)

    def done(index: int) -> None:
        if progress is not None:
            progress(windows[index].score_to - windows[index].score_from)

    ids = [w.ids for w in windows]
    numbers = model.score_windows(ids, done=done) if batched else score_by_sessions(model, ids, done=done)
    for window, rows in zip(windows, numbers):
        fill(scores, window, [rows[window.position(t)] for t in range(window.score_from, window.score_to)])
    return scores  # type: ignore[return-value]
