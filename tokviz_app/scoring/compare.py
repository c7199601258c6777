"""The page's comparison of the text on screen (pure Python over the contract; each model's `score_ids` runs
the forward passes).

- Another model, same tokens: where model B reads every token id of the text as the same text A does, B
  scores A's very ids (`score_ids`), with A as the reference for the KL divergence.
- Another model, another tokenizer: B tokenizes A's text (no special tokens added) and scores it after its
  beginning-of-text token, as `tokviz score` does; `align` cuts the text where both have a boundary, so the
  spans' sums add up to each model's total log-probability of the text.
- Another context: the same model scores the shown continuation after context B (its BOS when B is empty),
  with the continuation after the prompt as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.compare import COMPARE_TOP, CONTEXT, MODEL, CompareSpan, Comparison, TokenScore
from ..core.contract import Model, ScoreReference, StopCheck
from ..core.errors import TokvizError
from ..core.types import TokenStep
from .align import align, token_pieces, total
from .corpus import bos_id, prefix_ids, text_ids


def describe(model: Model) -> dict:
    return {"key": model.key, "label": model.label, "source": model.source}


def reads_the_same(model: Model, steps: Sequence[TokenStep]) -> bool:
    """`model` reads every token id of the text as the text the steps show (so it can score the same ids)."""
    vocab = model.vocab_size
    return all((vocab is None or s.token_id < vocab) and model.token_text(s.token_id)[0] == s.text for s in steps)


def compare_models(a: Model | None, prompt: Sequence[TokenStep], shown: Sequence[TokenStep], b: Model, *,
                   should_stop: StopCheck | None = None) -> Comparison:
    """Model B on the text (prompt + shown tokens) of model A (None: a read-only import, A not loaded)."""
    steps = [*prompt, *shown]
    ids = [s.token_id for s in steps]
    if len(ids) < 2:
        raise TokvizError("There is nothing to compare yet: generate or score some text first.")
    if reads_the_same(b, steps):
        reference = ScoreReference(a, ids, 1) if a is not None else None
        scores = b.score_ids(ids, 1, top_n=COMPARE_TOP, reference=reference, should_stop=should_stop)
        return Comparison(describe(b), MODEL, None, ids, len(prompt), [None, *scores])
    if a is None:
        raise TokvizError(f"{b.label} has another tokenizer: comparing needs this text's own model to cut the text "
                          "into tokens. Initialize it first.")
    return Comparison(describe(b), MODEL, None, ids, len(prompt), [None] * len(ids),
                      aligned_spans(a, steps, b, should_stop))


def aligned_spans(a: Model, steps: Sequence[TokenStep], b: Model, should_stop: StopCheck | None) -> list[CompareSpan]:
    """A's tokens and B's tokenization of the same text, cut where both have a boundary."""
    ids = [s.token_id for s in steps]
    pieces_a = token_pieces(a.decode, ids)
    text = "".join(pieces_a)
    ids_b = text_ids(b, text)
    pieces_b = token_pieces(b.decode, ids_b)
    if "".join(pieces_b) != text:
        raise TokvizError(f"{b.label}'s tokenizer does not give back the same text, so the two cannot be aligned.")
    prefix = prefix_ids(b, None)
    if prefix:  # B's first token is scored after its beginning-of-text token, as `tokviz score` does
        scores_b = b.score_ids(prefix + ids_b, len(prefix), top_n=1, should_stop=should_stop)
    else:
        scores_b = [None, *b.score_ids(ids_b, 1, top_n=1, should_stop=should_stop)] if len(ids_b) > 1 else [None]
    logprobs_a = [s.logprob for s in steps]
    logprobs_b = [s.logprob if s is not None else None for s in scores_b]
    spans = []
    for span in align(pieces_a, pieces_b):
        part_a, part_b = [logprobs_a[k] for k in span.a], [logprobs_b[k] for k in span.b]
        spans.append(CompareSpan(span.start, span.end, span.a.start, span.a.stop,
                                 tuple(ids_b[k] for k in span.b), tuple(pieces_b[k] for k in span.b),
                                 total(part_a), total(part_b), None not in part_a and None not in part_b))
    return spans


def compare_contexts(model: Model, prompt: Sequence[TokenStep], shown: Sequence[TokenStep], context_b: str, *,
                     should_stop: StopCheck | None = None) -> Comparison:
    """The shown continuation after context B, by the same model (the text after the prompt is the reference)."""
    continuation = [s.token_id for s in shown]
    if not continuation:
        raise TokvizError("There is no continuation to compare yet: generate or score some text first.")
    context = list(model.encode(context_b)) if context_b else []
    if not context:
        start = bos_id(model)
        context = [start if start is not None else min(model.eos_token_ids)]
    ids_a = [s.token_id for s in prompt] + continuation
    scores: list[TokenScore] = model.score_ids(context + continuation, len(context), top_n=COMPARE_TOP,
                                               reference=ScoreReference(model, ids_a, len(prompt)),
                                               should_stop=should_stop)
    return Comparison(describe(model), CONTEXT, context_b, ids_a, len(prompt), [None] * len(prompt) + scores)


def compare(a: Model | None, prompt: Sequence[TokenStep], shown: Sequence[TokenStep], *, mode: str,
            b: Model | None = None, context_b: str = "", should_stop: StopCheck | None = None) -> Comparison:
    if mode == CONTEXT:
        if a is None:
            raise TokvizError("Scoring after another context needs this text's own model: initialize it first.")
        return compare_contexts(a, prompt, shown, context_b, should_stop=should_stop)
    if b is None:
        raise TokvizError("Pick a model to compare with.")
    return compare_models(a, prompt, shown, b, should_stop=should_stop)

