"""One scoring run: texts tokenized by each side, scored in groups of files, turned into rows.

A side is a model and the text every file is scored after (its prefix: the beginning-of-text token and a
context). `--compare` gives a second model, `--context-b` the same model after another context.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.contract import Model
from . import corpus, rows, words
from .align import token_pieces

GROUP_TOKENS = 8192  # tokens scored together before their files' rows are written (resume granularity)


@dataclass
class Side:
    model: Model
    prefix: list[int]
    ids: dict[str, list[int]] = field(default_factory=dict)  # file -> token ids
    decoded: dict[str, str] = field(default_factory=dict)  # file -> the ids decoded (the rows' text)


def side(model: Model, context: str | None, texts: dict[str, str]) -> Side:
    s = Side(model, corpus.prefix_ids(model, context))
    for name, text in texts.items():
        s.ids[name] = corpus.text_ids(model, text)
        s.decoded[name] = model.decode(s.ids[name]) if s.ids[name] else ""
    return s


@dataclass
class Job:
    a: Side
    b: Side | None
    words: bool
    stride: int | None = None
    batched: bool = True
    compare: str | None = field(init=False)  # None, "tokens" (the same tokens on both sides) or "spans"

    def __post_init__(self) -> None:
        same = self.b is not None and all(self.a.ids[f] == self.b.ids[f] for f in self.a.ids)
        self.compare = None if self.b is None else "tokens" if same else "spans"

    def columns(self) -> list[str]:
        return words.columns(self.b is not None) if self.words else rows.columns(self.compare)

    def expected_end(self, name: str) -> int:
        """Where a file's last row ends: the end of its text, or of its last word."""
        text = self.a.decoded[name]
        if not self.words:
            return len(text)
        found = list(words.WORD.finditer(text))
        return found[-1].end() if found else 0

    def mismatch(self, name: str) -> str | None:
        """Why the two sides cannot be aligned on this file (their tokenizers read it differently)."""
        if self.b is None or self.a.decoded[name] == self.b.decoded[name]:
            return None
        return "the two models' tokenizers do not give back the same text for it, so it cannot be aligned"

    def tokens(self, names: Sequence[str]) -> int:
        return sum(len(s.ids[n]) for s in self.sides for n in names)

    @property
    def sides(self) -> list[Side]:
        return [self.a] if self.b is None else [self.a, self.b]

    def groups(self, names: Sequence[str]) -> list[list[str]]:
        """Files in groups of about GROUP_TOKENS tokens (a long file is a group of its own)."""
        out: list[list[str]] = []
        size = 0
        for name in names:
            n = len(self.a.ids[name])
            if not out or size + n > GROUP_TOKENS:
                out.append([])
                size = 0
            out[-1].append(name)
            size += n
        return out

    def score_group(self, names: Sequence[str], progress: Callable[[int], None] | None = None) -> dict[str, list[dict]]:
        """The rows of each file of the group."""
        scored = []
        for s in self.sides:
            texts = [s.ids[n] for n in names]
            scored.append(corpus.score(s.model, texts, s.prefix, self.stride, batched=self.batched, progress=progress))
        out = {}
        for i, name in enumerate(names):
            a = self.a
            pieces = token_pieces(a.model.decode, a.ids[name])
            if self.b is None:
                found = rows.token_rows(name, a.ids[name], pieces, scored[0][i])
            elif self.compare == "tokens":
                found = rows.token_rows(name, a.ids[name], pieces, scored[0][i], scored[1][i])
            else:
                b = self.b
                found = rows.span_rows(name, a.ids[name], pieces, scored[0][i],
                                       b.ids[name], token_pieces(b.model.decode, b.ids[name]), scored[1][i])
            out[name] = words.word_rows(name, a.decoded[name], found, self.b is not None) if self.words else found
        return out
