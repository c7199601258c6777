"""From a server's answer to a TokenStep: which token it drew, and that token's numbers under the session's
sampling settings. `warn` takes a caveat for the session's `warnings` (a sentence for the user)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from ...core.types import Alternative, SamplingParams, TokenStep
from .client import TOP_N, ServerError
from .kept import is_plain, kept
from .logprobs import _Dist, _Entry, _Tok

if TYPE_CHECKING:
    from .model import RemoteModel

Warn = Callable[[str], None]


def make_step(model: RemoteModel, token_id: int, logprob: float | None, dist: _Dist, position: int,
              params: SamplingParams, *, is_prompt: bool = False, rank: int | None = None) -> TokenStep:
    """The step for `token_id`, whose distribution the server described as `dist`; `logprob` and `rank`
    where known otherwise (the sampled token's own logprob, vLLM's prompt ranks)."""
    known = dist.find(token_id)
    if logprob is None and known is not None:
        logprob = known.logprob
    if rank is None and known is not None:
        rank = known.rank
    result = kept(dist.known, dist.ranked, params, model.vocab_size)  # None: the list does not decide it
    sampled = None if result is None else result.prob(token_id)
    if sampled is None and logprob is not None and is_plain(params):
        sampled = math.exp(logprob)
    text, partial = model.token_text(token_id)
    alternatives = tuple(Alternative(k.id, model.token_text(k.id)[0], math.exp(k.logprob),
                                     None if result is None else result.prob(k.id),
                                     None if result is None else result.dropped.get(k.id))
                         for k in dist.alternatives()[: params.top_n])
    return TokenStep(
        token_id=token_id, text=text, prob=None if logprob is None else math.exp(logprob), logprob=logprob,
        rank=rank, entropy=None, sampled_prob=sampled, alternatives=alternatives, position=position,
        is_prompt=is_prompt, partial=partial, sampling=params,
        kept_count=None if result is None else result.count, kept_mass=None if result is None else result.mass,
    )


def step_from_entry(model: RemoteModel, entry: _Entry, position: int, params: SamplingParams, warn: Warn, *,
                    whole_ok: bool = True) -> TokenStep:
    """The step of a token the server drew. `whole_ok` False: the server went on past it, so its text is
    not a whole token (see `sampled_id`)."""
    token_id = sampled_id(model, entry.token, warn, whole_ok)
    asked = max(TOP_N, params.top_n)  # as the session asked (`RemoteSession._sampling_body`)
    dist = _Dist.from_top(entry.top, asked)
    if dist.returned < min(asked, model.vocab_size or asked) and dist.returned == len(dist.known):
        warn(f"The server returned {dist.returned} alternatives where {asked} were asked for.")
    return make_step(model, token_id, entry.logprob, dist, position, params)


def sampled_id(model: RemoteModel, tok: _Tok, warn: Warn, whole_ok: bool = True) -> int:
    """The id of a drawn token; ServerError where the server sent only a text that names no single token."""
    if tok.id is not None:
        return tok.id
    candidates = model.vocab.ids_for_text(tok.text)
    # A text shared by several tokens: where exactly one of them is a whole token with that text and
    # the others are fragments of a multi-byte character or control tokens, the whole token is meant.
    whole = [i for i in candidates if i not in model.vocab.special_ids and model.token_text(i) == (tok.text, False)]
    if len(whole) == 1 and tok.text and whole_ok:
        warn(f"The server returned the text {tok.text!r}, which several tokens share; it was read as the whole "
             f"token {whole[0]}.")
        return whole[0]
    raise ServerError(f"The server returned a token tokviz cannot identify ({tok.text!r} matches "
                      f"{len(candidates) or 'no'} tokens of the vocabulary): a token that is part of a character "
                      f"is lost where a server sends token text, not ids (llama-cpp-python), or one entry for the "
                      f"whole character (llama.cpp's server). Use a server that returns every token's id (vLLM) "
                      f"to continue exactly.")
