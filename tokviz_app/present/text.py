"""Token text and numbers as the page and the HTML export show them: one format everywhere.

Every function takes untrusted values (an imported snapshot may hold a string where a number belongs):
anything that is not a number is shown as its text, never an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

_WHITESPACE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍", "\x7f": "␡"}
_CONTROL_PICTURES = {i: chr(0x2400 + i) for i in range(32)}  # ␀ ␁ … ␟ (U+2400 + code)
_VISIBLE = str.maketrans({**_CONTROL_PICTURES, **{ord(k): v for k, v in _WHITESPACE.items()}})
NO_VALUE = "–"


def number(value) -> float | int | None:
    """`value` when it is a real number (bool excluded: True is not a rank), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


# the engine's marker for bytes that are not UTF-8 on their own (engine/texts.py): ‹F0 9F›
_BYTE_MARKER = re.compile(r"‹([0-9A-F]{2}(?: [0-9A-F]{2})*)›")


def visible_text(text: str) -> str:
    """Whitespace made visible: space ·, newline ↵, tab →, CR ␍, DEL ␡, other controls as their pictures
    (␀ ␛ …); the empty string as ∅. The spaces inside a byte marker ‹F0 9F› stay plain spaces (they
    separate bytes, they are not text)."""
    text = str(text)
    if not text:
        return "∅"
    if "‹" not in text:
        return text.translate(_VISIBLE)
    parts = _BYTE_MARKER.split(text)  # plain, hex, plain, hex, …, plain
    return "".join(f"‹{part}›" if i % 2 else part.translate(_VISIBLE) for i, part in enumerate(parts))


def fmt(value, digits: int | None = None, suffix: str = "") -> str:
    """A number with `digits` decimals (all of them when None) and a suffix; None as "–"; other values as text."""
    if value is None:
        return NO_VALUE
    if number(value) is None or digits is None:
        return f"{value}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def percent(prob) -> str:
    """A probability in percent, the one format of the page, its menus and the HTML export.

    The rule: 0 is "0%" and 1 is "100%"; from 1% up, one decimal ("42.1%", "5.2%"; "> 99.9%" for a
    value below 1 that would round up to 100); under 1%, two decimals ("0.35%", "0.05%"); under 0.01%,
    "< 0.01%" (never a misleading "0.00%" or an exponent like "5.2e-04%"). None is "–"; anything that is
    not a finite number (an untrusted import) is shown as its text.
    """
    if prob is None:
        return NO_VALUE
    if number(prob) is None or not math.isfinite(prob):
        return str(prob)
    value = prob * 100
    if value in (0, 100):
        return f"{value:.0f}%"
    if 0 < value < 0.01:
        return "< 0.01%"
    if 99.95 <= value < 100:
        return "> 99.9%"
    if 0 < value < 0.995:  # 0.995 and up would read "1.00%": one decimal from there
        return f"{value:.2f}%"
    return f"{value:.1f}%"


def surprisal(step) -> float | None:
    """-log2 p in bits, None when the log-prob is missing or not a number."""
    logprob = number(step.logprob)
    return None if logprob is None else -logprob / math.log(2)


def hover_text(step, note: str = "") -> str:
    """A token chip's title: its text, probability and rank (and `note`, how its bytes join its neighbours')."""
    parts = [repr(step.text)]
    if step.prob is None:
        parts.append("first token: no prediction")
    else:
        parts.append(f"probability {percent(step.prob)} · rank {step.rank}")
    if step.partial:
        parts.append(note or "partial UTF-8 bytes")
    return "\n".join(parts)


def fmt_general(value) -> str:
    """A number in the shortest form (1, 0.5, 1e-05); other values as text."""
    return format(value, "g") if number(value) is not None else str(value)


def sampling_text(sampling) -> str:
    """Sampling settings in one line: 'T=0.8, top-k=off, top-p=0.9, seed=3' (the samplers that are on)."""
    if sampling.greedy:
        return "greedy"
    seed = f", seed={sampling.seed}" if sampling.seed is not None else ""
    more = "".join(f", {name}={fmt_general(value)}" for name, value, off in (  # the samplers of issue 14, where on
        ("min-p", sampling.min_p, 0.0), ("typical-p", sampling.typical_p, 1.0),
        ("repetition penalty", sampling.repetition_penalty, 1.0)) if value != off)
    return (f"T={fmt_general(sampling.temperature)}, top-k={sampling.top_k or 'off'}, "
            f"top-p={fmt_general(sampling.top_p)}{more}{seed}")


def details_rows(step) -> list[tuple[str, str, str]]:
    """The details panel's fields as (key, label, value): the panel shows all, the export's title most."""
    rows = [
        ("repr", "repr", repr(step.text)),
        ("id", "token id", str(step.token_id)),
        ("position", "position", str(step.position)),
        ("prob", "probability", percent(step.prob)),
        ("logprob", "log-prob", fmt(step.logprob, 4)),
        ("surprisal", "surprisal", fmt(surprisal(step), 2, " bits")),
        ("rank", "rank", fmt(step.rank)),
        ("entropy", "entropy", fmt(step.entropy, 2, " bits")),
        ("sampled", "p (sampling)", percent(step.sampled_prob)),
    ]
    if step.partial:
        rows.append(("partial", "bytes", "partial UTF-8 (joins with its neighbours)"))
    if step.sampling is not None:
        rows.append(("sampling", "sampling", sampling_text(step.sampling)))
    return rows


_IN_HOVER = {"repr", "prob", "rank", "position", "partial"}  # already in hover_text (or a data attribute)


