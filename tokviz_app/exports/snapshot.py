"""Sessions as JSON: everything the page shows, restorable without re-running the model.

Pure Python on the engine's dataclasses; no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from . import compare
from .schema import FORMAT, MAX_IMPORT_BYTES, MAX_IMPORT_TOKENS, VERSION, check_fits, load, too_big
from ..core.types import Alternative, Branch, SamplingParams, SessionSnapshot, TokenStep

__all__ = ["FORMAT", "MAX_IMPORT_BYTES", "MAX_IMPORT_TOKENS", "VERSION", "SessionSnapshot", "check_fits", "from_json",
           "step_from_dict", "step_to_dict", "to_dict", "to_json", "too_big"]


# Fields added after version 1 was first written (issue 14) are left out where they hold their defaults:
# such files stay as they were, and a step stays small (the 16 MB cap holds a full context).
_LATER_SETTINGS = ("min_p", "typical_p", "repetition_penalty", "top_n")


def settings_to_dict(params: SamplingParams) -> dict:
    default = SamplingParams()
    return {k: v for k, v in asdict(params).items() if k not in _LATER_SETTINGS or v != getattr(default, k)}


def _lean(data: dict, keys: tuple[str, ...]) -> dict:
    return {k: v for k, v in data.items() if k not in keys or v is not None}


def step_to_dict(step: TokenStep) -> dict:
    data = asdict(step)
    data["alternatives"] = [_lean(asdict(a), ("dropped_by",)) for a in step.alternatives]
    data["sampling"] = settings_to_dict(step.sampling) if step.sampling else None
    return _lean(data, ("kept_count", "kept_mass"))


def step_from_dict(data: dict) -> TokenStep:
    data = dict(data)
    data["alternatives"] = tuple(Alternative(**a) for a in data.get("alternatives", ()))
    sampling = data.get("sampling")
    data["sampling"] = SamplingParams(**sampling) if sampling else None
    return TokenStep(**data)


def to_dict(snapshot: SessionSnapshot) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": snapshot.model,
        "settings": settings_to_dict(snapshot.settings),
        "prompt": snapshot.prompt,
        "prompt_ids": snapshot.prompt_ids,
        "prompt_tokens": [step_to_dict(t) for t in snapshot.prompt_tokens],
        "branches": [{"id": b.id, "parent": b.parent, "split": b.split, "tokens": [step_to_dict(t) for t in b.tokens]}
                     for b in snapshot.branches],
        "active": snapshot.active,
        **({"extra": snapshot.extra} if snapshot.extra else {}),
        **({"messages": [dict(m) for m in snapshot.messages]} if snapshot.messages is not None else {}),
        **({"compare": compare.to_dict(snapshot.compare, [*snapshot.prompt_tokens, *snapshot.tokens])}
           if snapshot.compare is not None else {}),
    }


def to_json(snapshot: SessionSnapshot) -> str:
    return json.dumps(to_dict(snapshot), ensure_ascii=False, indent=1)


def from_json(text: str | bytes) -> SessionSnapshot:
    """Parse an exported session against the strict schema (`exports/schema.py`).

    Raises ImportFormatError (a TokvizError) with one sentence on any bad input; slow for big files, so the
    page runs it in a worker thread (`ModelService.read_snapshot`).
    """
    doc = load(text)

    def steps(items: list[dict]) -> list[TokenStep]:
        return [TokenStep(**{**t, "alternatives": tuple(Alternative(**a) for a in t["alternatives"]),
                             "sampling": SamplingParams(**t["sampling"]) if t["sampling"] else None}) for t in items]

    return SessionSnapshot(
        model=doc["model"], settings=SamplingParams(**doc["settings"]), prompt=doc["prompt"],
        prompt_ids=doc["prompt_ids"], prompt_tokens=steps(doc["prompt_tokens"]),
        branches=[Branch(b["id"], steps(b["tokens"]), b["parent"], b["split"]) for b in doc["branches"]],
        active=doc["active"], extra=doc["extra"], messages=doc["messages"], compare=compare.from_dict(doc["compare"]),
    )
