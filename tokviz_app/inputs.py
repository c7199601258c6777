"""Checks on text that users send (pure Python, no NiceGUI, no torch)."""

from __future__ import annotations

import math
import re


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


SEED_MODULUS = 2**63  # torch's generator takes at most 64 bits; 63 keep every seed a positive int64


def parse_seed(value: object) -> tuple[int | None, str]:
    """(seed to use or None for random, a note for the user or "").

    The page's number box sends floats, so a 20-digit seed arrives rounded (and torch refuses more
    than 64 bits): such a seed is reduced modulo 2^63 and the note says which seed is used.
    Raises ValueError with a sentence for values that are not numbers (inf, nan, text).
    """
    if value is None or value == "":
        return None, ""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("The seed must be a whole number (or blank for a random seed).")
    try:
        number = float(value) if not isinstance(value, int) else value
    except ValueError:
        raise ValueError("The seed must be a whole number (or blank for a random seed).") from None
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"The seed must be a whole number, not {value} (leave it blank for a random seed).")
        number = int(number)
    if 0 <= number < SEED_MODULUS:
        return number, ""
    seed = number % SEED_MODULUS
    return seed, f"The seed {number} is outside 0 … 2^63−1; using {seed} (the seed modulo 2^63)."


def parse_max_tokens(value: object, default: int, limit: int) -> tuple[int, str]:
    """(number of tokens to generate, a note for the user or ""). Blank means `default`; more than
    `limit` is capped with a note. Raises ValueError with a sentence for inf, nan and text."""
    if value is None or value == "":
        return default, ""
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"Max new tokens must be a whole number from 1 to {limit}, not {value}.")
        number = int(number)
    if number > limit:
        return limit, f"At most {limit} new tokens per generation on this server; generating {limit}."
    return max(1, number), ""


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/:-])(?:~|[A-Za-z]:)?/[^\s'\"`()<>\[\]{},;]*")


def public_message(message: str, typed: str, resolved: str | None = None) -> str:
    """`message` fit for the page: the server's absolute path of a typed model becomes the name the user
    typed, and any other absolute path (caches, home folders) becomes "…"; the page never learns where
    things live on the server beyond what the user typed."""
    if resolved and resolved != typed:
        message = message.replace(resolved, typed)

    def hide(match: re.Match) -> str:
        path = match.group(0)
        tail = path[len(path.rstrip(".:")):]  # sentence punctuation after the path stays
        path = path[:len(path) - len(tail)]
        if typed and (path == typed or path.startswith(typed.rstrip("/") + "/")):
            return path + tail
        return "…" + tail

    return _ABSOLUTE_PATH.sub(hide, message)


MAX_TEMPERATURE = 5.0  # the temperature box's upper limit


def _finite(value: object) -> float | None:
    """A number the widgets may send (int, float, or "nan"/"inf" kept as text), None when blank or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _g(value: float) -> str:
    return format(value, "g")


def sampling_notes(temperature: object, top_k: object, top_p: object, min_p: object = 0.0, typical_p: object = 1.0,
                   repetition_penalty: object = 1.0, *, greedy: bool = False) -> list[str]:
    """One sentence per sampling value that is not used as entered, saying what is used instead (the page's
    settings are clamped the way `ui/state.py: clamped` does): blank or non-numbers take the default,
    temperature below 0 means greedy and above MAX_TEMPERATURE is MAX_TEMPERATURE, top-k is a whole number
    from 0 (off), top-p is in (0, 1], min-p in [0, 1], typical-p in (0, 1] (else off), the repetition penalty
    above 0 (else off). Temperature 0 (greedy) and top-p 1 (no cut) are ordinary choices. With `greedy` only
    the repetition penalty matters (greedy takes the most likely token after it)."""
    notes = [] if greedy else _cut_notes(temperature, top_k, top_p, min_p, typical_p)
    r = _finite(repetition_penalty)
    if r is None:
        notes.append(f"The repetition penalty {_blank_or(repetition_penalty)}; using 1 (off).")
    elif r <= 0:
        notes.append(f"A repetition penalty of {_g(r)} is not allowed (it must be above 0); using 1 (off).")
    return notes


def _cut_notes(temperature: object, top_k: object, top_p: object, min_p: object, typical_p: object) -> list[str]:
    notes = []
    t = _finite(temperature)
    if t is None:
        notes.append(f"Temperature {_blank_or(temperature)}; using 1.")
    elif t < 0:
        notes.append(f"Temperature {_g(t)} is below 0; generating greedily (always the most likely token).")
    elif t > MAX_TEMPERATURE:
        notes.append(f"Temperature {_g(t)} is above {_g(MAX_TEMPERATURE)}; using {_g(MAX_TEMPERATURE)}.")
    k = _finite(top_k)
    if k is None:
        notes.append(f"Top-k {_blank_or(top_k)}; using 0 (off).")
    elif k < 0:
        notes.append(f"Top-k {_g(k)} is below 0; using 0 (off).")
    elif k != int(k):
        notes.append(f"Top-k {_g(k)} is not a whole number; using {int(k)}.")
    p = _finite(top_p)
    if p is None:
        notes.append(f"Top-p {_blank_or(top_p)}; using 1 (no cut).")
    elif p == 0:
        notes.append("Top-p 0 would keep no tokens; using 1 (no cut).")
    elif p < 0:
        notes.append(f"Top-p {_g(p)} is below 0; using 0.000001 (only the most likely token).")
    elif p > 1:
        notes.append(f"Top-p {_g(p)} is above 1; using 1.")
    # (label, value, what blank means, lowest allowed and whether it is allowed itself, note below, note above)
    for label, raw, off, low, low_ok, below, above in (
            ("Min-p", min_p, "0 (off)", 0, True, "is below 0; using 0 (off)",
             "is above 1; using 1 (only the most likely tokens)"),
            ("Typical-p", typical_p, "1 (off)", 0, False, "would keep no tokens; using 1 (off)",
             "is above 1; using 1 (off)")):
        value = _finite(raw)
        if value is None:
            notes.append(f"{label} {_blank_or(raw)}; using {off}.")
        elif value < low or (value == low and not low_ok):
            notes.append(f"{label} {_g(value)} {below}.")
        elif value > 1:
            notes.append(f"{label} {_g(value)} {above}.")
    return notes


def _blank_or(value: object) -> str:
    """"is blank" or "<value> is not a number", the start of a note."""
    return "is blank" if value is None or value == "" else f"{value} is not a number"
