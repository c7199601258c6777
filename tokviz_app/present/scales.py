"""Colour modes: ONE table (SCALES) and everything derived from it.

Every mode maps a token to one of five levels, best first, drawn with the same five colours ("none" when
unknown). The level names (green … red) are internal: they name the default palette's colours and the CSS
classes; the legend names the bands by what they mean ("> 70%"), since the colour-blind palette has other hues.
A two-sided scale (the comparison's Δ) names its own five palette entries (`Scale.colours`: DIVERGING).

Adding a colour mode is one new `Scale` record in SCALES, nothing else: the mode select
(MODES), the chip classes, the legend, the chart (when `axis` is set), the page CSS (`mode_css`) and the HTML
export (`export_css`) all follow from the table.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .text import number, surprisal

if TYPE_CHECKING:
    from ..core.types import TokenStep

LEVELS = ("green", "blue", "purple", "orange", "red")  # best first
# the comparison's diverging scale (log p_B − log p_A): B finds the token much less likely … much more likely
DIVERGING = ("down2", "down1", "same", "up1", "up2")
_COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "rest": lambda value, bound: True}


@dataclass(frozen=True)
class Band:
    """The values of one level: those that pass `value <op> bound`; "rest" takes whatever is left."""

    op: str
    bound: float = 0.0

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.bound)


def over(bound: float) -> Band:
    return Band(">", bound)


def at_least(bound: float) -> Band:
    return Band(">=", bound)


def under(bound: float) -> Band:
    return Band("<", bound)


def at_most(bound: float) -> Band:
    return Band("<=", bound)


REST = Band("rest")


@dataclass(frozen=True)
class Scale:
    """One colour mode. `bands` and `labels`: one per level, best first (a value takes the first band it
    passes, so the last band is REST)."""

    key: str  # the mode's name and the container class tv-mode-<key>
    label: str  # shown in the mode select and as the legend title
    prefix: str  # chip classes tv-<prefix>-<level>
    read: Callable[[TokenStep], float | None]  # the per-token number it colours by
    bands: tuple[Band, ...]
    labels: tuple[str, ...]
    axis: str | None = None  # the chart's y-axis name; None keeps the mode out of the chart
    axis_max: float | None = None
    # the value is no TokenStep field but computed on demand by the page for the text on screen (`read` gives
    # None: new chips show "none" until then); the HTML export, which has only the snapshot, colours by
    # probability instead
    on_demand: bool = False
    colours: tuple[str, ...] = LEVELS  # the palette entry of each band (DIVERGING for a two-sided scale)


SCALES: tuple[Scale, ...] = (
    Scale("prob", "Probability", "p", lambda step: step.prob,
          (over(0.70), at_least(0.50), at_least(0.30), at_least(0.10), REST),
          ("> 70%", "50–70%", "30–50%", "10–30%", "< 10%"),
          axis="probability", axis_max=1),
    Scale("rank", "Rank", "r", lambda step: step.rank,
          (under(2), under(11), under(101), under(1001), REST),
          ("top-1", "top-10", "top-100", "top-1000", "beyond")),
    Scale("entropy", "Entropy", "e", lambda step: step.entropy,
          (under(0.5), under(1.5), under(3.0), under(5.0), REST),
          ("< 0.5 bits (sure)", "0.5–1.5 bits", "1.5–3 bits", "3–5 bits", "> 5 bits (unsure)"),
          axis="entropy (bits)"),
    Scale("surprisal", "Surprisal", "s", surprisal,
          (under(1.0), under(3.0), under(6.0), under(10.0), REST),
          ("< 1 bit", "1–3 bits", "3–6 bits", "6–10 bits", "> 10 bits"),
          axis="surprisal (bits)"),
    # the share of the model's depth at which the token became the top-1 and stayed it (`decided_value`); the
    # logit lens settles late (SmolLM2: 108 of 241 top-1 tokens only at the output), so the bands favour the end
    Scale("decided", "Decided at layer", "d", lambda step: None,
          (at_most(0.5), at_most(0.8), under(1.0), at_most(1.0), REST),
          ("in the first half of the layers", "50–80% of the depth", "later, before the output",
           "only at the output", "never: not the model's top-1"),
          on_demand=True),
    # the distribution the token was drawn from: after temperature, penalty and the cuts (the chart draws it as a
    # second line under "probability")
    Scale("sampled", "Probability after sampling", "q", lambda step: step.sampled_prob,
          (over(0.70), at_least(0.50), at_least(0.30), at_least(0.10), REST),
          ("> 70%", "50–70%", "30–50%", "10–30%", "< 10%")),
    # a comparison (ui/flows/compare.py): log p_B − log p_A in bits, per token or per aligned span (`present/compare`)
    Scale("delta", "Δ log p (B − A)", "x", lambda step: None,
          (at_most(-2.0), under(-0.5), at_most(0.5), under(2.0), REST),
          ("≤ −2 bits (B: far less likely)", "−2 to −0.5 bits", "within ±0.5 bits", "0.5 to 2 bits",
           "≥ 2 bits (B: far more likely)"),
          on_demand=True, colours=DIVERGING),
    # what-if replay (ui/flows/what_if.py): each shown token's probability under the What if panel's settings;
    # a token they make impossible is also struck through (tv-whatif-zero)
    Scale("whatif", "What-if probability", "w", lambda step: None,
          (over(0.70), at_least(0.50), at_least(0.30), at_least(0.10), REST),
          ("> 70%", "50–70%", "30–50%", "10–30%", "< 10% (struck through: impossible)"),
          on_demand=True),
)
DECIDED = "decided"
WHAT_IF = "whatif"
DELTA = "delta"
SCALE: dict[str, Scale] = {scale.key: scale for scale in SCALES}
MODES: dict[str, str] = {scale.key: scale.label for scale in SCALES}  # key → label, for the mode select
CHART_METRICS: dict[str, str] = {scale.key: scale.axis for scale in SCALES if scale.axis}


# ------------------------------------------------------------------------------------------ levels and classes
def level_of_value(value, mode: str) -> str | None:
    """The level ("green" … "red") of a number in a mode; None when unknown or not a number (untrusted imports)."""
    value = number(value)
    if value is None:
        return None
    return next((name for name, band in zip(SCALE[mode].colours, SCALE[mode].bands) if band.holds(value)), None)


def decided_value(layer: int | None, layers: int) -> float:
    """The "decided" mode's value: the share of the depth (layer 0 = embeddings … `layers`); never is infinite."""
    return float("inf") if layer is None else layer / max(1, layers)


