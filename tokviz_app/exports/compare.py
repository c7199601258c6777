"""A session export's optional `compare` field: the shown text under a second model or after context B.

    "compare": {"model": {...}, "mode": "model" | "context", "context_b": text | null,
                "token_ids": [...], "n_prompt": n,
                "tokens": [null | {"logprob_b", "rank_b", "delta", "kl", "top_b": [alternatives]}, ...],
                "spans": null | [{"start", "end", "first", "stop", "token_ids_b", "pieces_b",
                                  "logprob_a", "logprob_b", "delta", "complete"}, ...]}

`token_ids` are the start of the file's text (prompt, then the active branch), one `tokens` entry each
(null where B has no numbers: the first token, a context's prompt, and every token when `spans` is set: two
tokenizers). `delta` is log p_B − log p_A in nats, for readers; an import checks it and computes it again from
the tokens' own log-probs. Checked as strictly as the rest of the file (`schema.py`); pure Python.
"""

from __future__ import annotations

from dataclasses import asdict

from ..core.compare import MODES, CONTEXT, CompareSpan, Comparison, TokenScore
from ..core.types import Alternative, TokenStep
from .schema import (MAX_ALTERNATIVES, MAX_IMPORT_TOKENS, MAX_LABEL_CHARS, MAX_PROMPT_CHARS, MAX_TOKEN_CHARS,
                     MAX_TOKEN_ID, MIN_LOGPROB, SLACK, _alternative, _bool, _fail, _int, _list, _num, _obj, _opt, _str)

MIN_SUM = MIN_LOGPROB * MAX_IMPORT_TOKENS  # a span's summed log-prob
MAX_KL = 1e6  # bits


def _delta(b: float | None, a) -> float | None:
    return None if b is None or not isinstance(a, (int, float)) else b - a


def to_dict(comparison: Comparison, steps: list[TokenStep]) -> dict:
    """The field for a file whose text (prompt + active branch) is `steps`."""
    def token(score: TokenScore | None, step: TokenStep) -> dict | None:
        if score is None:
            return None
        return {"logprob_b": score.logprob, "rank_b": score.rank, "delta": _delta(score.logprob, step.logprob),
                "kl": score.kl, "top_b": [{k: v for k, v in asdict(a).items() if k != "dropped_by"} for a in score.top]}

    def span(s: CompareSpan) -> dict:
        return {"start": s.start, "end": s.end, "first": s.first, "stop": s.stop, "token_ids_b": list(s.ids_b),
                "pieces_b": list(s.pieces_b), "logprob_a": s.logprob_a, "logprob_b": s.logprob_b,
                "delta": s.delta, "complete": s.complete}

    return {"model": dict(comparison.model), "mode": comparison.mode, "context_b": comparison.context_b,
            "token_ids": list(comparison.token_ids), "n_prompt": comparison.n_prompt,
            "tokens": [token(s, step) for s, step in zip(comparison.scores, steps)],
            "spans": None if comparison.spans is None else [span(s) for s in comparison.spans]}


def from_dict(d: dict | None) -> Comparison | None:
    """A checked field (`check`) as the page's Comparison."""
    if d is None:
        return None
    scores = [None if t is None else TokenScore(d["token_ids"][i], t["logprob_b"], t["rank_b"],
                                                tuple(Alternative(**a) for a in t["top_b"]), t["kl"])
              for i, t in enumerate(d["tokens"])]
    spans = None if d["spans"] is None else [
        CompareSpan(s["start"], s["end"], s["first"], s["stop"], tuple(s["token_ids_b"]), tuple(s["pieces_b"]),
                    s["logprob_a"], s["logprob_b"], s["complete"]) for s in d["spans"]]
    return Comparison(d["model"], d["mode"], d["context_b"], d["token_ids"], d["n_prompt"], scores, spans)


