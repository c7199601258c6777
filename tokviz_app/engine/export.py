"""Sessions as JSON: everything the page shows, restorable without re-running the model.

Pure Python on the engine's dataclasses; no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .snapshot_schema import FORMAT, MAX_IMPORT_BYTES, MAX_IMPORT_TOKENS, VERSION, check_fits, load, too_big
from .types import Alternative, Branch, SamplingParams, TokenStep

__all__ = ["FORMAT", "MAX_IMPORT_BYTES", "MAX_IMPORT_TOKENS", "VERSION", "SessionSnapshot", "check_fits", "from_json",
           "snapshot_of", "step_from_dict", "step_to_dict", "to_dict", "to_json", "too_big"]


@dataclass
class SessionSnapshot:
    """A session frozen in time: what export writes and import reads."""

    model: dict
    settings: SamplingParams
    prompt: str
    prompt_ids: list[int]
    prompt_tokens: list[TokenStep]
    branches: list[Branch]
    active: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> list[TokenStep]:
        return self.branches[self.active].tokens


def step_to_dict(step: TokenStep) -> dict:
    data = asdict(step)
    data["alternatives"] = [asdict(a) for a in step.alternatives]
    return data


def step_from_dict(data: dict) -> TokenStep:
    data = dict(data)
    data["alternatives"] = tuple(Alternative(**a) for a in data.get("alternatives", ()))
    sampling = data.get("sampling")
    data["sampling"] = SamplingParams(**sampling) if sampling else None
    return TokenStep(**data)


def snapshot_of(session, *, prompt: str | None = None, model: dict | None = None) -> SessionSnapshot:
    """Freeze a live GenerationSession (or return a snapshot unchanged)."""
    if isinstance(session, SessionSnapshot):
        return session
    m = session.model
    return SessionSnapshot(
        model=model or {"key": m.key, "label": m.label, "source": m.source},
        settings=session.params,
        prompt=prompt if prompt is not None else m.decode(session.token_ids[: len(session.prompt_tokens)]),
        prompt_ids=[t.token_id for t in session.prompt_tokens],
        prompt_tokens=list(session.prompt_tokens),
        branches=[Branch(b.id, list(b.tokens), b.parent, b.split) for b in session.branches],
        active=session.active_branch.id,
    )


def to_dict(snapshot: SessionSnapshot) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": snapshot.model,
        "settings": asdict(snapshot.settings),
        "prompt": snapshot.prompt,
        "prompt_ids": snapshot.prompt_ids,
        "prompt_tokens": [step_to_dict(t) for t in snapshot.prompt_tokens],
        "branches": [{"id": b.id, "parent": b.parent, "split": b.split, "tokens": [step_to_dict(t) for t in b.tokens]}
                     for b in snapshot.branches],
        "active": snapshot.active,
        **({"extra": snapshot.extra} if snapshot.extra else {}),
    }


def to_json(snapshot: SessionSnapshot) -> str:
    return json.dumps(to_dict(snapshot), ensure_ascii=False, indent=1)


def from_json(text: str | bytes) -> SessionSnapshot:
    """Parse an exported session against the strict schema (`snapshot_schema`).

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
        active=doc["active"], extra=doc["extra"],
    )