def value_class(value, mode: str) -> str:
    """The chip class of a value computed for an on-demand mode."""
    return f"tv-{SCALE[mode].prefix}-{level_of_value(value, mode) or 'none'}"


def level(step: TokenStep, mode: str) -> str | None:
    """The level ("green" … "red") of a TokenStep in a colour mode; None when unknown."""
    return level_of_value(SCALE[mode].read(step), mode)


def mode_class(step: TokenStep, mode: str) -> str:
    return value_class(SCALE[mode].read(step), mode)


def step_classes(step: TokenStep) -> str:
    """One class per colour mode (tv-p-*, tv-r-*, …): switching modes is one class on the container."""
    return " ".join(mode_class(step, mode) for mode in SCALE)


def level_class(name: str) -> str:
    """A level's plain colour (swatches, the details chip, bars): the probability classes double as it."""
    return f"tv-p-{name}"


def prob_class(prob) -> str:
    return level_class(level_of_value(prob, "prob") or "none")


def metric_value(step: TokenStep, mode: str) -> float | None:
    """The chart's y value for a token: the mode's number, rounded; None when unknown."""
    value = number(SCALE[mode].read(step))
    return None if value is None else round(float(value), 6)


def legend_entries(mode: str) -> list[tuple[str, str]]:
    """(level, text) for the legend of a mode: the bands by meaning, never by colour (palettes differ)."""
    return list(zip(SCALE[mode].colours, SCALE[mode].labels))


