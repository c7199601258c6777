"""CPU kernels chosen by measurement, per layer shape, on the machine at hand.

Which fp32 GEMM is fastest for the 1-16 rows of a decoding step depends on the CPU
and even on the row count: oneDNN-packed weights were 1.4x faster than PyTorch's
default on one 2-core AMD EPYC and 1.4x *slower* on a 2-core Xeon; a pre-transposed
weight was 2.8x faster for GPT-2's output head at 8 rows on that Xeon. So at load
we time the candidate layouts of every distinct linear shape (one row, a batch of 8
and a prefill chunk) and keep the fastest; the choice is remembered on disk per CPU
model, thread count, torch version and shape, so later loads skip the timing.

Layouts (all compute y = x W^T + b in fp32, so the numbers agree within rounding):
- "nt":     weight [out, in] (nn.Linear's own layout), y = x @ W.T
- "nn":     weight [in, out] (GPT-2 Conv1D's own layout), y = x @ W
- "packed": oneDNN (mkldnn) packed weight
"as loaded" keeps whichever of nt/nn the checkpoint has and costs no memory.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

LAYOUTS = ("nt", "nn", "packed")
CHOICES = ("auto", "plain", *LAYOUTS)  # TOKVIZ_CPU_KERNELS; "plain" = as loaded, no timing
ROWS_STEP, ROWS_BATCH, ROWS_PREFILL = 1, 8, 64
PREFILL_SLACK = 1.1  # a layout may not make prefill slower than the loaded layout by more than this
BUSY_CORES = 0.3  # other processes using more than this many cores during the timing: not remembered

log = logging.getLogger("tokviz.kernels")
_cache_lock = threading.Lock()


# ------------------------------------------------------------------ layer modules
class NNLinear(torch.nn.Module):
    """y = x @ W + b with W stored [in, out] contiguous (one NN GEMM)."""

    def __init__(self, weight_in_out: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight_t = torch.nn.Parameter(weight_in_out, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
        return out.view(*x.shape[:-1], out.shape[-1])


class NTLinear(torch.nn.Linear):
    """nn.Linear built from a Conv1D's [in, out] weight (stored [out, in])."""

    def __init__(self, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = weight_out_in.shape[1], weight_out_in.shape[0]
        self.weight = torch.nn.Parameter(weight_out_in, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)


def _packed(weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():  # its TorchScript base class warns about a deprecation we do not use
        warnings.simplefilter("ignore", FutureWarning)
        from torch.utils.mkldnn import MkldnnLinear

    dense = torch.nn.Linear(weight_out_in.shape[1], weight_out_in.shape[0], bias=bias is not None)
    dense.weight = torch.nn.Parameter(weight_out_in.contiguous(), requires_grad=False)
    if bias is not None:
        dense.bias = torch.nn.Parameter(bias, requires_grad=False)
    return MkldnnLinear(dense, torch.float32)


# ------------------------------------------------------------------ the model's linear layers
@dataclass
class _Layer:
    parent: torch.nn.Module
    name: str
    module: torch.nn.Module
    loaded: str  # "nt" or "nn"

    @property
    def weight_out_in(self) -> torch.Tensor:
        w = self.module.weight.detach()
        return w if self.loaded == "nt" else w.t()

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.module.bias is None else self.module.bias.detach()

    @property
    def shape(self) -> tuple[int, int, bool]:
        out_features, in_features = self.weight_out_in.shape
        return in_features, out_features, self.bias is not None


def linear_layers(model: torch.nn.Module) -> list[_Layer]:
    from transformers.pytorch_utils import Conv1D

    layers = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear:
                layers.append(_Layer(parent, name, child, "nt"))
            elif isinstance(child, Conv1D):  # y = x @ W + b with W [in, out]
                layers.append(_Layer(parent, name, child, "nn"))
    return layers


def _tied(model: torch.nn.Module, layer: _Layer) -> bool:
    """True when the layer's weight is shared with another parameter (GPT-2's output head and embeddings)."""
    return any(p is layer.module.weight for n, p in model.named_parameters(remove_duplicate=False)
               if not n.endswith(f"{layer.name}.weight"))


def _candidates(layer: _Layer, tied: bool) -> tuple[str, ...]:
    if tied:  # another copy would cost the whole matrix again; a view keeps one copy
        return ("nt", "nn")
    return LAYOUTS if torch.backends.mkldnn.is_available() else ("nt", "nn")


def _build(layout: str, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    if layout == "nt":
        return NTLinear(weight_out_in.contiguous(), bias)
    if layout == "nn":
        return NNLinear(weight_out_in.t().contiguous(), bias)
    return _packed(weight_out_in, bias)


# ------------------------------------------------------------------ timing
ROUNDS = 4  # interleaved rounds: a burst of other work hits every layout alike; the best round counts


def _call_seconds(module: torch.nn.Module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    module(x)
    return time.perf_counter() - started


def _others_busy_cores() -> float:
    """CPU time used since boot by everything but this process, in core-seconds (Linux; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0
    own = os.times()
    return busy - own.user - own.system


def measure(layer: _Layer, layouts: tuple[str, ...]) -> tuple[dict[str, dict[int, float]], bool]:
    """Seconds per call of each layout at 1, 8 and 64 rows (best of interleaved rounds), and
    whether the measurement looks steady enough to remember (the median round within 1.5x of the best)."""
    in_features = layer.shape[0]
    weight, bias = layer.weight_out_in, layer.bias
    modules = {k: layer.module if k == layer.loaded else _build(k, weight, bias) for k in layouts}
    inputs = {rows: torch.randn(1, rows, in_features) for rows in (ROWS_STEP, ROWS_BATCH, ROWS_PREFILL)}
    samples: dict[str, dict[int, list[float]]] = {k: {rows: [] for rows in inputs} for k in layouts}
    with torch.inference_mode():
        for module in modules.values():  # warm-up: first-call allocation and packing
            module(inputs[ROWS_STEP])
        for _ in range(ROUNDS):
            for k, module in modules.items():
                for rows, x in inputs.items():
                    samples[k][rows].append(_call_seconds(module, x))
    best = {k: {rows: min(v) for rows, v in by_rows.items()} for k, by_rows in samples.items()}
    steady = all(sorted(v)[len(v) // 2] <= 1.5 * min(v) + 50e-6 for by_rows in samples.values() for v in by_rows.values())
    return best, steady


def pick(times: dict[str, dict[int, float]], loaded: str) -> str:
    """The layout with the least step + batch time that keeps prefill within 10 % of the loaded layout's.

    Ties within 3 % go to the loaded layout (no copy, no memory)."""
    prefill_limit = times[loaded][ROWS_PREFILL] * PREFILL_SLACK
    allowed = [k for k, t in times.items() if t[ROWS_PREFILL] <= prefill_limit] or [loaded]
    cost = {k: times[k][ROWS_STEP] + times[k][ROWS_BATCH] for k in allowed}
    best = min(cost, key=cost.get)
    return loaded if cost[loaded] <= cost[best] * 1.03 else best


# ------------------------------------------------------------------ the remembered choice
def machine_key() -> str:
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model_name}|{torch.get_num_threads()} threads|torch {torch.__version__}"


def _choice_file() -> Path:
    from .bundled import cache_root

    return cache_root() / "cpu-kernels.json"


def _load_choices() -> dict:
    try:
        return json.loads(_choice_file().read_text())
    except (OSError, ValueError):
        return {}


def _save_choices(choices: dict) -> None:
    path = _choice_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(choices, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as error:  # a read-only cache only costs the timing next time
        log.warning("could not remember the CPU kernel choice: %s", error)


# ------------------------------------------------------------------ applying
@dataclass
class KernelReport:
    mode: str
    chosen: dict[str, str]  # shape -> layout
    seconds: float  # calibration time (0 when remembered)
    timings: dict[str, dict[str, dict[int, float]]]  # shape -> layout -> rows -> seconds (new timings only)

    def line(self) -> str:
        def timed(shape: str) -> str:
            if shape not in self.timings:
                return ""
            ms = "; ".join(f"{k} {t[ROWS_STEP] * 1e3:.2f}/{t[ROWS_BATCH] * 1e3:.2f}/{t[ROWS_PREFILL] * 1e3:.1f}"
                           for k, t in self.timings[shape].items())
            return f" [ms at 1/8/64 rows: {ms}]"

        shapes = ", ".join(f"{shape}: {layout}{timed(shape)}" for shape, layout in self.chosen.items())
        how = "remembered" if self.seconds == 0 else f"measured in {self.seconds:.2f} s"
        return f"CPU kernels ({self.mode}, {how}): {shapes or 'none'}"


def requested_mode(default: str = "auto") -> str:
    mode = os.environ.get("TOKVIZ_CPU_KERNELS", default).strip().lower() or default
    if mode not in CHOICES:
        raise ValueError(f"TOKVIZ_CPU_KERNELS={mode!r}: use one of {', '.join(CHOICES)}")
    return mode


def choose_kernels(model: torch.nn.Module, mode: str = "auto") -> KernelReport:
    """Replace the model's linear layers by the fastest layout for this machine (fp32 CPU models only)."""
    started = time.perf_counter()
    layers = linear_layers(model)
    if mode == "plain" or not layers:
        return KernelReport("plain", {}, 0.0, {})
    machine = machine_key()
    with _cache_lock:
        remembered = _load_choices() if mode == "auto" else {}
    chosen: dict[str, str] = {}
    timings: dict[str, dict[str, dict[int, float]]] = {}
    others_before, wall_before = _others_busy_cores(), time.perf_counter()
    new_keys = {}
    for layer in layers:
        tied = _tied(model, layer)
        shape = "{}x{}{}{}".format(*layer.shape[:2], "+bias" if layer.shape[2] else "", " tied" if tied else "")
        key = f"{machine}|{shape}|loaded {layer.loaded}"
        if shape in chosen:
            continue
        if mode != "auto":
            chosen[shape] = mode if mode in _candidates(layer, tied) else layer.loaded
        elif key in remembered:
            chosen[shape] = remembered[key]
        else:
            timings[shape], steady = measure(layer, _candidates(layer, tied))
            chosen[shape] = pick(timings[shape], layer.loaded)
            if steady:
                new_keys[key] = chosen[shape]
    # Other processes on the cores make every multi-threaded call wait for its time slice: such timings
    # serve this process only, and the next load measures again.
    others = (_others_busy_cores() - others_before) / max(time.perf_counter() - wall_before, 1e-3)
    if others < BUSY_CORES:
        remembered.update(new_keys)
    if timings:
        with _cache_lock:
            _save_choices({**_load_choices(), **remembered})
    changed = _apply(model, layers, chosen)
    report = KernelReport(mode, chosen, time.perf_counter() - started if timings else 0.0, timings)
    log.info("%s", report.line())
    if changed:
        _own_remaining_tensors(model)
    return report


def _apply(model: torch.nn.Module, layers: list[_Layer], chosen: dict[str, str]) -> int:
    changed = 0
    for layer in layers:
        tied = _tied(model, layer)
        shape = "{}x{}{}{}".format(*layer.shape[:2], "+bias" if layer.shape[2] else "", " tied" if tied else "")
        layout = chosen[shape]
        if layout == layer.loaded:
            continue
        new = _build(layout, layer.weight_out_in, layer.bias)
        if tied and layout == "nn":  # the tied embedding reads the same storage through a transposed view
            _retie_embeddings(model, layer.module.weight, new.weight_t)
        setattr(layer.parent, layer.name, new)
        changed += 1
    return changed


def _retie_embeddings(model: torch.nn.Module, old: torch.Tensor, new_in_out: torch.nn.Parameter) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding) and module.weight is old:
            module.weight = torch.nn.Parameter(new_in_out.t(), requires_grad=False)


def _own_remaining_tensors(model: torch.nn.Module) -> None:
    """Copy what still points into the memory-mapped checkpoint, so the mapping (and the
    pages of the replaced weights) can go; then hand freed memory back to the OS.
    Only tensors inside a mapped checkpoint are copied: copying the new layers too cost
    fragmented heap memory (RSS 1.37x the weights instead of ~1.1x)."""
    mapped = _mapped_checkpoints()
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_mkldnn or not tensor.is_contiguous():
                continue
            pointer = tensor.untyped_storage().data_ptr()
            if mapped is None or any(start <= pointer < end for start, end in mapped):
                tensor.data = tensor.data.clone()
    return_freed_memory()


def _mapped_checkpoints() -> list[tuple[int, int]] | None:
    """Address ranges of memory-mapped weight files (None where /proc cannot tell: copy everything)."""
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        if line.rstrip().endswith((".safetensors", ".bin", ".gguf")):
            start, end = line.split()[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def return_freed_memory() -> None:
    """glibc keeps large freed buffers (unpacked weights, KV caches) in its arenas; hand them back."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
