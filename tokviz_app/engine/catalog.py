"""The models offered in the page, and where each one stands (cached, bundled, ...)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

BUNDLED_KEY = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    source: str  # hub id, local folder, or "bundled"
    description: str = ""


CATALOG: tuple[ModelSpec, ...] = (
    ModelSpec("gpt2", "GPT-2", "openai-community/gpt2", "OpenAI GPT-2, 124M parameters, 1024-token context (~550 MB)"),
    ModelSpec("gpt2-medium", "GPT-2 Medium", "openai-community/gpt2-medium",
              "OpenAI GPT-2 Medium, 355M parameters, 1024-token context (~1.5 GB)"),
    ModelSpec("distilgpt2", "DistilGPT-2", "distilbert/distilgpt2",
              "Distilled GPT-2, 82M parameters, fastest (~350 MB)"),
    ModelSpec(BUNDLED_KEY, "SmolLM2-135M (bundled)", "bundled",
              "SmolLM2-135M-Instruct (Q4_1 GGUF, ships with tokviz): works with no network"),
)

# Older short names still resolve on the hub; check the cache under both.
HUB_ALIASES = {"openai-community/gpt2": "gpt2", "openai-community/gpt2-medium": "gpt2-medium",
               "distilbert/distilgpt2": "distilgpt2"}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 1.5) -> bool:
    """A quick TCP check against the hub endpoint (no request is sent)."""
    if hub_offline():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def is_cached(repo_id: str) -> bool:
    """True when a hub model's config and weights are in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    for name in (repo_id, HUB_ALIASES.get(repo_id)):
        if not name:
            continue
        config = try_to_load_from_cache(name, "config.json")
        if isinstance(config, str):
            folder = Path(config).parent
            if any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")):
                return True
    return False