def detailed_hover_text(step, top: int = 5, note: str = "") -> str:
    """hover_text plus the details panel's other known fields and the top alternatives: the export's title
    (a static file has no details panel)."""
    lines = [hover_text(step, note)]
    lines += [f"{label} {value}" for key, label, value in details_rows(step)
              if key not in _IN_HOVER and value != NO_VALUE]
    if step.alternatives:
        lines.append("top: " + ", ".join(f"{visible_text(a.text)} {percent(a.prob)}" for a in step.alternatives[:top]))
    return "\n".join(lines)


def perplexity_text(steps) -> str:
    """The line under the text: perplexity and total log-prob of the scored tokens ("" when none are)."""
    scored = [s.logprob for s in steps if number(s.logprob) is not None]
    if not scored:
        return ""
    total = sum(scored)
    return f"sequence perplexity {math.exp(-total / len(scored)):.3f} · log-prob {total:.2f} over {len(scored)} tokens"


def model_line(label: str | None, device: str | None, imported: str | None = None) -> str:
    """The line that names the model behind the shown tokens: "Model: GPT-2 · cpu"; for a read-only import
    (`imported`: the label of the model it was made with, not loaded here) that model, then the loaded one."""
    loaded = f"{label} · {device}" if label else ""
    if imported:
        return (f"Model: {imported} · read-only import (not loaded here)"
                + (f" · loaded: {loaded}" if loaded else ""))
    return f"Model: {loaded}" if loaded else "Model: none loaded yet"


def count(n: int, noun: str) -> str:
    """"1 token", "2 tokens"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def after_sampling(sampled) -> str:
    """The probability after the samplers, beside the raw one: "→ 30.1%" ("→ –" where a server cannot tell)."""
    return f"→ {percent(sampled)}"


def dropped_text(sampler) -> str:
    """Why an alternative has no probability after the samplers: "dropped by top-p"."""
    return "not the greedy pick" if sampler == "greedy" else f"dropped by {sampler}"


def kept_text(step) -> str:
    """The details' line on what the samplers left at a position: "kept 40 tokens holding 87.3% of the raw mass"."""
    if number(step.kept_count) is None or number(step.kept_mass) is None:
        return "" if step.prob is None else "How many tokens the samplers kept here is not known."
    return f"kept {step.kept_count:,} {'token' if step.kept_count == 1 else 'tokens'} holding " \
           f"{percent(step.kept_mass)} of the raw mass"


# ------------------------------------------------------------------------- characters split over byte tokens
CONTINUES = "◂"  # a chip whose bytes finish a character shown in the chip before it


@dataclass(frozen=True)
class ChipText:
    """What a token chip shows, and a note for its title on how its bytes join its neighbours' ("" if not)."""

    text: str
    note: str = ""


def token_bytes(text: str) -> bytes:
    """A token's bytes from its readable text: byte markers ‹F0 9F› back to bytes, the rest as UTF-8."""
    parts = _BYTE_MARKER.split(str(text))
    return b"".join(bytes.fromhex(part) if i % 2 else part.encode("utf-8", "surrogatepass")
                    for i, part in enumerate(parts))


def chip_texts(steps) -> list[ChipText]:
    """Each token's chip text. Where consecutive partial tokens hold the bytes of one character (an emoji
    split in two), the character is shown once, on the chip where it starts; a chip that holds only the
    rest of it shows ◂ (its own numbers stay on it); both chips' notes say "part 1 of 2 of “🙂”"."""
    shown = [ChipText(visible_text(step.text)) for step in steps]
    start = 0
    while start < len(steps):
        end = start
        while end < len(steps) and steps[end].partial:
            end += 1
        if end - start > 1:
            shown[start:end] = _join_run([str(step.text) for step in steps[start:end]], shown[start:end])
        start = end + 1
    return shown


def _char_length(data: bytes, i: int) -> int:
    """The length of the complete UTF-8 character at data[i], 0 when none starts there."""
    for n in range(1, 5):
        if i + n > len(data):
            return 0
        try:
            data[i:i + n].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return n  # valid sequences are prefix-free: the first that decodes is the character
    return 0


def _join_run(texts: list[str], plain: list[ChipText]) -> list[ChipText]:
    """Chip texts for one run of partial tokens; a chip no character crosses keeps its plain text."""
    data, owner = bytearray(), []
    for k, text in enumerate(texts):
        piece = token_bytes(text)
        data += piece
        owner += [k] * len(piece)
    pieces: list[list[tuple[str, str | bytes]]] = [[] for _ in texts]  # ("text" | "bytes" | "rest", …)
    notes: list[list[str]] = [[] for _ in texts]
    i = 0
    while i < len(data):
        n = _char_length(data, i)
        if n == 0:
            pieces[owner[i]].append(("bytes", data[i:i + 1]))
            i += 1
            continue
        char, chips = data[i:i + n].decode("utf-8"), sorted(set(owner[i:i + n]))
        pieces[chips[0]].append(("text", char))
        for part, k in enumerate(chips, 1):
            if len(chips) > 1:
                notes[k].append(f"part {part} of {len(chips)} of “{visible_text(char)}” (U+{ord(char):04X})")
            if part > 1 and (not pieces[k] or pieces[k][-1][0] != "rest"):
                pieces[k].append(("rest", ""))
        i += n
    return [ChipText(_render(chip), "; ".join(note)) if note else shown
            for chip, note, shown in zip(pieces, notes, plain)]


def _render(pieces: list[tuple[str, str | bytes]]) -> str:
    out, pending = [], bytearray()
    for kind, value in (*pieces, ("end", "")):
        if kind == "bytes":
            pending += value
            continue
        if pending:  # consecutive stray bytes as one marker, as the engine writes them
            out.append("‹" + " ".join(f"{b:02X}" for b in pending) + "›")
            pending = bytearray()
        out.append(CONTINUES if kind == "rest" else visible_text(value) if value else "")
    return "".join(out) or "∅"
