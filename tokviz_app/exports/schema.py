"""The strict schema of a session export: every field's type and range, checked before anything uses it.

An import is untrusted input. `parse` turns bytes into plain, checked Python values, or raises
ImportFormatError with one sentence that names the field; nothing else escapes (deep nesting, huge
numbers, wrong types, NaN). It is pure Python and slow enough (~0.1 s per 1,000 tokens with their
alternatives) that callers run it in a worker thread.
"""

from __future__ import annotations

import json
import math
import re

from ..core.chat import ROLES
from ..core.contract import Model
from ..core.errors import ImportFormatError
from ..core.types import DROP_REASONS, MAX_TOP_N, SessionSnapshot

FORMAT = "tokviz-session"
VERSION = 1

# Caps. An exported token with its 10 alternatives takes ~1.9 KB of JSON, so 16 MB holds a full
# 8,192-token context (SmolLM2) with room for branches; 50,000 steps bound memory and rendering for
# files written without alternatives (~150 bytes a step).
MAX_IMPORT_BYTES = 16 * 1024 * 1024
MAX_IMPORT_TOKENS = 50_000  # prompt tokens + the tokens of every branch
MAX_TOKEN_ID = 2**31 - 1  # before the model is known; `check_fits` compares with its vocabulary
MAX_PROMPT_CHARS = 200_000  # the prompt box's own limit
MAX_TOKEN_CHARS = 1_000
MAX_LABEL_CHARS = 1_000
MAX_ALTERNATIVES = 100
MAX_EXTRA_DEPTH = 16
MAX_MESSAGES = 1_000  # a chat's messages; their contents together hold at most MAX_PROMPT_CHARS
MIN_LOGPROB = -700.0  # exp(700) still fits a float: a branch's perplexity stays finite
SLACK = 1e-3  # float32 rounding: a probability may read 1.0000001, an entropy -1e-7

_SURROGATE = re.compile("[\ud800-\udfff]")
_DAMAGED = "This tokviz session file is damaged"


def _show(value) -> str:
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__.replace("dict", "an object") \
        .replace("list", "a list")
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(path: str, what: str, value=None, *, found: bool = True) -> None:
    tail = f" (found {_show(value)})" if found else ""
    raise ImportFormatError(f"{_DAMAGED}: {path} {what}{tail}.")


