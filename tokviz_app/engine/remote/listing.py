"""What a server lists (GET /models): checked entries for the catalog, and the names tokviz gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from .client import ServerClient, ServerError
from .servers import ServerConfig

MAX_MODELS = 200  # entries of one server in the dropdown
MAX_ID_CHARS = 256
MODELS_DEADLINE = 10.0  # the whole answer of GET /models (it runs in the background)
MODELS_MAX_BYTES = 4 * 2**20
MODELS_TTL = 30.0  # seconds a server's model list is reused by the catalog


class ListedModel(TypedDict):
    """One model of a server's GET /models answer, as `check_models` keeps it."""

    id: str
    max_model_len: int | None
    root: str | None


def list_models(client: ServerClient) -> list[ListedModel]:
    """The server's models, each {"id", "max_model_len", "root"} with checked types (see `check_models`)."""
    return check_models(fetch_models(client), client.base)[0]


def fetch_models(client: ServerClient) -> Any:
    """GET /models, bounded: MODELS_DEADLINE (or the shorter read timeout) for the whole answer."""
    limit = min(MODELS_DEADLINE, client.config.read_timeout)
    return client.get("/models", timeout=limit, max_bytes=MODELS_MAX_BYTES, deadline=limit)


def check_models(answer: Any, base: str) -> tuple[list[ListedModel], str | None]:
    """Only what tokviz can use from a GET /models answer: ids that are short printable text, context
    lengths that are positive integers, and a note saying what was left out (None when nothing was)."""
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise ServerError(f"The server at {base} did not list its models (GET /models).")
    models: list[ListedModel] = []
    seen: set[str] = set()
    bad = 0
    for entry in data:
        model_id = entry.get("id") if isinstance(entry, dict) else None
        if not _clean_text(model_id, MAX_ID_CHARS):
            bad += 1
            continue
        if model_id in seen:
            continue
        seen.add(model_id)
        length = entry.get("max_model_len")
        root = entry.get("root")
        models.append({"id": model_id,
                       "max_model_len": length if type(length) is int and 0 < length <= 100_000_000 else None,
                       "root": root if _clean_text(root, 1024) else None})
    notes = []
    if bad:
        notes.append(f"{bad} of its {len(data)} entries are not models tokviz can use (an id must be text of at "
                     f"most {MAX_ID_CHARS} printable characters)")
    if len(models) > MAX_MODELS:
        notes.append(f"only the first {MAX_MODELS} of its {len(models)} models are offered")
        models = models[:MAX_MODELS]
    return models, ("; ".join(notes) or None)


def _clean_text(value: Any, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.strip() == value and value.isprintable()


def remote_key(config: ServerConfig, model_id: str) -> str:
    return f"{model_id} @ {config.url}"


def remote_label(config: ServerConfig, model_id: str) -> str:
    model_id = str(model_id)
    name = Path(model_id).name if ("/" in model_id and Path(model_id).suffix) else model_id
    return f"{name} @ {config.netloc}"
