"""A session as one self-contained HTML file: coloured tokens with hover details, no server, no scripts.

Pure Python (no torch, no NiceGUI); colours come from `ui/colors.py` so the file matches the page.
Every value written into the page goes through `_e` (html.escape, quotes included), numbers too: an imported
snapshot is checked by the schema, but the page must stay inert even for a snapshot that was not.
"""

from __future__ import annotations

import html

from .engine.export import SessionSnapshot
from .ui.colors import LEVELS, MODE_LABELS, MODES, PALETTES, level

_SPACE = {" ": "·", "\n": "↵", "\t": "→", "\r": "␍"}


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _num(value, spec: str) -> str:
    """A number in `spec` format; None as a dash; anything else as its (escaped-later) text, never an error."""
    if value is None:
        return "–"
    return format(value, spec) if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _visible(text: str) -> str:
    return "∅" if text == "" else "".join(_SPACE.get(ch, ch) for ch in str(text))


def _pct(prob: float | None) -> str:
    return "–" if prob is None else _num(prob * 100, ".2f") + "%" if isinstance(prob, (int, float)) else str(prob)


def _title(step) -> str:
    lines = [repr(step.text), f"token id {step.token_id}"]
    if step.prob is None:
        lines.append("first token: no prediction")
    else:
        surprisal = step.surprisal if isinstance(step.logprob, (int, float)) else None
        lines += [f"probability {_pct(step.prob)} (sampling {_pct(step.sampled_prob)})",
                  f"rank {_num(step.rank, '')}", f"log-prob {_num(step.logprob, '.4f')}",
                  f"surprisal {_num(surprisal, '.2f')} bits", f"entropy {_num(step.entropy, '.2f')} bits"]
        if step.alternatives:
            lines.append("top: " + ", ".join(f"{a.text!r} {_pct(a.prob)}" for a in step.alternatives[:5]))
    return "\n".join(lines)


def render_html(snapshot: SessionSnapshot, *, mode: str = "prob", palette: str = "default") -> str:
    colors = PALETTES[palette]
    branch = snapshot.branches[snapshot.active]
    css = ["body{font-family:system-ui,sans-serif;margin:24px;background:#f6f7f9;color:#263238}",
           ".t{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;line-height:1.9;white-space:pre-wrap;"
           "background:#fff;padding:12px;border-radius:8px}",
           ".k{display:inline-block;padding:0 3px;margin:1px;border-radius:4px;border-bottom:2px solid transparent;"
           "white-space:pre;line-height:1.45}",
           ".pr{opacity:.55;font-style:italic}", ".lg{display:flex;gap:14px;flex-wrap:wrap;margin:8px 0}",
           ".sw{display:inline-block;width:14px;height:14px;border-radius:3px;vertical-align:middle;margin-right:4px}",
           "table{border-collapse:collapse;font-size:.9rem}td,th{padding:2px 10px;text-align:left}"]
    for name, (bg, accent) in colors.items():
        css.append(f".c-{name}{{background:{bg};border-bottom-color:{accent}}}")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>tokviz – {_e(snapshot.model.get('label') or '')}</title>",
           f"<style>{''.join(css)}</style></head><body>",
           f"<h1>tokviz session</h1><p>Model: <b>{_e(snapshot.model.get('label') or '')}</b> · "
           f"colour: {_e(MODES[mode])} · branch {_e(branch.id)} of {len(snapshot.branches)}</p>",
           '<div class="lg">']
    for name, label in zip(LEVELS, MODE_LABELS[mode]):
        out.append(f'<span><span class="sw c-{_e(name)}"></span>{_e(label)}</span>')
    out.append('</div><div class="t">')
    for kind, steps in (("pr", snapshot.prompt_tokens), ("g", branch.tokens)):
        for step in steps:
            attrs = f'data-prob="{_e(_num(step.prob, ".6f")) if step.prob is not None else ""}"'
            if kind == "g":
                attrs += f' data-position="{_e(step.position)}"'
            out.append(f'<span class="k {kind} c-{_e(level(step, mode) or "none")}" {attrs} '
                       f'title="{_e(_title(step))}">{_e(_visible(step.text))}</span>'
                       + "<br>" * str(step.text).count("\n"))
    out.append("</div><h2>Branches</h2><table><tr><th>branch</th><th>split at</th><th>tokens</th>"
               "<th>log-prob</th><th>perplexity</th></tr>")
    for b in snapshot.branches:
        out.append(f"<tr><td>{_e(b.id)}{' (shown)' if b is branch else ''}</td><td>{_e(b.split)}</td>"
                   f"<td>{len(b.tokens)}</td><td>{_e(_num(b.logprob, '.3f'))}</td>"
                   f"<td>{_e(_num(b.perplexity, '.3f'))}</td></tr>")
    s = snapshot.settings
    out.append(f"</table><p>Settings: temperature {_e(_num(s.temperature, 'g'))}, top-k {_e(s.top_k)}, "
               f"top-p {_e(_num(s.top_p, 'g'))}, seed {_e(s.seed)}, greedy {_e(s.greedy)}. "
               "Hover a token for its numbers.</p></body></html>")
    return "\n".join(out)
