"""`Model.score_windows` through the contract: one session per window, its prompt tokens' numbers. No torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .contract import Model

WindowScore = tuple  # (log-prob, rank, entropy in bits) of one token, each None where unknown
UNSCORED: WindowScore = (None, None, None)  # a window's first token: nothing before it to predict it from
SESSION_THREADS = 4  # a server answers several requests at once


def session_scores(model: Model, ids: Sequence[int]) -> list[WindowScore]:
    """(log-prob, rank, entropy) of ids[p] after ids[:p], for every p (UNSCORED at 0)."""
    session = model.start_from_ids(list(ids))
    try:
        return [UNSCORED] + [(s.logprob, s.rank, s.entropy) for s in session.prompt_tokens[1:]]
    finally:
        session.close()


def score_by_sessions(model: Model, windows: Sequence[Sequence[int]], *, threads: int = SESSION_THREADS,
                      done: Callable[[int], None] | None = None) -> list[list[WindowScore]]:
    results: list[list[WindowScore]] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for index, rows in enumerate(pool.map(lambda ids: session_scores(model, ids), windows)):
            results.append(rows)
            if done is not None:
                done(index)
    return results
