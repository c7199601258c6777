"""`Model.score_ids` for local models: a given text's tokens scored in plain forward passes, and the KL
divergence from a reference over the whole vocabulary.

The forward passes run in the calling thread on the shared model with a private KV cache (as the logit lens
does): the lane's resident rows and every session's cache stay untouched. The text is fed in blocks of
BLOCK tokens (the lane's own prefill chunk, so a prompt scored here gives the numbers its session shows):
first the tokens before the first prediction, then one block per BLOCK scored tokens, whose logits are the
predictions of those tokens. A reference on the same vocabulary (another local model, or the same one after
another context) is fed in the same blocks of scored tokens, so each block's two [L, V] distributions meet
at once and never the whole text's. Elsewhere (a server as the reference) the KL comes from the top lists.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from . import metrics
from .row_stats import target_stats
from .resident import new_cache
from .session import PREFILL_CHUNK
from ..core.compare import TokenScore, check_scored, kl_from_lists
from ..core.contract import Model, ScoreReference, StopCheck
from ..core.errors import CancelledWork, PromptTooLongError
from ..core.types import MAX_TOP_N, Alternative

BLOCK = PREFILL_CHUNK  # tokens per forward pass, as a session's prompt: bounds the [L, V] logits of a long text


def score_ids(model: Model, ids: list[int], start: int, *, top_n: int = 5, reference: ScoreReference | None = None,
              should_stop: StopCheck | None = None) -> list[TokenScore]:
    """The local engine's `Model.score_ids` (see the contract)."""
    check_scored(ids, start, reference)
    _check_fits(model, ids)
    exact = reference is not None and is_local(reference.model) and same_vocabulary(model, reference.model)
    if exact:
        _check_fits(reference.model, reference.ids)
    listed = MAX_TOP_N if reference is not None and not exact else top_n
    theirs = _blocks(reference.model, reference.ids, reference.start, should_stop) if exact else None
    with torch.inference_mode():
        out = _scores(model, ids, start, listed, theirs, should_stop)
    if reference is not None and not exact:  # a server on one side: what the two top lists allow
        listed_scores = reference.model.score_ids(reference.ids, reference.start, top_n=MAX_TOP_N,
                                                  should_stop=should_stop)
        out = [TokenScore(s.token_id, s.logprob, s.rank, s.top[:top_n], kl_from_lists(r.top, s.top))
               for s, r in zip(out, listed_scores)]
    return out


def _scores(model: Model, ids: list[int], start: int, listed: int, theirs: Iterator[torch.Tensor] | None,
            should_stop: StopCheck | None) -> list[TokenScore]:
    out: list[TokenScore] = []
    for logits in _blocks(model, ids, start, should_stop):
        targets = torch.tensor(ids[start + len(out): start + len(out) + len(logits)], dtype=torch.long,
                               device=logits.device)
        k = min(max(1, listed), logits.shape[-1])
        stats = target_stats(logits, targets.tolist(), k)
        picked, ranks = stats.logprob.tolist(), stats.rank.tolist()
        top_p, top_i = stats.top_logprobs.exp().tolist(), stats.top_ids
        kl = [None] * len(logits)
        if theirs is not None:
            logprobs = metrics.log_softmax(logits)
            reference_logprobs = metrics.log_softmax(next(theirs).to(logits.device))
            # Σ p (log p − log q); 0·(−inf) is nan and counts as 0; an infinite divergence is unknown (None)
            values = (reference_logprobs.exp() * (reference_logprobs - logprobs)).nansum(-1) / metrics.LN2
            kl = [max(0.0, v) if v == v and v != float("inf") else None for v in values.tolist()]
        del logits
        for row, (token, logprob, rank) in enumerate(zip(targets.tolist(), picked, ranks)):
            top = tuple(Alternative(i, model.token_text(i)[0], p, None)
                        for i, p in zip(top_i[row].tolist(), top_p[row]))
            out.append(TokenScore(token, logprob if logprob != float("-inf") else None, rank, top, kl[row]))
    return out


def is_local(model: Model) -> bool:
    """A model of this engine (its forward passes can run here), not a server's."""
    from .local_model import LoadedModel  # which imports this module

    return isinstance(model, LoadedModel)


def same_vocabulary(a: Model, b: Model) -> bool:
    """Token ids mean the same text in both (so their distributions can be compared id by id)."""
    if a is b:
        return True
    if a.vocab_size != b.vocab_size:
        return False
    return a.tokenizer.get_vocab() == b.tokenizer.get_vocab()


def _check_fits(model: Model, ids: list[int]) -> None:
    if model.context_length and len(ids) > model.context_length:
        raise PromptTooLongError(f"The text is {len(ids):,} tokens long for {model.label}, which reads at most "
                                 f"{model.context_length:,} tokens.")


def _blocks(model: Model, ids: list[int], start: int, should_stop: StopCheck | None) -> Iterator[torch.Tensor]:
    """float32 logits [L, V] predicting ids[start:], BLOCK tokens at a time (on the model's device)."""
    hf_model, device = model.hf_model, model.device
    cache = new_cache(hf_model.config)
    fed = 0

    def feed(chunk: list[int]) -> torch.Tensor:
        nonlocal fed
        if should_stop is not None and should_stop():
            raise CancelledWork("The work was cancelled.")
        positions = torch.arange(fed, fed + len(chunk), device=device).unsqueeze(0)
        with torch.inference_mode():
            out = hf_model(input_ids=torch.tensor([chunk], device=device), cache=cache, position_ids=positions,
                           use_cache=True)
        fed += len(chunk)
        return out.logits[0]

    for at in range(0, start - 1, BLOCK):  # the tokens before the first prediction: their logits go unused
        feed(ids[at: min(at + BLOCK, start - 1)])
    for at in range(start - 1, len(ids) - 1, BLOCK):  # the last token is fed too, as a session's prefill does
        yield feed(ids[at: at + BLOCK])[: len(ids) - 1 - at].float()
