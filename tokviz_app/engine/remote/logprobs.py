"""Reading the servers' logprobs: distributions over the known top tokens, never invented."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...core.types import SamplingParams
from .client import TOP_N, ServerError
from .kept import is_plain, kept

if TYPE_CHECKING:
    from .vocab import Vocab


@dataclass(frozen=True)
class _Tok:
    id: int | None  # None: the server's text matches no token or several
    text: str


@dataclass
class _Entry:
    """One token position of a completion's logprobs."""

    token: _Tok
    logprob: float | None
    top: list[tuple[_Tok, float]] | None


@dataclass
class _Known:
    id: int
    logprob: float
    rank: int | None  # 1-based over the vocabulary, where the server's list proves it
    in_top: bool  # among the first `asked` of the server's list


@dataclass
class _Dist:
    """What the server told us about one next-token distribution."""

    known: list[_Known] = field(default_factory=list)  # sorted by logprob, descending
    asked: int = TOP_N
    returned: int = 0  # entries the server sent (keys, before resolving them)
    ranked: int = 0  # leading entries whose rank is exact (no unresolved entry before them)

    @classmethod
    def from_top(cls, top: list[tuple[_Tok, float]] | None, asked: int) -> _Dist:
        dist = cls(asked=asked, returned=len(top or []))
        exact = True
        seen: set[int] = set()
        for position, (tok, logprob) in enumerate(sorted(top or [], key=lambda t: -t[1])):
            if position >= asked:  # the sampled token added after the top-k: its rank is unknown
                exact = False
            if tok.id is None:
                exact = False
                continue
            if tok.id in seen:
                continue
            seen.add(tok.id)
            dist.known.append(_Known(tok.id, logprob, position + 1 if exact else None, position < asked))
            if exact:
                dist.ranked = position + 1
        return dist

    def find(self, token_id: int) -> _Known | None:
        return next((k for k in self.known if k.id == token_id), None)

    def logprob_of(self, token_id: int) -> float | None:
        """The token's logprob where the server listed it, else None."""
        known = self.find(token_id)
        return known.logprob if known else None

    def alternatives(self) -> list[_Known]:
        return [k for k in self.known if k.in_top][: self.asked]

    def sampler(self, params: SamplingParams) -> Callable[[int], float | None]:
        """id -> probability under the session's sampling settings, where the known list decides it."""
        result = kept(self.known, self.ranked, params)
        return (lambda _id: None) if result is None else result.prob


Resolve = Callable[[Any, Any, str], _Tok]  # (id, bytes, text) as a server's JSON gives them -> the token


_is_plain = is_plain


def _parse_logprobs(logprobs: Any, resolve: Resolve) -> list[_Entry]:
    """Classic completions logprobs ({tokens, token_logprobs, top_logprobs}) or the newer list form
    ({content: [{id?, token, bytes?, logprob, top_logprobs: [...]}]}). Numbers that are not finite
    and <= 0 become unknown; a shape that is neither form is a ServerError, never a crash."""
    if not isinstance(logprobs, dict):
        return []
    try:
        return _read_logprobs(logprobs, resolve)
    except (AttributeError, TypeError, ValueError, KeyError, OverflowError) as error:  # e.g. a list item, no object
        raise ServerError(f"The model server sent logprobs that tokviz cannot read ({type(error).__name__}).") \
            from error


def _read_logprobs(logprobs: dict, resolve: Resolve) -> list[_Entry]:
    entries: list[_Entry] = []
    if isinstance(logprobs.get("content"), list):
        for item in logprobs["content"]:
            top = item.get("top_logprobs")
            entries.append(_Entry(
                _listed_token(item, resolve), _logprob(item.get("logprob")),
                None if top is None else [(_listed_token(t, resolve), _logprob(t["logprob"])) for t in top
                                          if _logprob(t.get("logprob")) is not None],
            ))
        return entries
    tokens = logprobs.get("tokens") or []
    token_logprobs = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    for text, logprob, top in zip(tokens, token_logprobs, tops):
        entries.append(_Entry(
            resolve(None, None, str(text)), _logprob(logprob),
            None if top is None else [(resolve(None, None, str(k)), _logprob(v)) for k, v in top.items()
                                      if _logprob(v) is not None],
        ))
    return entries


def _listed_token(item: dict[str, Any], resolve: Resolve) -> _Tok:
    """The token of one entry of the list form: {id?, token, bytes?, ...}."""
    return resolve(item.get("id"), item.get("bytes"), str(item.get("token", "")))


def _logprob(value: Any) -> float | None:
    """A log-probability as the server sent it, or None where it is not one (text, NaN, > 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return min(value, 0.0) if value <= 1e-6 and not math.isnan(value) else None  # -inf: "impossible"


def align(entries: list[_Entry], ids: Sequence[int], vocab: Vocab) -> list[tuple[int, int]] | None:
    """Pairs (entry index, prompt position) of an echoed prompt; control tokens the server left out are
    skipped. None when the echo does not spell the prompt."""
    pairs, k = [], 0
    for j, entry in enumerate(entries):
        while k < len(ids) and not _matches(entry.token, ids[k], vocab) and ids[k] in vocab.special_ids:
            k += 1
        if k >= len(ids):
            break  # the completion after the prompt
        if not _matches(entry.token, ids[k], vocab):
            return None
        pairs.append((j, k))
        k += 1
    return pairs if k >= len(ids) or all(i in vocab.special_ids for i in ids[k:]) else None


def _matches(tok: _Tok, token_id: int, vocab: Vocab) -> bool:
    if tok.id is not None:
        return tok.id == token_id
    return tok.text in vocab.server_texts(token_id)


# ============================================================================ answers
def _first_choice(answer: Any, base: str) -> dict[str, Any]:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ServerError(f"The model server at {base} answered without a completion.")
    return choices[0]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def _prompt_ranks(prompt_logprobs: Any, ids: Sequence[int]) -> dict[int, int]:
    """vLLM's `prompt_logprobs`: [None, {"id": {"logprob", "rank", ...}}, ...] -> {position: rank}."""
    ranks: dict[int, int] = {}
    if not isinstance(prompt_logprobs, list):
        return ranks
    for k, item in enumerate(prompt_logprobs[: len(ids)]):
        if isinstance(item, dict):
            info = item.get(str(ids[k]))
            if isinstance(info, dict) and isinstance(info.get("rank"), int):
                ranks[k] = info["rank"]
    return ranks
