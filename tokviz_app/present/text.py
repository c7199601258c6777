"""Token text and numbers as the page and the HTML export show them: one format everywhere.

Every function takes untrusted values (an imported snapshot may hold a string where a number belongs):
anything that is not a number is shown as its text, never an error.
"""

from __future__ import annotations

import math

_WHITESPACE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍", "\x7f": "␡"}
_CONTROL_PICTURES = {i: chr(0x2400 + i) for i in range(32)}  # ␀ ␁ … ␟ (U+2400 + code)
_VISIBLE = str.maketrans({**_CONTROL_PICTURES, **{ord(k): v for k, v in _WHITESPACE.items()}})
NO_VALUE = "–"


def number(value) -> float | int | None:
    """`value` when it is a real number (bool excluded: True is not a rank), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def visible_text(text: str) -> str:
    """Whitespace made visible: space ·, newline ↵, tab →, CR ␍, DEL ␡, other controls as their pictures
    (␀ ␛ …); the empty string as ∅."""
    text = str(text)
    return text.translate(_VISIBLE) if text else "∅"


def fmt(value, digits: int | None = None, suffix: str = "") -> str:
    """A number with `digits` decimals (all of them when None) and a suffix; None as "–"; other values as text."""
    if value is None:
        return NO_VALUE
    if number(value) is None or digits is None:
        return f"{value}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def percent(prob) -> str:
    """A probability in percent, with more digits as it gets small: 50.0%, 3.38%, 1.0e-07%."""
    if prob is None:
        return NO_VALUE
    if number(prob) is None:
        return str(prob)
    value = prob * 100
    if value >= 10 or value == 0:
        return f"{value:.1f}%"
    if value >= 0.01:
        return f"{value:.2f}%"
    return f"{value:.1e}%"


def surprisal(step) -> float | None:
    """-log2 p in bits, None when the log-prob is missing or not a number."""
    logprob = number(step.logprob)
    return None if logprob is None else -logprob / math.log(2)


def hover_text(step) -> str:
    """A token chip's title: its text, probability and rank."""
    parts = [repr(step.text)]
    if step.prob is None:
        parts.append("first token: no prediction")
    else:
        parts.append(f"probability {percent(step.prob)} · rank {step.rank}")
    if step.partial:
        parts.append("partial UTF-8 bytes")
    return "\n".join(parts)


def fmt_general(value) -> str:
    """A number in the shortest form (1, 0.5, 1e-05); other values as text."""
    return format(value, "g") if number(value) is not None else str(value)


def _sampling_text(sampling) -> str:
    if sampling.greedy:
        return "greedy"
    seed = f", seed={sampling.seed}" if sampling.seed is not None else ""
    return (f"T={fmt_general(sampling.temperature)}, top-k={sampling.top_k or 'off'}, "
            f"top-p={fmt_general(sampling.top_p)}{seed}")


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
        rows.append(("sampling", "sampling", _sampling_text(step.sampling)))
    return rows


_IN_HOVER = {"repr", "prob", "rank", "position", "partial"}  # already in hover_text (or a data attribute)


def detailed_hover_text(step, top: int = 5) -> str:
    """hover_text plus the details panel's other known fields and the top alternatives: the export's title
    (a static file has no details panel)."""
    lines = [hover_text(step)]
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


def count(n: int, noun: str) -> str:
    """"1 token", "2 tokens"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
