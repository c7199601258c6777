"""The local backend: catalog models, hub ids and folders, loaded once per (model, device, dtype)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import bundled, fast_path
from ..core.contract import Backend, Progress
from ..core.errors import ModelNotFoundError
from ..core.types import ModelInfo
from .catalog import BUNDLED_KEY, CATALOG, ModelSpec, hub_reachable, is_cached
from .devices import dtype_name, resolve_device, resolve_dtype
from .fused_activations import fuse_activations
from .kernels import choose_kernels, requested_mode
from .loading import check_hub_id, fetch_from_hub, load_pretrained, looks_like_path
from .local_model import LoadedModel, parameter_bytes
from .openmp import on_passing_thread


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: LoadedModel | None = None


class LocalBackend(Backend):
    """Resolves names (catalog key, hub id, local folder), loads each once and shares it. Handles every name
    that no other backend claims: an unknown one fails with a readable ModelNotFoundError."""

    def __init__(self, device: str = "auto", dtype: str | None = None, *, batching: bool = True,
                 cpu_kernels: str | None = None) -> None:
        self.device = device
        self.dtype = dtype
        self.batching = batching  # one batched inference lane per model
        # CPU fp32 linear layers: "auto" (timed per shape, remembered), "plain", "nt", "nn", "packed" or "rows"
        self.cpu_kernels = requested_mode() if cpu_kernels is None else cpu_kernels
        self.compile = fast_path.requested_mode()  # TOKVIZ_COMPILE: the bundled model's quantised kernels
        self._specs: dict[str, ModelSpec] = {spec.key: spec for spec in CATALOG}
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._lock = threading.Lock()

    def handles(self, name: str) -> bool:
        return True

    # --------------------------------------------------------------- catalog
    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        spec = self.resolve(name)
        if offer:
            with self._lock:
                self._specs.setdefault(spec.key, spec)
        return self._info(spec)

    def catalog(self) -> list[ModelInfo]:
        with self._lock:
            specs = list(self._specs.values())
        return [self._info(spec) for spec in specs]

    def default_key(self) -> str:
        """GPT-2 where it is cached or the hub is reachable; otherwise the bundled model."""
        gpt2 = self._specs["gpt2"]
        return "gpt2" if is_cached(gpt2.source) or hub_reachable() else BUNDLED_KEY

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            return [slot.model for slot in self._slots.values() if slot.model is not None]

    def resolve(self, name: str) -> ModelSpec:
        """A catalog key, a hub id or a local folder -> ModelSpec. Raises ModelNotFoundError."""
        name = (name or "").strip()
        if not name:
            raise ModelNotFoundError("No model was named.")
        with self._lock:
            if name in self._specs:
                return self._specs[name]
            for spec in self._specs.values():
                if spec.source == name:
                    return spec
        folder = Path(name).expanduser()
        if folder.is_dir():
            if not (folder / "config.json").is_file():  # e.g. /etc: say so before anyone tries to load it
                raise ModelNotFoundError(f"The folder '{name}' is not a model folder (it has no config.json).")
            # the description names the folder as given: pages never see the server's absolute paths
            return ModelSpec(name, folder.name or name, str(folder.resolve()), f"Local folder {name}")
        if looks_like_path(name):
            raise ModelNotFoundError(f"The folder '{name}' does not exist.")
        check_hub_id(name)
        return ModelSpec(name, name, name, "Hugging Face hub model")

    # --------------------------------------------------------------- loading
    @on_passing_thread  # loading and choosing kernels run torch's parallel ops: not in a long-lived thread
    def load(self, name: str, progress: Progress | None = None, *, device: str | None = None,
             dtype: str | None = None) -> LoadedModel:
        """Load (or return the already loaded) model. Concurrent calls load it once."""
        spec = self.resolve(name)
        device = resolve_device(device or self.device)
        torch_dtype = resolve_dtype(device, dtype or self.dtype)
        key = (spec.source, device, dtype_name(torch_dtype))
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
        with slot.lock:
            if slot.model is None:
                started = time.perf_counter()
                hf_model, tokenizer = self._load_weights(spec, device, torch_dtype, progress)
                weight_bytes = parameter_bytes(hf_model)
                fuse_activations(hf_model)
                kernels = None
                if device == "cpu" and torch_dtype == torch.float32:
                    if progress is not None:
                        progress(None, "Choosing CPU kernels…")
                    kernels = choose_kernels(hf_model, self.cpu_kernels)
                slot.model = LoadedModel(spec, hf_model, tokenizer, device, torch_dtype, time.perf_counter() - started,
                                         batching=self.batching, weight_bytes=weight_bytes, kernels=kernels)
                if spec.source == "bundled" and device == "cpu" and torch_dtype == torch.float32:
                    slot.model.fast_path = fast_path.start(hf_model, bundled.gguf_path(), self.compile,
                                                           on_active=slot.model.lane.use_one_openmp_thread,
                                                           quiet=lambda lane=slot.model.lane: lane.forwards)
            return slot.model

    def unload(self, name: str) -> None:
        spec = self.resolve(name)
        with self._lock:
            for key in [k for k in self._slots if k[0] == spec.source]:
                del self._slots[key]

    def _load_weights(self, spec: ModelSpec, device: str, dtype: torch.dtype, progress: Progress | None):
        if spec.source == "bundled":
            converted = bundled.ensure_converted(progress)
            if isinstance(converted, tuple):  # cache not writable: use the in-memory conversion
                model, tokenizer = converted
                return model.to(device=device, dtype=dtype).eval(), tokenizer
            return load_pretrained(converted, device, dtype, progress)
        folder = Path(spec.source)
        if folder.is_dir():
            return load_pretrained(folder, device, dtype, progress)
        return load_pretrained(fetch_from_hub(spec.source, progress), device, dtype, progress)

    def _info(self, spec: ModelSpec) -> ModelInfo:
        if any(slot.model is not None and k[0] == spec.source for k, slot in list(self._slots.items())):
            status = "loaded"
        elif spec.source == "bundled":
            status = "bundled"
        elif Path(spec.source).is_dir():
            status = "local folder"
        else:
            status = "cached" if is_cached(spec.source) else "download"
        return ModelInfo(spec.key, spec.label, spec.source, spec.description, status)
