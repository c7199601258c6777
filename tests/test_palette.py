"""The colour-blind palette, checked numerically: its five levels stay apart under each common colour-vision
deficiency (simulated), for the chip backgrounds and for the accents (underlines, bars, swatch borders).

Simulation: Machado, Oliveira & Fernandes (2009), "A Physiologically-based Model for Simulation of Color
Vision Deficiency", severity 1.0 (dichromacy: the strongest case), applied to linear sRGB. Distance: CIEDE2000
in CIELAB (D65), the CIE's current colour-difference formula; CIE76 (plain Lab distance) is reported too.

The threshold, ΔE2000 ≥ 10: about 1 is a just-noticeable difference between two large patches side by side,
and 2–3 is still "the same colour" to most people at a glance. Token chips are small, spread over a paragraph
and never next to a reference, so a level must be recognisable on its own: we ask for about five times the
glance threshold. The default palette is reported (run with -s); under dichromacy it falls far short.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tokviz_app.present.scales import DIVERGING, LEVELS, PALETTES

MACHADO = {
    "normal": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779],
                            [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
WHITE = SRGB_TO_XYZ @ np.ones(3)  # D65
MIN_DE2000 = 10.0
TEXT = "#111111"  # chips' text (dark mode forces it; light mode's is darker still)


def linear_rgb(hex_colour: str) -> np.ndarray:
    c = np.array([int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def lab(rgb_linear: np.ndarray) -> np.ndarray:
    xyz = (SRGB_TO_XYZ @ rgb_linear) / WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def seen(hex_colour: str, vision: str) -> np.ndarray:
    """The colour's Lab as a person with `vision` sees it (Machado 2009 on linear RGB, clipped to the gamut)."""
    return lab(np.clip(MACHADO[vision] @ linear_rgb(hex_colour), 0, 1))


def de76(lab1: np.ndarray, lab2: np.ndarray) -> float:
    return float(np.linalg.norm(lab1 - lab2))


def de2000(lab1: np.ndarray, lab2: np.ndarray) -> float:
    """CIEDE2000 (Sharma, Wu & Dalal 2005), kL = kC = kH = 1."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    h1, h2 = np.degrees(np.arctan2(b1, a1)) % 360, np.degrees(np.arctan2(b2, a2)) % 360
    dh = 0.0 if c1 * c2 == 0 else (h2 - h1 + 180) % 360 - 180
    d_l, d_c, d_h = l2 - l1, c2 - c1, 2 * np.sqrt(c1 * c2) * np.sin(np.radians(dh / 2))
    l_mean, c_mean = (l1 + l2) / 2, (c1 + c2) / 2
    if c1 * c2 == 0:
        h_mean = h1 + h2
    elif abs(h1 - h2) <= 180:
        h_mean = (h1 + h2) / 2
    else:
        h_mean = (h1 + h2 + 360) / 2 if h1 + h2 < 360 else (h1 + h2 - 360) / 2
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_mean, 1 + 0.015 * c_mean * t
    r_t = (-np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
           * 2 * np.sqrt(c_mean ** 7 / (c_mean ** 7 + 25 ** 7)))
    return float(np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h)))


def closest_pair(palette: str, part: int, vision: str, distance=de2000, names=LEVELS) -> float:
    """The smallest distance between two of the five levels' colours (part 0: backgrounds, 1: accents); `names`:
    the ordered levels (LEVELS) or the comparison's diverging scale (DIVERGING)."""
    colours = [seen(PALETTES[palette][name][part], vision) for name in names]
    return min(distance(a, b) for a, b in itertools.combinations(colours, 2))


def contrast(hex1: str, hex2: str) -> float:
    """WCAG 2 contrast ratio."""
    y1, y2 = sorted((float((SRGB_TO_XYZ @ linear_rgb(h))[1]) for h in (hex1, hex2)))
    return (y2 + 0.05) / (y1 + 0.05)


def test_ciede2000_matches_the_published_test_data() -> None:
    """Sharma, Wu & Dalal (2005), table 1: pairs 1, 7, 17 and 25 (a hue wrap, a grey, a large difference)."""
    pairs = [((50, 2.6772, -79.7751), (50, 0, -82.7485), 2.0425), ((50, 0, 0), (50, -1, 2), 2.3669),
             ((50, 2.5, 0), (73, 25, -18), 27.1492),
             ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644)]
    for lab1, lab2, expected in pairs:
        assert de2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)


def test_simulation_keeps_greys_and_confuses_what_it_should() -> None:
    """Sanity of the matrices: greys unchanged; red and green collapse for deuteranopes, not for tritanopes."""
    for vision in MACHADO:
        assert de76(seen("#808080", vision), seen("#808080", "normal")) < 0.5
    red, green = "#d62728", "#2ca02c"
    assert de2000(seen(red, "normal"), seen(green, "normal")) > 50
    assert de2000(seen(red, "deuteranopia"), seen(green, "deuteranopia")) < 20
    assert de2000(seen(red, "tritanopia"), seen(green, "tritanopia")) > 40


@pytest.mark.parametrize("vision", list(MACHADO))
@pytest.mark.parametrize("part", [0, 1], ids=["background", "accent"])
def test_colorblind_levels_stay_apart(vision: str, part: int) -> None:
    assert closest_pair("colorblind", part, vision) >= MIN_DE2000


@pytest.mark.parametrize("vision", list(MACHADO))
@pytest.mark.parametrize("part", [0, 1], ids=["background", "accent"])
def test_colorblind_diverging_levels_stay_apart(vision: str, part: int) -> None:
    """The Δ scale of a comparison: orange … white … blue, two hues no dichromacy confuses."""
    assert closest_pair("colorblind", part, vision, names=DIVERGING) >= MIN_DE2000


def test_colorblind_backgrounds_keep_text_readable() -> None:
    """Dark text on every chip background at WCAG AA (4.5:1) at least."""
    for name in (*LEVELS, *DIVERGING, "none"):
        assert contrast(PALETTES["colorblind"][name][0], TEXT) >= 4.5, name


def test_report_both_palettes(capsys) -> None:
    """The numbers, for the record (pytest -s): the default palette is not made for colour-blind eyes."""
    with capsys.disabled():
        for palette in PALETTES:
            for part, what in ((0, "background"), (1, "accent")):
                cells = [f"{vision} {closest_pair(palette, part, vision):.1f} / "
                         f"{closest_pair(palette, part, vision, de76):.1f}" for vision in MACHADO]
                print(f"\n{palette} {what}: closest pair ΔE2000 / ΔE76: " + ", ".join(cells), end="")
        print()
    assert closest_pair("default", 1, "normal") >= MIN_DE2000  # with normal colour vision the default works
