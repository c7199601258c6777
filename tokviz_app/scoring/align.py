"""Characters of each token, and the alignment of two tokenizations of one text (pure Python, no torch).

`token_pieces` splits the decoded text among the tokens so that the pieces concatenate to it exactly.
Byte-level tokenizers can end a token inside a UTF-8 character (an emoji in two tokens): such a token's
piece is empty, and the token that completes the character carries the whole character.

`align` cuts the text at the offsets where both tokenizations have a boundary; every token of each model
falls in exactly one span, so the spans' summed log-probabilities add up to each model's total. Boundaries
inside a character are not used: a character split differently by the two models stays in one span.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Decode = Callable[[list[int]], str]
REPLACEMENT = "\ufffd"  # what decoders write for incomplete UTF-8


def token_pieces(decode: Decode, ids: Sequence[int]) -> list[str]:
    """Each token's share of `decode(ids)`.

    A streaming detokenizer (as servers use): decode the tokens since the last emitted one together with a
    few tokens before them, and take the new text. Decoding short runs keeps this linear in the length, and
    the tokens before keep decoders that treat a leading token specially (SentencePiece's leading space)
    consistent. A run that ends in U+FFFD is an unfinished character: its tokens wait for the next one.
    """
    ids = list(ids)
    pieces = [""] * len(ids)
    prefix = read = 0  # decode(ids[prefix:read]) is the tail of what was emitted so far
    for k in range(len(ids)):
        before = decode(ids[prefix:read]) if read > prefix else ""
        after = decode(ids[prefix : k + 1])
        if len(after) > len(before) and after.startswith(before) and not after.endswith(REPLACEMENT):
            pieces[k] = after[len(before) :]
            prefix, read = read, k + 1
    full = decode(ids) if ids else ""
    emitted = "".join(pieces)
    if full.startswith(emitted):  # tokens still waiting at the end (or a real U+FFFD) take the rest
        if len(full) > len(emitted):
            pieces[-1] += full[len(emitted) :]
        return pieces
    return _pieces_by_prefixes(decode, ids, full)  # a decoder that rewrites earlier text: slow but exact


def _pieces_by_prefixes(decode: Decode, ids: list[int], full: str) -> list[str]:
    """Pieces from the decoded length of every prefix (quadratic; only for unusual decoders)."""
    pieces, done = [], 0
    for k in range(len(ids)):
        end = len(full) if k == len(ids) - 1 else max(done, min(len(decode(ids[: k + 1])), len(full)))
        pieces.append(full[done:end])
        done = end
    return pieces


def offsets(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) character offsets of consecutive pieces."""
    spans, at = [], 0
    for piece in pieces:
        spans.append((at, at + len(piece)))
        at += len(piece)
    return spans


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of the text, and the tokens of each model that fall in them."""

    start: int
    end: int
    a: range  # token indices of the first tokenization
    b: range  # token indices of the second


def boundaries(pieces: Sequence[str]) -> set[int]:
    """Offsets where a token ends on a complete character (empty pieces end nothing)."""
    return {end for (_, end), piece in zip(offsets(pieces), pieces) if piece}


def align(pieces_a: Sequence[str], pieces_b: Sequence[str]) -> list[Span]:
    """Spans between consecutive offsets where both tokenizations have a boundary."""
    text_a, text_b = "".join(pieces_a), "".join(pieces_b)
    if text_a != text_b:
        raise ValueError("The two tokenizations do not decode to the same text.")
    if not text_a:
        return []
    cuts = sorted(boundaries(pieces_a) & boundaries(pieces_b) | {len(text_a)})
    groups_a, groups_b = _assign(pieces_a, cuts), _assign(pieces_b, cuts)
    return [Span(cuts[i - 1] if i else 0, cut, groups_a[i], groups_b[i]) for i, cut in enumerate(cuts)]


def _assign(pieces: Sequence[str], cuts: list[int]) -> list[range]:
    """For each span (ending at cuts[i]), the contiguous range of tokens in it. A token goes to the span
    that holds its text; an empty token (the first part of a split character) goes with the next token."""
    first = [None] * len(cuts)
    last = [None] * len(cuts)
    span, at = 0, 0
    for k, piece in enumerate(pieces):
        if piece:
            at += len(piece)
            while cuts[span] < at:
                span += 1
        else:
            while span < len(cuts) - 1 and cuts[span] <= at:
                span += 1
        if first[span] is None:
            first[span] = k
        last[span] = k
    return [range(f, l + 1) if f is not None else range(0) for f, l in zip(first, last)]


def total(values: Sequence[float | None]) -> float | None:
    """Exact sum of the known values (None when none is known)."""
    known = [v for v in values if v is not None]
    return math.fsum(known) if known else None