# ------------------------------------------------------------------------------------------------------- CSS
# (background, accent) per level. "colorblind" is an ordered ramp, lightness falling in even steps from the
# best level to the worst (backgrounds L* 96 → 56, accents L* 72 → 26) while the hue turns from yellow through
# green, teal and blue to purple, as viridis does: lightness alone keeps the five apart for every kind of
# colour vision, the hues add to it. tests/test_palette.py simulates protanopia, deuteranopia and tritanopia
# and checks every pair stays at least ΔE2000 10 apart (the default palette's numbers are reported there).
# DIVERGING: red … white … blue by default; orange … white … blue in the colour-blind palette (two hues that no
# dichromacy confuses, lightness falling from the centre on both sides; checked in tests/test_palette.py too).
PALETTES: dict[str, dict[str, tuple[str, str]]] = {
    "default": {"green": ("#c6efc9", "#2e7d32"), "blue": ("#cfe3fb", "#1565c0"), "purple": ("#e5d4f7", "#6a1b9a"),
                "orange": ("#ffe0b8", "#e65100"), "red": ("#fbd0d0", "#c62828"), "none": ("#eceff1", "#90a4ae"),
                "down2": ("#f2a3a3", "#c62828"), "down1": ("#fbd8d2", "#ef8a80"), "same": ("#ffffff", "#5f5f5f"),
                "up1": ("#d2e4f8", "#7fb3ea"), "up2": ("#9cc2ef", "#1565c0")},
    "colorblind": {"green": ("#fef2e2", "#d2ad05"), "blue": ("#a6e7a6", "#01a85e"), "purple": ("#3dced7", "#0b808f"),
                   "orange": ("#72a4dc", "#1e599a"), "red": ("#a777a1", "#5f2c4e"), "none": ("#eceff1", "#90a4ae"),
                   "down2": ("#e69a52", "#b35806"), "down1": ("#fbd3a6", "#e08214"), "same": ("#ffffff", "#5f5f5f"),
                   "up1": ("#b2d2ee", "#4393c3"), "up2": ("#6fa2d8", "#1f5fa8")},
}


def palette_vars(palette: str) -> str:
    """CSS variables --tv-<level> (background) and --tv-<level>-b (accent)."""
    return " ".join(f"--tv-{name}: {bg}; --tv-{name}-b: {accent};" for name, (bg, accent) in PALETTES[palette].items())


def _level_rules() -> list[str]:
    rules = [f".{level_class(name)} {{ background: var(--tv-{name}); border-color: var(--tv-{name}-b); }}"
             for name in (*LEVELS, *DIVERGING, "none")]
    for name in (*LEVELS, *DIVERGING):  # generated chips are underlined only; bars are filled with the accent
        rules.append(f".tv-token.{level_class(name)} {{ border-color: transparent; "
                     f"border-bottom-color: var(--tv-{name}-b); }}")
        rules.append(f".tv-alt-fill.{level_class(name)} {{ background: var(--tv-{name}-b); }}")
    return rules


def _mode_rules(modes) -> list[str]:
    """Inside a tv-mode-<key> container, the chips take the colour of that mode's class."""
    rules = []
    for mode in modes:
        prefix = SCALE[mode].prefix
        for name in (*SCALE[mode].colours, "none"):
            rules.append(f".tv-mode-{mode} .tv-{prefix}-{name} {{ background: var(--tv-{name}) !important; "
                         f"border-bottom-color: var(--tv-{name}-b) !important; }}")
            rules.append(f".tv-mode-{mode} .tv-prompt-token.tv-{prefix}-{name} {{ "
                         f"border-color: var(--tv-{name}-b) !important; }}")
    return rules


def mode_css() -> str:
    """The page's colour CSS: both palettes (body.tv-cb switches), the level classes and every mode's rules."""
    return "\n".join([f":root {{ {palette_vars('default')} }}", f"body.tv-cb {{ {palette_vars('colorblind')} }}",
                      *_level_rules(), *_mode_rules(SCALE)])


def export_css(mode: str, palette: str) -> str:
    """The HTML export's colour CSS: one palette and one mode, with the same rules as the page."""
    return "\n".join([f":root {{ {palette_vars(palette)} }}", *_level_rules(), *_mode_rules([mode])])
