"""Sessions as JSON: everything the page shows, restorable without re-running the model.

Pure Python on the engine's dataclasses; no torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .errors import TokvizError
from .types import Alternative, Branch, SamplingParams, TokenStep

FORMAT = "tokviz-session"
VERSION = 1


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
    """Parse an exported session. Raises TokvizError with a readable reason on bad input."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise TokvizError(f"This file is not valid JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TokvizError("This JSON is not a tokviz session export.")
    if data.get("version") != VERSION:
        raise TokvizError(f"Unsupported tokviz session version {data.get('version')!r} (expected {VERSION}).")
    try:
        branches = [Branch(int(b["id"]), [step_from_dict(t) for t in b["tokens"]], b.get("parent"), int(b["split"]))
                    for b in data["branches"]]
        snapshot = SessionSnapshot(
            model=dict(data["model"]),
            settings=SamplingParams(**data["settings"]),
            prompt=str(data["prompt"]),
            prompt_ids=[int(i) for i in data["prompt_ids"]],
            prompt_tokens=[step_from_dict(t) for t in data["prompt_tokens"]],
            branches=branches,
            active=int(data["active"]),
            extra=dict(data.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise TokvizError(f"This tokviz session file is incomplete or damaged ({error}).") from error
    if not branches or not 0 <= snapshot.active < len(branches) or not snapshot.prompt_ids:
        raise TokvizError("This tokviz session file has no usable branches or prompt.")
    return snapshot
