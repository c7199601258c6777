"""How a comparison looks, on the page and in the HTML export: each token's Δ (bits) and colour class, the
lines its hover adds, the details panel's rows, the chart's second line (no NiceGUI, no torch).

A token is addressed by its index in the text: the prompt's tokens first, then the shown tokens. With two
tokenizers a token shows its span's numbers: the span's Δ colours every token in it, and the hover names
both models' token boundaries in it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.compare import CONTEXT, CompareSpan, Comparison, TokenScore, span_of
from ..core.types import Alternative, TokenStep
from .scales import DELTA, value_class
from .text import fmt, number, percent, visible_text

LN2 = math.log(2.0)
NOT_KNOWN_KL = "not known (a server's top list does not cover the distribution)"


def side_b(comparison: Comparison) -> str:
    """How B is named: its model, or "context B"."""
    return "context B" if comparison.mode == CONTEXT else (comparison.model.get("label") or "model B")


def bits(value: float | None, sign: bool = True) -> str:
    return fmt(value, 2, " bits") if value is None or not sign else f"{value:+.2f} bits"


def delta_bits(comparison: Comparison, steps: Sequence[TokenStep]) -> list[float | None]:
    """log2 p_B − log2 p_A of each token of `steps` (prompt + shown), its span's where the tokenizers differ."""
    out: list[float | None] = [None] * len(steps)
    if comparison.spans is not None:
        for span in comparison.spans:
            if span.delta is not None:
                out[span.first:span.stop] = [span.delta / LN2] * (min(span.stop, len(steps)) - span.first)
        return out[: len(steps)]
    for i, (score, step) in enumerate(zip(comparison.scores, steps)):
        a = number(step.logprob)
        if score is not None and score.logprob is not None and a is not None:
            out[i] = (score.logprob - a) / LN2
    return out


def delta_classes(comparison: Comparison | None, steps: Sequence[TokenStep]) -> list[str]:
    """The Δ colour mode's chip class of each token ("tv-x-none" where it is not compared)."""
    values = delta_bits(comparison, steps) if comparison is not None else [None] * len(steps)
    return [value_class(v, DELTA) for v in values]


def span_classes(comparison: Comparison | None, n: int) -> list[str]:
    """Chips of one multi-token span look like one box: tv-span-first … tv-span-last ("" elsewhere)."""
    out = [""] * n
    for span in (comparison.spans or []) if comparison is not None else []:
        if span.stop - span.first > 1:
            out[span.first:span.stop] = ["tv-span-first", *["tv-span-mid"] * (span.stop - span.first - 2),
                                         "tv-span-last"][: max(0, min(span.stop, n) - span.first)]
    return out


def _pieces(texts: Sequence[str]) -> str:
    return "|".join(visible_text(t) for t in texts)


def span_line(comparison: Comparison, span: CompareSpan, steps: Sequence[TokenStep]) -> str:
    """A span in one line: its text cut by each model's token boundaries, both sums and Δ."""
    a = _pieces([steps[k].text for k in range(span.first, min(span.stop, len(steps)))])
    delta = span.delta
    return (f"span A: {a} · B ({side_b(comparison)}): {_pieces(span.pieces_b)} · "
            f"log-prob A {fmt(span.logprob_a, 3)}, B {fmt(span.logprob_b, 3)} · "
            f"Δ {bits(None if delta is None else delta / LN2)}"
            + ("" if span.complete else " (a token in it has no prediction)"))


def score_line(comparison: Comparison, score: TokenScore, delta: float | None) -> str:
    prob = None if score.logprob is None else math.exp(score.logprob)
    return (f"{side_b(comparison)}: probability {percent(prob)} · rank {fmt(score.rank)} · Δ {bits(delta)}"
            + (f" · KL(A‖B) {bits(score.kl, sign=False)}" if score.kl is not None else ""))


def hover_lines(comparison: Comparison | None, steps: Sequence[TokenStep]) -> list[str]:
    """What each token's hover adds ("" where it is not compared)."""
    if comparison is None:
        return [""] * len(steps)
    if comparison.spans is not None:
        out = [""] * len(steps)
        for span in comparison.spans:
            line = span_line(comparison, span, steps)
            out[span.first:span.stop] = [line] * (min(span.stop, len(steps)) - span.first)
        return out[: len(steps)]
    deltas = delta_bits(comparison, steps)
    return [score_line(comparison, score, d) if score is not None else ""
            for score, d in zip([*comparison.scores, *[None] * len(steps)], deltas)]


