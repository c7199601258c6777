"""A session as one self-contained HTML file: coloured tokens with hover details, no server, no scripts.

Pure Python (no torch, no NiceGUI). Visible text, numbers, levels and the colour CSS come from `present/`, the
same functions the page uses, so the file shows the page's strings and colours; chips carry the page's classes.
Every value written into the page goes through `_e` (html.escape, quotes included), numbers too: an imported
snapshot is checked by the schema, but the page must stay inert even for a snapshot that was not.
"""

from __future__ import annotations

import html

from ..present.compare import delta_classes, hover_lines, summary
from ..present.scales import DELTA, MODES, SCALE, export_css, legend_entries, level_class, mode_class
from ..present.text import ChipText, chip_texts, detailed_hover_text, fmt, sampling_text
from .snapshot import SessionSnapshot

# Layout only, mirroring .tv-text / .tv-token / .tv-legend in assets/tokviz.css (colours: export_css).
_LAYOUT_CSS = (
    "body{font-family:system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#263238}"
    ".tv-text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:15px;line-height:1.9;"
    "white-space:pre-wrap;word-break:break-word;overflow-wrap:anywhere;background:#fff;padding:12px;"
    "border-radius:8px}"
    ".tv-token,.tv-prompt-token{display:inline-block;padding:0 3px;margin:1px 1px;border-radius:4px;"
    "border:1px solid transparent;border-bottom-width:2px;white-space:pre;line-height:1.45}"
    ".tv-prompt-token{opacity:.55;font-style:italic}"
    ".tv-partial{border-style:dashed;text-decoration:underline dotted}"
    ".tv-legend{display:flex;flex-wrap:wrap;gap:4px 14px;align-items:center;font-size:.85rem;margin:8px 0}"
    ".tv-legend-title{font-weight:600}.tv-legend-item{display:inline-flex;align-items:center;gap:5px}"
    ".tv-swatch{display:inline-block;width:14px;height:14px;border-radius:3px;border:1px solid}"
    "table{border-collapse:collapse;font-size:.9rem}td,th{padding:2px 10px;text-align:left}"
)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _chip(step, shown: ChipText, mode: str, *, prompt: bool, colour: str | None = None, more: str = "") -> str:
    """One token span (classes as on the page; .k/.g/.pr name chips for scripts and tests), then one <br>
    per newline in its text. No whitespace around it: inside pre-wrap text, whitespace would show.
    `colour`: a class computed by the page's present/ code (the Δ mode); `more`: lines for the hover."""
    classes = ["k", "pr tv-prompt-token" if prompt else "g tv-token", colour or mode_class(step, mode)]
    if step.partial:
        classes.append("tv-partial")
    attrs = f'data-prob="{_e(fmt(step.prob, 6)) if step.prob is not None else ""}"'
    if not prompt:
        attrs += f' data-position="{_e(step.position)}"'
    title = detailed_hover_text(step, note=shown.note) + (f"\n{more}" if more else "")
    return (f'<span class="{_e(" ".join(classes))}" {attrs} title="{_e(title)}">'
            f'{_e(shown.text)}</span>' + "<br>" * str(step.text).count("\n"))


def _legend(mode: str) -> str:
    items = "".join(f'<span class="tv-legend-item"><span class="tv-swatch {level_class(name)}"></span>'
                    f'{_e(text)}</span>' for name, text in legend_entries(mode))
    return f'<div class="tv-legend"><span class="tv-legend-title">{_e(MODES[mode])}:</span>{items}</div>'


def render_html(snapshot: SessionSnapshot, *, mode: str = "prob", palette: str = "default") -> str:
    branch = snapshot.branches[snapshot.active]
    steps = [*snapshot.prompt_tokens, *branch.tokens]
    compared = snapshot.compare.kept_for([s.token_id for s in steps]) if snapshot.compare is not None else None
    if SCALE[mode].on_demand and not (mode == DELTA and compared is not None):
        mode = "prob"  # its values are the page's, not the snapshot's
    colours = delta_classes(compared, steps) if mode == DELTA else [None] * len(steps)
    more, n = hover_lines(compared, steps), len(snapshot.prompt_tokens)
    label = _e(snapshot.model.get("label") or "")
    shown = [*chip_texts(snapshot.prompt_tokens), *chip_texts(branch.tokens)]
    chips = "".join(_chip(step, shown[i], mode, prompt=i < n, colour=colours[i], more=more[i])
                    for i, step in enumerate(steps))
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>tokviz – {label}</title>",
           f"<style>{_LAYOUT_CSS}\n{export_css(mode, palette)}</style></head><body>",
           (f"<h1>tokviz session</h1><p>Model: <b>{label}</b> · colour: {_e(MODES[mode])} · "
            f"branch {_e(branch.id)} of {len(snapshot.branches)}</p>"),
           f"<p>{_e(summary(compared, steps))}</p>" if compared is not None else "",
           _legend(mode),
           f'<div class="tv-text tv-mode-{_e(mode)}">{chips}</div>',
           ("<h2>Branches</h2><table><tr><th>branch</th><th>split at</th><th>tokens</th>"
            "<th>log-prob</th><th>perplexity</th></tr>")]
    for b in snapshot.branches:
        out.append(f"<tr><td>{_e(b.id)}{' (shown)' if b is branch else ''}</td><td>{_e(b.split)}</td>"
                   f"<td>{len(b.tokens)}</td><td>{_e(fmt(b.logprob, 3))}</td>"
                   f"<td>{_e(fmt(b.perplexity, 3))}</td></tr>")
    out.append(f"</table><p>Settings: {_e(sampling_text(snapshot.settings))}. "
               "Hover a token for its numbers.</p></body></html>")
    return "\n".join(out)
