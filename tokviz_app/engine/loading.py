"""Turn a name into weights on disk and a model in memory.

Hub models go through `huggingface_hub.snapshot_download` (cache first, then the
network) so the page can show real download progress; then the same
`from_pretrained` path loads hub snapshots and local folders alike.
`trust_remote_code` is never enabled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .catalog import BUNDLED_KEY, hub_offline
from ..core.errors import ModelLoadError, ModelNotFoundError, OfflineError

Progress = Callable[[float | None, str], None]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]
OFFLINE_HINT = f"Pick the bundled model '{BUNDLED_KEY}' (SmolLM2-135M), which works with no network."


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def check_hub_id(name: str) -> None:
    if not HUB_ID.match(name):
        raise ModelNotFoundError(f"'{name}' is neither a known model, a Hugging Face model id, nor an existing folder.")


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").exists() and (
        any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    )


def _progress_bar_class(progress: Progress | None):
    """A tqdm subclass that forwards byte counts to `progress` (fraction, message)."""
    from tqdm.auto import tqdm

    class ForwardingTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True  # no console bars; the page shows progress instead
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n=1):
            self._done += n or 0
            if progress and self.total and self.unit == "B":
                mb, total = self._done / 1e6, self.total / 1e6
                progress(min(self._done / self.total, 1.0), f"Downloading: {mb:.0f} / {total:.0f} MB")
            return super().update(n)

    return ForwardingTqdm


def fetch_from_hub(repo_id: str, progress: Progress | None = None) -> Path:
    """The local snapshot folder of a hub model: from the cache, else downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=WEIGHT_PATTERNS, local_files_only=True))
        if has_weights(folder):
            return folder
    except (LocalEntryNotFoundError, OSError):
        pass
    if hub_offline():
        raise OfflineError(f"'{repo_id}' is not in the local cache and HF_HUB_OFFLINE is set. {OFFLINE_HINT}")
    if progress:
        progress(0.0, f"Downloading {repo_id} from the Hugging Face hub…")
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=WEIGHT_PATTERNS,
                                        tqdm_class=_progress_bar_class(progress)))
        if not has_weights(folder):  # older repos only ship PyTorch pickles
            folder = Path(snapshot_download(repo_id, allow_patterns=WEIGHT_PATTERNS + ["*.bin"],
                                            tqdm_class=_progress_bar_class(progress)))
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise ModelNotFoundError(f"The Hugging Face hub has no model '{repo_id}'.") from error
    except GatedRepoError as error:
        raise ModelNotFoundError(f"'{repo_id}' is gated on the hub and needs an access token (HF_TOKEN).") from error
    except (LocalEntryNotFoundError, OSError) as error:
        raise OfflineError(f"Cannot reach the Hugging Face hub, and '{repo_id}' is not in the local cache. "
                           f"{OFFLINE_HINT}") from error
    except Exception as error:  # httpx/requests connection errors do not share a base class
        if "connect" in type(error).__name__.lower() or "timeout" in type(error).__name__.lower():
            raise OfflineError(f"Cannot reach the Hugging Face hub to download '{repo_id}'. {OFFLINE_HINT}") from error
        raise ModelLoadError(f"Downloading '{repo_id}' failed: {error}") from error
    if not has_weights(folder):
        raise ModelLoadError(f"'{repo_id}' has no weights that tokviz can load (config.json + safetensors or .bin).")
    return folder


def load_pretrained(folder: Path, device: str, dtype, progress: Progress | None = None):
    """(model, tokenizer) from a folder with config, tokenizer and weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if progress:
        progress(None, "Loading weights…")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, trust_remote_code=False)
        model.to(device)
    except (torch.OutOfMemoryError, MemoryError) as error:
        raise ModelLoadError(f"Not enough memory on {device} to load this model.") from error
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"Could not load a causal language model from '{folder}': {error}") from error
    model.eval()
    return model, tokenizer
