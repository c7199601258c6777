"""The rows the scorer writes: one per token, or one per aligned span when two tokenizers differ (pure Python)."""

from __future__ import annotations

from collections.abc import Sequence

from .align import align, offsets, total
from .corpus import Score

LN2 = 0.6931471805599453
HEAD = ["file", "index", "start", "end", "text", "token_id", "logprob", "surprisal_bits", "rank", "entropy_bits"]
TAIL = ["context_tokens", "full_context", "note"]
COMPARE = ["logprob_b", "rank_b", "delta"]
NO_PREDICTION = "no prediction: the model has no beginning-of-text token to score the first token after"
PARTIAL_SUM = "the sum leaves out a first token that has no prediction (no beginning-of-text token)"


def columns(compare: str | None) -> list[str]:
    """compare: None, "tokens" (same tokens: a second context or an identical tokenizer) or "spans"."""
    middle = {None: [], "tokens": COMPARE, "spans": ["token_id_b", *COMPARE]}[compare]
    return HEAD + middle + TAIL


def surprisal(logprob: float | None) -> float | None:
    return None if logprob is None else -logprob / LN2


def delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def token_rows(name: str, ids: Sequence[int], pieces: Sequence[str], scores: Sequence[Score],
               scores_b: Sequence[Score] | None = None) -> list[dict]:
    """One row per token; with `scores_b` (the same tokens scored a second way) the comparison columns."""
    rows = []
    for index, ((start, end), token_id, piece, s) in enumerate(zip(offsets(pieces), ids, pieces, scores)):
        row = {"file": name, "index": index, "start": start, "end": end, "text": piece, "token_id": token_id,
               "logprob": s.logprob, "surprisal_bits": surprisal(s.logprob), "rank": s.rank,
               "entropy_bits": s.entropy_bits}
        full, context, note = s.full_context, s.context_tokens, NO_PREDICTION if s.logprob is None else ""
        if scores_b is not None:
            b = scores_b[index]
            row.update(logprob_b=b.logprob, rank_b=b.rank, delta=delta(s.logprob, b.logprob))
            full, context = full and b.full_context, min(context, b.context_tokens)
            note = note or (NO_PREDICTION if b.logprob is None else "")
        row.update(context_tokens=context, full_context=full, note=note)
        rows.append(row)
    return rows


def span_rows(name: str, ids_a: Sequence[int], pieces_a: Sequence[str], scores_a: Sequence[Score],
              ids_b: Sequence[int], pieces_b: Sequence[str], scores_b: Sequence[Score]) -> list[dict]:
    """One row per aligned span of two tokenizations: summed log-probs, token ids as lists, rank and entropy
    where the span is a single token of that model."""
    rows = []
    for index, span in enumerate(align(pieces_a, pieces_b)):
        a, b = [scores_a[k] for k in span.a], [scores_b[k] for k in span.b]
        logprob_a, logprob_b = total([s.logprob for s in a]), total([s.logprob for s in b])
        partial = any(s.logprob is None for s in a + b)
        note = "" if not partial else NO_PREDICTION if logprob_a is None or logprob_b is None else PARTIAL_SUM
        rows.append({
            "file": name, "index": index, "start": span.start, "end": span.end,
            "text": "".join(pieces_a[k] for k in span.a), "token_id": [ids_a[k] for k in span.a],
            "logprob": logprob_a, "surprisal_bits": surprisal(logprob_a),
            "rank": a[0].rank if len(a) == 1 else None, "entropy_bits": a[0].entropy_bits if len(a) == 1 else None,
            "token_id_b": [ids_b[k] for k in span.b], "logprob_b": logprob_b,
            "rank_b": b[0].rank if len(b) == 1 else None, "delta": delta(logprob_a, logprob_b),
            "context_tokens": min(s.context_tokens for s in a + b),
            "full_context": all(s.full_context for s in a + b), "note": note,
        })
    return rows
