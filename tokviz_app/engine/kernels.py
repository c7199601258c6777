"""CPU kernels chosen by measurement, per layer shape, on the machine at hand.

Which fp32 GEMM is fastest for the 1-16 rows of a decoding step depends on the CPU
and even on the row count: oneDNN-packed weights were 1.4x faster than PyTorch's
default on one 2-core AMD EPYC and 1.4x *slower* on a 2-core Xeon; a pre-transposed
weight was 2.8x faster for GPT-2's output head at 8 rows on that Xeon. So at load
we time the candidate layouts (`linear_layouts.py`) of every distinct linear shape
(one row, a batch of 8 and a prefill chunk) and keep the fastest; the choice is
remembered on disk (`kernel_choices.py`), so later loads skip the timing.
"As loaded" keeps whichever of nt/nn the checkpoint has and costs no memory.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .kernel_choices import BUSY_CORES, CHOICES_LOCK, OtherProcesses, load_choices, machine_key, save_choices
from . import few_rows, linear_layouts
from .linear_layouts import LAYOUTS, LinearLayer, build, candidates, linear_layers, shape_key, shared_parameters

CHOICES = ("auto", "plain", *LAYOUTS)  # TOKVIZ_CPU_KERNELS; "plain" = as loaded, no timing
ROWS_STEP, ROWS_BATCH, ROWS_PREFILL = 1, 8, 64
# A layout may not make a 64-row prompt chunk slower than the loaded layout by more than this. It keeps out a
# layout that triples prefill (oneDNN-packed on a Xeon), not `rows`, which feeds prompts as `nt` does: on a 2-core
# EPYC `nt` ran GPT-2's nn-loaded layers 1.13-1.27x slower than `nn` at 64 rows, but within 0-7 % at 1,000 (a
# prompt fed alone, in one pass), and chunks fed beside streaming tabs are ~16 rows, which the kernel takes;
# while its 1-16 rows ran 1.2-2.5x faster than any BLAS layout (a 1.1 guard kept it out of three of GPT-2's shapes).
PREFILL_SLACK = 1.5

log = logging.getLogger("tokviz.kernels")


# ------------------------------------------------------------------ timing
ROUNDS = 4  # interleaved rounds: a burst of other work hits every layout alike; the best round counts
# The prompt chunk only has to pass the loose guard above, and it is the slow part (GPT-2's output head: ~150 ms
# a call at 64 rows, ~1.2 s of the timing's 3.2-3.4 s in four rounds on a 2-core EPYC): the first rounds
# time it; after them a layout whose step + batch time is more than FAR_BEHIND times the best is not timed again.
PREFILL_ROUNDS = 2
FAR_BEHIND = 2.0


def _call_seconds(module: torch.nn.Module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    module(x)
    return time.perf_counter() - started


def measure(layer: LinearLayer, layouts: tuple[str, ...]) -> tuple[dict[str, dict[int, float]], bool]:
    """Seconds per call of each layout at 1, 8 and 64 rows (best of interleaved rounds), and
    whether the measurement looks steady enough to remember (the median round within 1.5x of the best)."""
    in_features = layer.shape[0]
    weight, bias = layer.weight_out_in, layer.bias
    modules = {k: layer.module if k == layer.loaded else build(k, weight, bias) for k in layouts}
    inputs = {rows: torch.randn(1, rows, in_features) for rows in (ROWS_STEP, ROWS_BATCH, ROWS_PREFILL)}
    samples: dict[str, dict[int, list[float]]] = {k: {rows: [] for rows in inputs} for k in layouts}
    with torch.inference_mode():
        for module in modules.values():  # warm-up: first-call allocation and packing
            module(inputs[ROWS_STEP])
        for round_ in range(ROUNDS):
            if round_ == PREFILL_ROUNDS:
                cost = {k: min(samples[k][ROWS_STEP]) + min(samples[k][ROWS_BATCH]) for k in modules}
                modules = {k: m for k, m in modules.items() if cost[k] <= FAR_BEHIND * min(cost.values())}
            for k, module in modules.items():
                for rows, x in inputs.items():
                    if rows == ROWS_PREFILL and (round_ >= PREFILL_ROUNDS or (k == "rows" and "nt" in layouts)):
                        continue  # (rows feeds prompt chunks through nt's call: nt's samples serve both)
                    samples[k][rows].append(_call_seconds(module, x))
    if "rows" in samples and "nt" in samples:
        samples["rows"][ROWS_PREFILL] = samples["nt"][ROWS_PREFILL]
    best = {k: {rows: min(v) for rows, v in by_rows.items()} for k, by_rows in samples.items()}
    steady = all(sorted(v)[len(v) // 2] <= 1.5 * min(v) + 50e-6 for by_rows in samples.values() for v in by_rows.values())
    return best, steady


def pick(times: dict[str, dict[int, float]], loaded: str) -> str:
    """The layout with the least step + batch time that keeps a prompt chunk within PREFILL_SLACK of the loaded
    layout's.

    Ties within 3 % go to the loaded layout (no copy, no memory)."""
    prefill_limit = times[loaded][ROWS_PREFILL] * PREFILL_SLACK
    allowed = [k for k, t in times.items() if t[ROWS_PREFILL] <= prefill_limit] or [loaded]
    cost = {k: times[k][ROWS_STEP] + times[k][ROWS_BATCH] for k in allowed}
    best = min(cost, key=cost.get)
    return loaded if cost[loaded] <= cost[best] * 1.03 else best


@functools.cache
def code_revision() -> str:
    """A short hash of the code that times and runs the layouts: a choice made on other code is made again (the
    `rows` layout once sent one row to BLAS, and the choices timed then outlived the change)."""
    sources = (Path(__file__), Path(linear_layouts.__file__), few_rows.SOURCE)
    return hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:12]


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
    with CHOICES_LOCK:
        remembered = load_choices() if mode == "auto" else {}
    chosen: dict[str, str] = {}
    timings: dict[str, dict[str, dict[int, float]]] = {}
    others = OtherProcesses()
    new_keys = {}
    shared = shared_parameters(model)
    placed = [(layer, id(layer.module.weight) in shared) for layer in layers]
    for layer, tied in placed:
        shape, options = shape_key(layer, tied), candidates(layer, tied)
        # A choice among other candidates (a new layout, a kernel that no longer builds) or on other code is
        # made again.
        key = f"{machine}|{shape}|loaded {layer.loaded} of {'/'.join(options)} (layouts {code_revision()})"
        if shape in chosen:
            continue
        if mode != "auto":
            chosen[shape] = mode if mode in options else layer.loaded
        elif key in remembered:
            chosen[shape] = remembered[key]
        else:
            timings[shape], steady = measure(layer, options)
            chosen[shape] = pick(timings[shape], layer.loaded)
            if steady:
                new_keys[key] = chosen[shape]
    # Other processes on the cores make every multi-threaded call wait for its time slice: such timings
    # serve this process only, and the next load measures again.
    if others.cores() < BUSY_CORES:
        remembered.update(new_keys)
    if timings:
        with CHOICES_LOCK:
            save_choices({**load_choices(), **remembered})
    changed = _apply(model, placed, chosen)
    report = KernelReport(mode, chosen, time.perf_counter() - started if timings else 0.0, timings)
    log.info("%s", report.line())
    if changed:
        _own_remaining_tensors(model)
    return report


def _apply(model: torch.nn.Module, placed: list[tuple[LinearLayer, bool]], chosen: dict[str, str]) -> int:
    changed = 0
    for layer, tied in placed:
        layout = chosen[shape_key(layer, tied)]
        if layout == layer.loaded:
            continue
        new = build(layout, layer.weight_out_in, layer.bias)
        if tied and layout == "nn":  # the tied embedding reads the same storage through a transposed view
            _retie_embeddings(model, layer.module.weight, new.weight_t)
        elif tied and layout == "rows":  # the same [out, in] weight: one Parameter, or a later copy makes two
            new.weight = layer.module.weight
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
