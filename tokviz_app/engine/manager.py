"""Load models once per process and share them between all tabs."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from . import bundled
from .catalog import BUNDLED_KEY, CATALOG, ModelSpec, hub_reachable, is_cached
from .kernels import KernelReport, choose_kernels, requested_mode
from .devices import dtype_name, resolve_device, resolve_dtype
from .lane import InferenceLane
from .errors import ModelNotFoundError, PromptTooLongError, TokvizError
from .loading import Progress, check_hub_id, fetch_from_hub, load_pretrained, looks_like_path
from .remote import RemoteCatalog, RemoteModel, ServerConfig
from .session import GenerationSession
from .texts import TokenTexts, prompt_ids, search_vocabulary
from .types import ModelInfo, SamplingParams


class LoadedModel:
    """A causal LM and its tokenizer on one device.

    Thread-safe: all forward passes go through its inference lane, which batches
    the decoding steps of concurrent sessions.
    """

    def __init__(self, spec: ModelSpec, hf_model, tokenizer, device: str, dtype: torch.dtype, load_seconds: float,
                 *, batching: bool = True):
        self.key = spec.key
        self.label = spec.label
        self.source = spec.source
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype_name(dtype)
        self.load_seconds = load_seconds
        self.weight_bytes = sum(p.numel() * p.element_size() for p in hf_model.parameters())
        config = hf_model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        self.vocab_size = int(config.get_text_config().vocab_size)
        eos = getattr(config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        eos_ids.add(tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(i for i in eos_ids if i is not None)
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._texts = TokenTexts(tokenizer)
        self.lane = InferenceLane(hf_model, device, batching=batching)
        self._vocab_texts: list[str] | None = None  # built on the first vocabulary search
        self.kernels: KernelReport | None = None  # the CPU kernel choice, where one was made

    # --------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        """(readable text, partial-UTF-8 flag) of one token."""
        return self._texts.text(token_id)

    # --------------------------------------------------------------- sessions
    def start(self, prompt: str, params: SamplingParams | None = None, *,
              should_stop: Callable[[], bool] | None = None) -> GenerationSession:
        """A new session: the prompt is tokenised once and scored in one pass (chunked).

        `should_stop` is asked between chunks of the prompt; when it says so, CancelledWork is raised."""
        params = params or SamplingParams()
        ids, bos_added = prompt_ids(self.encode, prompt, self.bos_token_id)
        if len(ids) > self.context_length:
            raise PromptTooLongError(
                f"The prompt is {len(ids)} tokens long, but {self.label} reads at most {self.context_length} tokens. "
                f"Shorten it by at least {len(ids) - self.context_length} tokens."
            )
        return GenerationSession(self, ids, params, bos_added=bos_added, should_stop=should_stop)

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: Callable[[], bool] | None = None) -> GenerationSession:
        if not ids:
            raise TokvizError("A session needs at least one token.")
        if len(ids) > self.context_length:
            raise PromptTooLongError(f"{len(ids)} tokens do not fit the context of {self.context_length}.")
        return GenerationSession(self, list(ids), params or SamplingParams(), bos_added=False,
                                 should_stop=should_stop)

    def restore(self, snapshot) -> GenerationSession:
        """A live session from an exported snapshot: same tokens and numbers, no re-scoring."""
        ids = list(snapshot.prompt_ids)
        total = len(ids) + max((len(b.tokens) for b in snapshot.branches), default=0)
        if total > self.context_length:
            raise PromptTooLongError(f"This session has {total} tokens; {self.label} reads at most "
                                     f"{self.context_length}.")
        if any(i >= self.vocab_size for i in ids):
            raise TokvizError(f"This session was made with a different vocabulary than {self.label}'s.")
        return GenerationSession(self, ids, snapshot.settings, bos_added=False, restore=snapshot)

    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        """Vocabulary search by readable text: exact matches first, then prefixes, then substrings."""
        if not query:
            return []
        if self._vocab_texts is None:
            self._vocab_texts = [self.token_text(i)[0] for i in range(self.vocab_size)]
        return search_vocabulary(self._vocab_texts, query, limit)

    def info(self) -> ModelInfo:
        return ModelInfo(self.key, self.label, self.source, status="loaded",
                         extra={"device": self.device, "dtype": self.dtype, "context_length": self.context_length,
                                "vocab_size": self.vocab_size, "load_seconds": round(self.load_seconds, 2)})


@dataclass
class _Slot:
    lock: threading.Lock = field(default_factory=threading.Lock)
    model: LoadedModel | None = None


class ModelManager:
    """One per process: resolves names, loads each (model, device, dtype) once, shares it."""

    def __init__(self, device: str = "auto", dtype: str | None = None, *, batching: bool = True,
                 cpu_kernels: str | None = None, servers: Sequence[str | ServerConfig] = ()) -> None:
        self.device = device
        self.dtype = dtype
        self.batching = batching  # one batched inference lane per model
        # CPU fp32 linear layers: "auto" (timed per shape, remembered), "plain", "nt", "nn" or "packed"
        self.cpu_kernels = requested_mode() if cpu_kernels is None else cpu_kernels
        self._specs: dict[str, ModelSpec] = {spec.key: spec for spec in CATALOG}
        self._slots: dict[tuple[str, str, str], _Slot] = {}
        self._lock = threading.Lock()
        # OpenAI-compatible servers (`--server URL`): their models are catalog entries with status "remote"
        self.remote = RemoteCatalog(servers) if servers else None

    def _remote_key(self, name: str) -> bool:
        return self.remote is not None and self.remote.has((name or "").strip())

    # --------------------------------------------------------------- catalog
    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """Offer an extra model (hub id or local folder); returns its catalog entry.

        `offer=False` only checks the name: a name typed in a page joins everyone's catalog once it has
        loaded, so failed names and odd folders never show up in other tabs."""
        if self._remote_key(name):
            return self.remote.info(name.strip())  # type: ignore[union-attr]
        spec = self.resolve(name)
        if offer:
            with self._lock:
                self._specs.setdefault(spec.key, spec)
        return self._info(spec)

    def catalog(self) -> list[ModelInfo]:
        with self._lock:
            specs = list(self._specs.values())
        return [self._info(spec) for spec in specs] + (self.remote.infos() if self.remote else [])

    def default_key(self) -> str:
        """GPT-2 where it is cached or the hub is reachable; otherwise the bundled model."""
        gpt2 = self._specs["gpt2"]
        return "gpt2" if is_cached(gpt2.source) or hub_reachable() else BUNDLED_KEY

    def loaded(self) -> list[LoadedModel]:
        with self._lock:
            local = [slot.model for slot in self._slots.values() if slot.model is not None]
        return local + (self.remote.loaded() if self.remote else [])  # type: ignore[operator]

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
    def load(self, name: str, device: str | None = None, dtype: str | None = None,
             progress: Progress | None = None) -> LoadedModel | RemoteModel:
        """Load (or return the already loaded) model. Concurrent calls load it once."""
        if self._remote_key(name):
            return self.remote.load(name.strip(), progress)  # type: ignore[union-attr]
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
                weight_bytes = sum(p.numel() * p.element_size() for p in hf_model.parameters())
                kernels = None
                if device == "cpu" and torch_dtype == torch.float32:
                    if progress is not None:
                        progress(None, "Choosing CPU kernels…")
                    kernels = choose_kernels(hf_model, self.cpu_kernels)
                slot.model = LoadedModel(spec, hf_model, tokenizer, device, torch_dtype, time.perf_counter() - started,
                                         batching=self.batching)
                slot.model.weight_bytes = weight_bytes
                slot.model.kernels = kernels
            return slot.model

    def unload(self, name: str) -> None:
        if self._remote_key(name):
            self.remote.unload(name.strip())  # type: ignore[union-attr]
            return
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
