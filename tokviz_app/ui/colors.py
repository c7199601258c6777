"""Probability buckets shared by token chips, the legend and the details panel."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    name: str  # css suffix: tv-p-<name>
    label: str  # legend text
    low: float  # inclusive lower bound of the probability


BUCKETS: tuple[Bucket, ...] = (
    Bucket("green", "> 70%", 0.70),
    Bucket("blue", "50–70%", 0.50),
    Bucket("purple", "30–50%", 0.30),
    Bucket("orange", "10–30%", 0.10),
    Bucket("red", "< 10%", 0.0),
)


def bucket_for(prob: float | None) -> Bucket | None:
    """green > 70%, blue 50–70%, purple 30–50%, orange 10–30%, red < 10%; None when unknown."""
    if prob is None:
        return None
    if prob > 0.70:
        return BUCKETS[0]
    for bucket in BUCKETS[1:]:
        if prob >= bucket.low:
            return bucket
    return BUCKETS[-1]


def prob_class(prob: float | None) -> str:
    bucket = bucket_for(prob)
    return f"tv-p-{bucket.name}" if bucket else "tv-p-none"


# ------------------------------------------------------------------------------------------- colour modes
# Every mode maps a token to one of the five levels (best first), shown with the same five colours.
# Pure Python (no NiceGUI): shared with the self-contained HTML export.
LEVELS = tuple(b.name for b in BUCKETS)  # green, blue, purple, orange, red
MODES: dict[str, str] = {"prob": "Probability", "rank": "Rank", "entropy": "Entropy", "surprisal": "Surprisal"}
MODE_PREFIX = {"prob": "p", "rank": "r", "entropy": "e", "surprisal": "s"}
MODE_LABELS: dict[str, tuple[str, ...]] = {
    "prob": tuple(b.label for b in BUCKETS),
    "rank": ("top-1", "top-10", "top-100", "top-1000", "beyond"),
    "entropy": ("< 0.5 bits (sure)", "0.5–1.5 bits", "1.5–3 bits", "3–5 bits", "> 5 bits (unsure)"),
    "surprisal": ("< 1 bit", "1–3 bits", "3–6 bits", "6–10 bits", "> 10 bits"),
}
_UPPER = {  # exclusive upper bounds of levels 0..3 (level 4 is everything above)
    "rank": (2, 11, 101, 1001),
    "entropy": (0.5, 1.5, 3.0, 5.0),
    "surprisal": (1.0, 3.0, 6.0, 10.0),
}


def level(step, mode: str) -> str | None:
    """The colour level ("green" … "red") of a TokenStep in a colour mode; None when unknown."""
    if mode == "prob":
        bucket = bucket_for(step.prob)
        return bucket.name if bucket else None
    value = {"rank": step.rank, "entropy": step.entropy, "surprisal": step.surprisal}[mode]
    if value is None:
        return None
    for i, upper in enumerate(_UPPER[mode]):
        if value < upper:
            return LEVELS[i]
    return LEVELS[-1]


def mode_class(step, mode: str) -> str:
    return f"tv-{MODE_PREFIX[mode]}-{level(step, mode) or 'none'}"


def step_classes(step) -> str:
    """One class per colour mode (tv-p-*, tv-r-*, tv-e-*, tv-s-*): switching modes is one class on the container."""
    return " ".join(mode_class(step, mode) for mode in MODES)


# (background, accent) per level; "colorblind" follows the Okabe–Ito palette (blue → vermillion)
PALETTES: dict[str, dict[str, tuple[str, str]]] = {
    "default": {"green": ("#c6efc9", "#2e7d32"), "blue": ("#cfe3fb", "#1565c0"), "purple": ("#e5d4f7", "#6a1b9a"),
                "orange": ("#ffe0b8", "#e65100"), "red": ("#fbd0d0", "#c62828"), "none": ("#eceff1", "#90a4ae")},
    "colorblind": {"green": ("#c5e3f6", "#0072b2"), "blue": ("#d6eef9", "#56b4e9"), "purple": ("#f7f2b8", "#a89a00"),
                   "orange": ("#fde3b0", "#e69f00"), "red": ("#f6cdb3", "#d55e00"), "none": ("#eceff1", "#90a4ae")},
}


def palette_vars(palette: str) -> str:
    return " ".join(f"--tv-{name}: {bg}; --tv-{name}-b: {accent};" for name, (bg, accent) in PALETTES[palette].items())


def mode_css() -> str:
    """CSS: the colour-blind palette (body.tv-cb) and one rule per mode and level inside the token text."""
    rules = [f"body.tv-cb {{ {palette_vars('colorblind')} }}"]
    for mode, prefix in MODE_PREFIX.items():
        for name in (*LEVELS, "none"):
            rules.append(f".tv-mode-{mode} .tv-{prefix}-{name} {{ background: var(--tv-{name}) !important; "
                         f"border-bottom-color: var(--tv-{name}-b) !important; }}")
            rules.append(f".tv-mode-{mode} .tv-prompt-token.tv-{prefix}-{name} {{ "
                         f"border-color: var(--tv-{name}-b) !important; }}")
    return "\n".join(rules)
