"""`--words`: token rows summed to whitespace-delimited words, the unit psycholinguists use (pure Python).

The rule: a token (or aligned span) belongs to the word that holds its first non-whitespace character.
A word's first token therefore carries the space before the word (GPT-2's " fox"), so a word's surprisal
includes the probability that a new word starts there. A token of whitespace only (a newline, or the
first half of a split character) goes to the next word; whitespace after the last word goes to the last
word. Every token lands in exactly one word, so the words' log-probs add up to the text's total. (A token
that spans two words counts for the first: byte-level tokenizers never make one, SentencePiece rarely.)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from .align import total
from .rows import LN2, NO_PREDICTION, PARTIAL_SUM

WORD = re.compile(r"\S+")


def columns(compare: bool) -> list[str]:
    middle = ["logprob_b", "delta"] if compare else []
    return ["file", "index", "start", "end", "text", "tokens", "logprob", "surprisal_bits", *middle,
            "full_context", "note"]


def word_rows(name: str, text: str, rows: Sequence[dict], compare: bool) -> list[dict]:
    """Words of `text` (whose token rows are `rows`, in order) with their tokens' summed numbers."""
    words = [(m.start(), m.end()) for m in WORD.finditer(text)]
    if not words:
        return []
    ends = [end for _, end in words]
    members: list[list[dict]] = [[] for _ in words]
    for row in rows:
        piece = row["text"]
        stripped = len(piece) - len(piece.lstrip())
        at = row["start"] + stripped  # the first non-whitespace character (or the end, for whitespace)
        # the word whose end is past `at`: the one holding it, or the next one for whitespace
        members[min(bisect.bisect_right(ends, at), len(words) - 1)].append(row)
    out = []
    for index, ((start, end), group) in enumerate(zip(words, members)):
        logprob = total([r["logprob"] for r in group])
        word = {"file": name, "index": index, "start": start, "end": end, "text": text[start:end],
                "tokens": sum(len(r["token_id"]) if isinstance(r["token_id"], list) else 1 for r in group),
                "logprob": logprob, "surprisal_bits": None if logprob is None else -logprob / LN2}
        known = [r["logprob"] is not None for r in group]
        if compare:
            logprob_b = total([r["logprob_b"] for r in group])
            word.update(logprob_b=logprob_b, delta=None if logprob is None or logprob_b is None else logprob_b - logprob)
            known += [r["logprob_b"] is not None for r in group]
        note = "" if all(known) else NO_PREDICTION if not any(known) else PARTIAL_SUM
        word.update(full_context=all(r["full_context"] for r in group), note=note)
        out.append(word)
    return out