@dataclass(frozen=True)
class Details:
    """The details panel's comparison section for one token."""

    title: str
    rows: list[tuple[str, str, str]]  # (key, label, value)
    top_a: tuple[Alternative, ...] = ()
    top_b: tuple[Alternative, ...] = ()


def details(comparison: Comparison, steps: Sequence[TokenStep], index: int) -> Details | None:
    """Both ranks, both top-5 lists and the KL at token `index`; a span's numbers with two tokenizers."""
    if not comparison.covers(index) or index >= len(steps):
        return None
    step, title = steps[index], f"Compared with {side_b(comparison)}"
    if comparison.spans is not None:
        span = span_of(comparison.spans, index)
        if span is None:
            return None
        delta = span.delta
        return Details(title, [
            ("span-text", "span", visible_text("".join(steps[k].text for k in range(span.first, span.stop)))),
            ("span-a", "tokens A", _pieces([steps[k].text for k in range(span.first, span.stop)])),
            ("span-b", "tokens B", _pieces(span.pieces_b)),
            ("logprob-a", "log-prob A", fmt(span.logprob_a, 4)), ("logprob-b", "log-prob B", fmt(span.logprob_b, 4)),
            ("delta", "Δ (B − A)", bits(None if delta is None else delta / LN2)),
        ])
    score = comparison.scores[index]
    delta = delta_bits(comparison, steps)[index]
    prob_b = None if score.logprob is None else math.exp(score.logprob)
    return Details(title, [
        ("prob-b", "probability B", percent(prob_b)), ("logprob-b", "log-prob B", fmt(score.logprob, 4)),
        ("rank", "rank A / B", f"{fmt(step.rank)} / {fmt(score.rank)}"),
        ("delta", "Δ (B − A)", bits(delta)),
        ("kl", "KL(A‖B)", bits(score.kl, sign=False) if score.kl is not None else NOT_KNOWN_KL),
    ], tuple(step.alternatives[:5]), score.top[:5])


def chart_line(comparison: Comparison | None, steps: Sequence[TokenStep], n_prompt: int,
               metric: str) -> list[list] | None:
    """B's line for the chart of the shown tokens ([position, value, tooltip text] each), in the chart's metric:
    probability or surprisal per token, or per span at its last token with two tokenizers. None: no line."""
    if comparison is None or metric not in ("prob", "surprisal"):
        return None
    logprobs: list[float | None] = [None] * len(steps)
    if comparison.spans is not None:
        for span in comparison.spans:
            if span.complete and span.stop - 1 < len(steps):
                logprobs[span.stop - 1] = span.logprob_b
    else:
        for i, score in enumerate(comparison.scores[: len(steps)]):
            logprobs[i] = score.logprob if score is not None else None
    out = []
    for position, logprob in enumerate(logprobs[n_prompt:]):
        value = None if logprob is None else math.exp(logprob) if metric == "prob" else -logprob / LN2
        text = percent(value) if metric == "prob" else bits(value, sign=False)
        out.append([position, None if value is None else round(value, 6), f"{side_b(comparison)}: {text}"])
    return out if any(v is not None for _, v, _ in out) else None


def summary(comparison: Comparison, steps: Sequence[TokenStep]) -> str:
    """One line: what was compared, over how much, and both totals (their difference in bits)."""
    if comparison.spans is not None:
        pairs = [(s.logprob_a, s.logprob_b) for s in comparison.spans if s.complete]
        unit = f"{len(comparison.spans)} aligned spans (the tokenizers differ)"
    else:
        pairs = [(steps[i].logprob, s.logprob) for i, s in enumerate(comparison.scores[: len(steps)])
                 if s is not None and s.logprob is not None and number(steps[i].logprob) is not None]
        unit = f"{len(pairs)} tokens"
    if not pairs:
        return f"Compared with {side_b(comparison)}: no token has numbers on both sides."
    a, b = math.fsum(x for x, _ in pairs), math.fsum(y for _, y in pairs)
    return (f"Compared with {side_b(comparison)} over {unit}: log-prob A {a:.2f}, B {b:.2f} "
            f"(Δ {bits((b - a) / LN2)}).")
