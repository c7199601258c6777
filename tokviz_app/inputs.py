"""Checks on text that users send (pure Python, no NiceGUI, no torch)."""

from __future__ import annotations


def clean_prompt(text: str | None) -> tuple[str, int]:
    """(text that encodes as UTF-8, number of characters replaced).

    A browser can send unpaired UTF-16 surrogates (half an emoji from a broken paste, or a crafted
    message). Tokenizers reject them, so each becomes U+FFFD; proper surrogate pairs are joined.
    Everything else, control characters included, is kept as typed: tokens show them visibly.
    """
    text = text or ""
    try:
        text.encode("utf-8")
        return text, 0
    except UnicodeEncodeError:
        pass
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    replaced = sum(1 for c in fixed if c == "\ufffd") - text.count("\ufffd")
    return fixed, max(0, replaced)
