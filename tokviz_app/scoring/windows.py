"""Sliding windows over a text longer than the model's context (pure Python).

Every window starts with the same prefix (the model's beginning-of-text token, and a context text where one
is given), then `room` tokens of the text. Window k starts at token k * stride of the text; it scores only
the tokens the windows before it did not reach, so every token is scored once, and each token after the
first window sees at least `room - stride` tokens of text before it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    doc: int  # which text
    first: int  # index (in the text's tokens) of the window's first text token
    score_from: int  # tokens [score_from, score_to) of the text are scored by this window
    score_to: int
    ids: tuple[int, ...]  # prefix + text tokens [first, score_to)
    prefix_len: int

    def position(self, token: int) -> int:
        """Where text token `token` sits in `ids` (its prediction comes from the position before)."""
        return self.prefix_len + token - self.first


def plan(doc: int, ids: list[int], prefix: list[int], context: int | None, stride: int | None) -> list[Window]:
    """The windows that score every token of `ids` (token 0 only where `prefix` is not empty)."""
    if not ids:
        return []
    room = len(ids) if context is None else context - len(prefix)
    if room < 2:
        raise ValueError(f"The context of {context} tokens leaves no room for the text after its "
                         f"{len(prefix)} prefix tokens.")
    step = check_stride(stride, room, bool(prefix))
    windows, start, done = [], 0, 0
    while done < len(ids):
        end = min(start + room, len(ids))
        windows.append(Window(doc, start, done, end, tuple(prefix + ids[start:end]), len(prefix)))
        done = end
        start += step
    return windows


def default_stride(room: int) -> int:
    """Half the window: every token after the first window sees at least half a window of text."""
    return max(1, room // 2)


def check_stride(stride: int | None, room: int, has_prefix: bool) -> int:
    """The stride to use; without a prefix a window's first token has nothing before it, so the stride
    must leave at least one token of overlap."""
    if stride is None:
        return default_stride(room)
    largest = room if has_prefix else room - 1
    if not 1 <= stride <= largest:
        raise ValueError(f"The stride must be between 1 and {largest} tokens for this model "
                         f"(a window holds {room} tokens of text).")
    return stride