def check(value, text_ids: list[int], n_prompt: int) -> dict:
    """The `compare` field of a file whose text (prompt + active branch) has the ids `text_ids`."""
    path = "compare"
    d = _obj(value, path, ("model", "mode", "context_b", "token_ids", "n_prompt", "tokens", "spans"))
    model = _obj(d["model"], f"{path}.model", (), tuple(d["model"]) if type(d["model"]) is dict else ())
    if len(model) > 20:
        _fail(f"{path}.model", "has more than 20 fields", found=False)
    for key, v in model.items():
        _opt(_str, v, f"{path}.model.{key}", MAX_LABEL_CHARS)
    if d["mode"] not in MODES:
        _fail(f"{path}.mode", f"must be one of {', '.join(MODES)}", d["mode"])
    context_b = _opt(_str, d["context_b"], f"{path}.context_b", MAX_PROMPT_CHARS)
    if (context_b is None) == (d["mode"] == CONTEXT):
        _fail(f"{path}.context_b", "must be text in context mode and null otherwise", found=False)
    ids = [_int(v, f"{path}.token_ids[{i}]", 0, MAX_TOKEN_ID)
           for i, v in enumerate(_list(d["token_ids"], f"{path}.token_ids", MAX_IMPORT_TOKENS, least=2))]
    if _int(d["n_prompt"], f"{path}.n_prompt", 0, MAX_IMPORT_TOKENS) != n_prompt or ids != text_ids[: len(ids)]:
        _fail(path, "must be made for the file's own text (its prompt and active branch)", found=False)
    tokens = _list(d["tokens"], f"{path}.tokens", len(ids), least=len(ids))
    spans = None if d["spans"] is None else _spans(d["spans"], f"{path}.spans", len(ids))
    out_tokens = []
    for i, t in enumerate(tokens):
        blank = i == 0 or spans is not None or (d["mode"] == CONTEXT and i < n_prompt)
        if blank and t is not None:
            _fail(f"{path}.tokens[{i}]", "must be null (this token has no comparison)", found=False)
        out_tokens.append(None if t is None else _token(t, f"{path}.tokens[{i}]"))
    return {"model": dict(model), "mode": d["mode"], "context_b": context_b, "token_ids": ids,
            "n_prompt": n_prompt, "tokens": out_tokens, "spans": spans}


def _token(value, path: str) -> dict:
    t = _obj(value, path, ("logprob_b", "rank_b", "delta", "kl", "top_b"))
    _opt(_num, t["delta"], f"{path}.delta", 2 * MIN_LOGPROB, -2 * MIN_LOGPROB)
    return {"logprob_b": _opt(_num, t["logprob_b"], f"{path}.logprob_b", MIN_LOGPROB, 0.0, slack=SLACK),
            "rank_b": _opt(_int, t["rank_b"], f"{path}.rank_b", 1, MAX_TOKEN_ID + 1),
            "kl": _opt(_num, t["kl"], f"{path}.kl", 0.0, MAX_KL),
            "top_b": [_alternative(a, f"{path}.top_b[{i}]")
                      for i, a in enumerate(_list(t["top_b"], f"{path}.top_b", MAX_ALTERNATIVES))]}


def _spans(value, path: str, n_tokens: int) -> list[dict]:
    """Spans in text order that cover the compared tokens once and the characters without a gap."""
    out, token, char, ids_b = [], 0, 0, 0
    for i, v in enumerate(_list(value, path, n_tokens, least=1)):
        p = f"{path}[{i}]"
        s = _obj(v, p, ("start", "end", "first", "stop", "token_ids_b", "pieces_b", "logprob_a", "logprob_b",
                        "delta", "complete"))
        start, first = _int(s["start"], f"{p}.start", char, char), _int(s["first"], f"{p}.first", token, token)
        end = _int(s["end"], f"{p}.end", start + 1, start + MAX_PROMPT_CHARS)
        stop = _int(s["stop"], f"{p}.stop", first + 1, n_tokens)
        b = [_int(x, f"{p}.token_ids_b[{k}]", 0, MAX_TOKEN_ID)
             for k, x in enumerate(_list(s["token_ids_b"], f"{p}.token_ids_b", MAX_IMPORT_TOKENS, least=1))]
        pieces = [_str(x, f"{p}.pieces_b[{k}]", MAX_TOKEN_CHARS)
                  for k, x in enumerate(_list(s["pieces_b"], f"{p}.pieces_b", len(b), least=len(b)))]
        if sum(map(len, pieces)) != end - start:
            _fail(f"{p}.pieces_b", "must hold the span's characters", found=False)
        ids_b += len(b)
        if ids_b > MAX_IMPORT_TOKENS:
            _fail(path, f"hold more than {MAX_IMPORT_TOKENS:,} tokens of model B", found=False)
        _opt(_num, s["delta"], f"{p}.delta", 2 * MIN_SUM, -2 * MIN_SUM)
        out.append({"start": start, "end": end, "first": first, "stop": stop, "token_ids_b": b, "pieces_b": pieces,
                    "logprob_a": _opt(_num, s["logprob_a"], f"{p}.logprob_a", MIN_SUM, 0.0, slack=SLACK),
                    "logprob_b": _opt(_num, s["logprob_b"], f"{p}.logprob_b", MIN_SUM, 0.0, slack=SLACK),
                    "complete": _bool(s["complete"], f"{p}.complete")})
        token, char = stop, end
    if token != n_tokens:
        _fail(path, "must cover every compared token", found=False)
    return out