def _obj(value, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if type(value) is not dict:
        _fail(path, "must be an object", value)
    for key in required:
        if key not in value:
            _fail(f"{path}.{key}", "is missing", found=False)
    for key in value:
        if key not in required and key not in optional:
            _fail(path, f"has an unknown field {_show(key)}", found=False)
    return value


def _int(value, path: str, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        _fail(path, f"must be a whole number from {lo} to {hi}", value)
    return value


def _num(value, path: str, lo: float, hi: float, *, slack: float = 0.0) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not lo - slack <= value <= hi + slack:
        _fail(path, f"must be a number from {lo:g} to {hi:g}", value)
    return float(value)


def _opt(check, value, path: str, *args, **kwargs):
    return None if value is None else check(value, path, *args, **kwargs)


def _str(value, path: str, limit: int) -> str:
    if type(value) is not str:
        _fail(path, "must be text", value)
    if len(value) > limit:
        _fail(path, f"is longer than {limit:,} characters", found=False)
    if _SURROGATE.search(value):
        _fail(path, "contains an invalid character (an unpaired surrogate)", found=False)
    return value


def _bool(value, path: str) -> bool:
    if type(value) is not bool:
        _fail(path, "must be true or false", value)
    return value


def _list(value, path: str, limit: int, *, least: int = 0) -> list:
    if type(value) is not list:
        _fail(path, "must be a list", value)
    if not least <= len(value) <= limit:
        _fail(path, f"must hold {least} to {limit:,} entries", len(value))
    return value


def settings(value, path: str) -> dict:
    # the samplers of issue 14 are optional: files written before them still import
    d = _obj(value, path, ("temperature", "top_k", "top_p", "seed", "greedy"),
             ("min_p", "typical_p", "repetition_penalty", "top_n"))
    greedy = _bool(d["greedy"], f"{path}.greedy")
    out = {"temperature": _num(d["temperature"], f"{path}.temperature", 0.0, 1000.0),
           "top_k": _int(d["top_k"], f"{path}.top_k", 0, MAX_TOKEN_ID),
           "top_p": _num(d["top_p"], f"{path}.top_p", 0.0, 1.0),
           "seed": _opt(_int, d["seed"], f"{path}.seed", 0, 2**63 - 1), "greedy": greedy}
    if not greedy and out["temperature"] <= 0:
        _fail(f"{path}.temperature", "must be above 0 unless greedy is true", d["temperature"])
    for key, hi in (("min_p", 1.0), ("typical_p", 1.0), ("repetition_penalty", 1000.0)):
        if key in d:
            out[key] = _num(d[key], f"{path}.{key}", 0.0, hi)
    if "top_n" in d:
        out["top_n"] = _int(d["top_n"], f"{path}.top_n", 1, MAX_TOP_N)
    for key in ("top_p", "typical_p", "repetition_penalty"):
        if out.get(key, 1.0) <= 0:
            _fail(f"{path}.{key}", "must be above 0", d[key])
    return out


def _alternative(value, path: str) -> dict:
    d = _obj(value, path, ("token_id", "text", "prob", "sampled_prob"), ("dropped_by",))
    if d.get("dropped_by") not in (None, *DROP_REASONS):
        _fail(f"{path}.dropped_by", f"must be null or one of {', '.join(DROP_REASONS)}", d["dropped_by"])
    return {"token_id": _int(d["token_id"], f"{path}.token_id", 0, MAX_TOKEN_ID),
            "text": _str(d["text"], f"{path}.text", MAX_TOKEN_CHARS),
            "prob": _num(d["prob"], f"{path}.prob", 0.0, 1.0, slack=SLACK),
            "sampled_prob": _opt(_num, d["sampled_prob"], f"{path}.sampled_prob", 0.0, 1.0, slack=SLACK),
            "dropped_by": d.get("dropped_by")}


_STEP_FIELDS = ("token_id", "text", "prob", "logprob", "rank", "entropy", "sampled_prob", "alternatives",
                "position", "is_prompt", "partial", "sampling")


def step(value, path: str, index: int, is_prompt: bool) -> dict:
    d = _obj(value, path, _STEP_FIELDS, ("kept_count", "kept_mass"))
    out = {"token_id": _int(d["token_id"], f"{path}.token_id", 0, MAX_TOKEN_ID),
           "text": _str(d["text"], f"{path}.text", MAX_TOKEN_CHARS),
           "prob": _opt(_num, d["prob"], f"{path}.prob", 0.0, 1.0, slack=SLACK),
           "logprob": _opt(_num, d["logprob"], f"{path}.logprob", MIN_LOGPROB, 0.0, slack=SLACK),
           "rank": _opt(_int, d["rank"], f"{path}.rank", 1, MAX_TOKEN_ID + 1),
           "entropy": _opt(_num, d["entropy"], f"{path}.entropy", 0.0, 64.0, slack=SLACK),
           "sampled_prob": _opt(_num, d["sampled_prob"], f"{path}.sampled_prob", 0.0, 1.0, slack=SLACK),
           "alternatives": [_alternative(a, f"{path}.alternatives[{i}]")
                            for i, a in enumerate(_list(d["alternatives"], f"{path}.alternatives", MAX_ALTERNATIVES))],
           "position": d["position"], "is_prompt": _bool(d["is_prompt"], f"{path}.is_prompt"),
           "partial": _bool(d["partial"], f"{path}.partial"),
           "sampling": _opt(settings, d["sampling"], f"{path}.sampling"),
           "kept_count": _opt(_int, d.get("kept_count"), f"{path}.kept_count", 0, MAX_TOKEN_ID),
           "kept_mass": _opt(_num, d.get("kept_mass"), f"{path}.kept_mass", 0.0, 1.0, slack=SLACK)}
    if (out["prob"] is None) != (out["logprob"] is None):
        _fail(path, "must have both prob and logprob, or neither", found=False)
    if type(out["position"]) is not int or out["position"] != index:
        _fail(f"{path}.position", f"must be {index}", d["position"])
    if out["is_prompt"] != is_prompt:
        _fail(f"{path}.is_prompt", f"must be {'true' if is_prompt else 'false'}", out["is_prompt"])
    return out


def _extra(value, path: str) -> dict:
    """Kept as written, never shown: only its depth is bounded (re-export and the page recurse over it)."""
    _obj(value, path, (), tuple(value) if type(value) is dict else ())
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_EXTRA_DEPTH:
            _fail(path, f"is nested deeper than {MAX_EXTRA_DEPTH} levels", found=False)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return value


def _messages(value, path: str) -> list[dict[str, str]]:
    """The chat a session was started from: {role, content} with the roles `start_chat` takes."""
    out, total = [], 0
    for i, m in enumerate(_list(value, path, MAX_MESSAGES, least=1)):
        d = _obj(m, f"{path}[{i}]", ("role", "content"))
        if d["role"] not in ROLES:
            _fail(f"{path}[{i}].role", f"must be one of {', '.join(ROLES)}", d["role"])
        content = _str(d["content"], f"{path}[{i}].content", MAX_PROMPT_CHARS)
        total += len(content)
        out.append({"role": d["role"], "content": content})
    if total > MAX_PROMPT_CHARS:
        _fail(path, f"hold more than {MAX_PROMPT_CHARS:,} characters together", found=False)
    if not any(m["role"] == "user" for m in out):
        _fail(path, "must hold at least one user message", found=False)
    return out


def too_big(size: int) -> ImportFormatError:
    return ImportFormatError(f"This file is {size / 2**20:.1f} MB; tokviz imports session files of at most "
                             f"{MAX_IMPORT_BYTES // 2**20} MB.")


def _reject_constant(name: str):
    raise ImportFormatError(f"{_DAMAGED}: it contains {name}, which is not a number JSON allows.")


def load(data: str | bytes) -> dict:
    """Bytes -> the checked document: plain dicts, lists and values, every one of the right type and range."""
    if len(data) > MAX_IMPORT_BYTES:
        raise too_big(len(data))
    if isinstance(data, (bytes, bytearray)):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ImportFormatError("This file is not UTF-8 text, so it is not a tokviz session export.") from error
    try:
        doc = json.loads(data, parse_constant=_reject_constant)
    except RecursionError as error:
        raise ImportFormatError("This file is not a tokviz session export: its JSON is nested too deeply.") from error
    except json.JSONDecodeError as error:
        raise ImportFormatError(f"This file is not valid JSON ({error.msg} at line {error.lineno}, column "
                                f"{error.colno}).") from error
    except ValueError as error:  # an integer of more than 4,300 digits
        raise ImportFormatError("This file is not valid JSON for tokviz: a number in it is too long.") from error
    if type(doc) is not dict or doc.get("format") != FORMAT:
        raise ImportFormatError("This JSON is not a tokviz session export.")
    if doc.get("version") != VERSION or type(doc.get("version")) is not int:
        raise ImportFormatError(f"This tokviz session has version {_show(doc.get('version'))}; this tokviz reads "
                                f"version {VERSION}.")
    return _document(doc)


def _document(doc: dict) -> dict:
    _obj(doc, "the file", ("format", "version", "model", "settings", "prompt", "prompt_ids", "prompt_tokens",
                           "branches", "active"), ("extra", "messages", "compare"))
    model = _obj(doc["model"], "model", (), tuple(doc["model"]) if type(doc["model"]) is dict else ())
    if len(model) > 20:
        _fail("model", "has more than 20 fields", found=False)
    for key, value in model.items():
        _opt(_str, value, f"model.{key}", MAX_LABEL_CHARS)
    prompt_tokens = _list(doc["prompt_tokens"], "prompt_tokens", MAX_IMPORT_TOKENS, least=1)
    branches = _list(doc["branches"], "branches", MAX_IMPORT_TOKENS, least=1)
    for i, b in enumerate(branches):
        _obj(b, f"branches[{i}]", ("id", "parent", "split", "tokens"))
        _list(b["tokens"], f"branches[{i}].tokens", MAX_IMPORT_TOKENS)
    total = len(prompt_tokens) + sum(len(b["tokens"]) for b in branches)
    if total > MAX_IMPORT_TOKENS:  # counted before any token is read
        raise ImportFormatError(f"This session holds {total:,} tokens; tokviz imports at most "
                                f"{MAX_IMPORT_TOKENS:,} (prompt and every branch together).")
    prompt_ids = _list(doc["prompt_ids"], "prompt_ids", MAX_IMPORT_TOKENS, least=1)
    out = {"model": dict(model), "settings": settings(doc["settings"], "settings"),
           "prompt": _str(doc["prompt"], "prompt", MAX_PROMPT_CHARS),
           "prompt_ids": [_int(v, f"prompt_ids[{i}]", 0, MAX_TOKEN_ID) for i, v in enumerate(prompt_ids)],
           "prompt_tokens": [step(t, f"prompt_tokens[{i}]", i, True) for i, t in enumerate(prompt_tokens)],
           "branches": [], "active": _int(doc["active"], "active", 0, len(branches) - 1),
           "extra": _extra(doc["extra"], "extra") if "extra" in doc else {},
           "messages": _opt(_messages, doc.get("messages"), "messages")}
    if out["prompt_ids"] != [t["token_id"] for t in out["prompt_tokens"]]:
        _fail("prompt_ids", "must be the token ids of prompt_tokens", found=False)
    for i, b in enumerate(branches):
        path = f"branches[{i}]"
        out["branches"].append({
            "id": _int(b["id"], f"{path}.id", i, i),  # the engine numbers branches 0, 1, 2... in order
            "parent": _parent(b["parent"], f"{path}.parent", i),
            "split": _int(b["split"], f"{path}.split", 0, MAX_IMPORT_TOKENS),
            "tokens": [step(t, f"{path}.tokens[{j}]", j, False) for j, t in enumerate(b["tokens"])]})
    out["compare"] = None
    if "compare" in doc:  # exports/compare.py checks it with this module's helpers (so it imports them)
        from .compare import check
        shown = out["prompt_ids"] + [t["token_id"] for t in out["branches"][out["active"]]["tokens"]]
        out["compare"] = check(doc["compare"], shown, len(out["prompt_ids"]))
    return out


def _parent(value, path: str, index: int) -> int | None:
    if index == 0:
        if value is not None:
            _fail(path, "must be null (branch 0 is the root)", value)
        return None
    return _int(value, path, 0, index - 1)  # a branch is made from an older one


def check_fits(snapshot: SessionSnapshot, model: Model) -> None:
    """A checked snapshot against the model that will continue it: ids in its vocabulary, texts in its context."""
    vocab, label = model.vocab_size, model.label
    if vocab:
        steps = [*snapshot.prompt_tokens, *(t for b in snapshot.branches for t in b.tokens)]
        ids = [*snapshot.prompt_ids, *(t.token_id for t in steps), *(a.token_id for t in steps for a in t.alternatives)]
        worst = max(ids)
        if worst >= vocab:
            raise ImportFormatError(f"This session uses token id {worst}, but {label}'s vocabulary has {vocab:,} "
                                    "tokens: it was made with another model.")
    context = model.context_length
    longest = len(snapshot.prompt_ids) + max(len(b.tokens) for b in snapshot.branches)
    if context and longest > context:
        raise ImportFormatError(f"This session has {longest:,} tokens; {label} reads at most {context:,}.")
