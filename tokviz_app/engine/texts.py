"""Readable, honest text for single tokens.

Byte-level BPE tokens can hold part of a UTF-8 character (an emoji split in two).
We recover each token's raw bytes, decode what is valid, and show the rest as a
byte marker like ‹F0 9F›, flagging the token as partial.
"""

from __future__ import annotations

import codecs
import re
from functools import lru_cache

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_marker(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start : error.end]
    return "‹" + " ".join(f"{b:02X}" for b in bad) + "›", error.end


codecs.register_error("tokviz-bytes", _byte_marker)


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (byte-level BPE alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, codes)}


def _is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in repr(decoder)


class TokenTexts:
    """Maps token ids to (raw bytes, readable text, partial flag), memoised per id."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer = tokenizer
        self._byte_level = _is_byte_level(tokenizer)
        self._special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self._memo: dict[int, tuple[str, bool]] = {}

    def raw_bytes(self, token_id: int) -> bytes:
        tok = self._tokenizer
        if token_id not in self._special:
            piece = tok.convert_ids_to_tokens(token_id)
            if isinstance(piece, str):
                if self._byte_level:
                    table = _unicode_to_byte()
                    if piece and all(ch in table for ch in piece):
                        return bytes(table[ch] for ch in piece)
                match = _BYTE_FALLBACK.match(piece)
                if match:  # SentencePiece byte fallback
                    return bytes([int(match.group(1), 16)])
                if not self._byte_level and "▁" in piece:  # SentencePiece word boundary = space
                    return piece.replace("▁", " ").encode("utf-8")
        return tok.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False).encode("utf-8")

    def text(self, token_id: int) -> tuple[str, bool]:
        """(readable text, partial): whitespace is kept as is; invalid bytes become ‹XX›."""
        cached = self._memo.get(token_id)
        if cached is None:
            raw = self.raw_bytes(token_id)
            try:
                cached = (raw.decode("utf-8"), False)
            except UnicodeDecodeError:
                cached = (raw.decode("utf-8", errors="tokviz-bytes"), True)
            self._memo[token_id] = cached
        return cached


def prompt_ids(encode, prompt: str, bos_token_id: int | None) -> tuple[list[int], bool]:
    """(ids, bos_added): the prompt's token ids; an empty prompt starts from the BOS token."""
    from ..core.errors import TokvizError

    ids = encode(prompt) if prompt else []
    if ids:
        return ids, False
    if bos_token_id is None:
        raise TokvizError("The prompt is empty and this model has no beginning-of-text token to start from.")
    return [bos_token_id], True


def search_vocabulary(texts: list[str], query: str, limit: int) -> list[tuple[int, str]]:
    """(token_id, text) whose readable text matches `query`: exact first, then prefixes (shortest
    first), then substrings. Surrounding whitespace in the query is optional."""
    if not query:
        return []
    exact, prefix, inner = [], [], []
    stripped = query.strip()
    for token_id, text in enumerate(texts):
        if text == query or (stripped and text.strip() == stripped):
            exact.append((token_id, text))
        elif text.startswith(query) or (stripped and text.strip().startswith(stripped)):
            prefix.append((token_id, text))
        elif query in text:
            inner.append((token_id, text))
    return (exact + sorted(prefix, key=lambda t: len(t[1])) + inner)[:limit]
