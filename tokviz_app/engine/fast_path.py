"""The bundled model's fast path, prepared in the background while the fp32 model already serves.

Its GGUF holds every matrix as Q4_1 (the embedding / output head as Q8_0) blocks; the fp32 model is those
blocks dequantised. A decoding step reads ~540 MB of fp32 weights, the blocks are ~110 MB: multiplying by
the blocks directly (`exact_quant.c`, built on this machine) gives the same numbers to fp32 rounding at a
fraction of the time. Preparing it (build or load the library, read and verify the blocks, time both paths)
takes seconds, so it runs on its own thread; the page says "optimising…" meanwhile. Layers are swapped one
attribute at a time, each computing the same function, so a forward pass running meanwhile stays right.

TOKVIZ_COMPILE=auto (default: used where it times faster) | on (whenever it can be built) | off.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, ContextManager

import torch

from . import llama_decode
from .kernel_choices import BUSY_CORES, CHOICES_LOCK, OtherProcesses, load_choices, machine_key, save_choices
from .kernels import return_freed_memory
from .openmp import this_threads_openmp
from .quant_library import QuantUnavailable, load_library
from .quant_linear import QuantLinear
from .quant_weights import matched, read_gguf_blocks

MODES = ("auto", "on", "off")  # on: whenever it can be built, without timing it against the fp32 layers
ROW_COUNTS = (1, 4, 8, 16)  # decoding batches timed against the fp32 layers
TIMINGS_WHEN_BUSY = 3  # a verdict against the kernels, timed while other processes used the cores, is timed again
BUSY_PAUSE_S = 2.0
log = logging.getLogger("tokviz.kernels")


def requested_mode(default: str = "auto") -> str:
    mode = os.environ.get("TOKVIZ_COMPILE", default).strip().lower() or default
    if mode not in MODES:
        raise ValueError(f"TOKVIZ_COMPILE={mode!r}: use one of {', '.join(MODES)}")
    return mode


class FastPath:
    """One model's optimisation: running (`optimising`), then `line` says what came of it."""

    def __init__(self, on_active: Callable[[int], None], quiet: Callable[[], ContextManager]) -> None:
        self.on_active = on_active
        self.quiet = quiet  # a context in which no forward pass runs beside the timing
        self.line = "optimising…"
        self.max_rows = 0  # the quantised kernels serve decoding steps of up to this many rows (0: none)
        self._done = threading.Event()
        self.thread: threading.Thread | None = None
        self.exiting = False  # the interpreter is exiting: stop preparing

    @property
    def active(self) -> bool:
        return self.max_rows > 0

    @property
    def optimising(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def finish(self, line: str, max_rows: int = 0) -> None:
        self.line, self.max_rows = line, max_rows
        if max_rows:
            self.on_active(max_rows)
        log.info("%s", line)
        self._done.set()


def start(hf_model: torch.nn.Module, gguf: Path, mode: str, on_active: Callable[[int], None],
          quiet: Callable[[], ContextManager] = contextlib.nullcontext) -> FastPath:
    """Prepare the fast path on a thread of its own; `on_active(max_rows)` runs once its layers serve; each timing
    runs inside `quiet()` (the model's lane held: a step running beside a timing made the kernels look 7x slower)."""
    fast = FastPath(on_active, quiet)
    if mode == "off":
        fast.finish("Fast path off (TOKVIZ_COMPILE=off): the fp32 layers serve.")
        return fast
    fast.thread = threading.Thread(target=prepare, args=(hf_model, gguf, fast, mode), name="tokviz fast path",
                                   daemon=True)
    _preparing.add(fast)
    fast.thread.start()
    return fast


class _Exiting(Exception):
    pass


def _stop_all() -> None:
    """At exit, a daemon thread still inside a torch kernel aborts the process (status 134, as the lane's
    did): the preparation stops at its next layer, and exit waits for it."""
    for fast in list(_preparing):
        fast.exiting = True
    for fast in list(_preparing):
        if fast.thread is not None:
            fast.thread.join(30)


_preparing: weakref.WeakSet[FastPath] = weakref.WeakSet()
atexit.register(_stop_all)


def prepare(hf_model: torch.nn.Module, gguf: Path, fast: FastPath, mode: str = "auto") -> None:
    started = time.perf_counter()
    try:
        library = load_library()
        plan = []
        for path, blocks in read_gguf_blocks(gguf).items():
            if fast.exiting:
                raise _Exiting
            parent_path, _, name = path.rpartition(".")
            module = hf_model.get_submodule(path)
            weight, bias = dense_parameters(module)
            exact = matched(blocks, weight) if weight is not None else None
            if exact is not None:
                parent = hf_model.get_submodule(parent_path) if parent_path else hf_model
                plan.append((path, parent, name, module, exact, bias))
        if not plan:
            raise QuantUnavailable("no layer of the model matches its GGUF's blocks")
        if mode == "on":
            max_rows, timings = library.max_rows, "not timed (TOKVIZ_COMPILE=on)"
        else:
            max_rows, timings = chosen_rows(plan, library, gguf, fast)
        how = f"built in {library.built_seconds:.1f} s" if library.built_seconds else "built before"
        if max_rows == 0:
            fast.finish(f"Fast path not used: its kernels ({how}) were slower than the fp32 layers here ({timings}).")
            return
        with torch.no_grad():
            for _, parent, name, module, blocks, bias in plan:
                setattr(parent, name, QuantLinear(blocks, library, max_rows, bias))
        # the Python around the kernels is now most of a step; the attention runs on the kernels' threads
        lean = llama_decode.install(hf_model, library.parallel)
        megabytes = sum(blocks.nbytes for *_, blocks, _ in plan) / 1e6
        kinds = "/".join(sorted({blocks.kind.upper() for *_, blocks, _ in plan}))
        layers = len(plan)
        plan.clear()  # the fp32 layers replaced: their weights go (a tied head's stay with the embedding)
        return_freed_memory()  # and the dequantised copies the check made
        fast.finish(f"Fast path: exact {kinds} kernels on the GGUF's own blocks ({megabytes:.0f} MB, {how}) for "
                    f"{layers} layers, decoding batches up to {max_rows} rows, more rows through BLAS a "
                    f"dequantised tile at a time{'; one-token steps written out for Llama' if lean else ''}; "
                    f"{timings}; ready in {time.perf_counter() - started:.1f} s.",
                    max_rows)
    except _Exiting:
        fast.finish("Fast path not prepared: the process is exiting.")
    except QuantUnavailable as error:
        fast.finish(f"Fast path unavailable ({error}): the fp32 layers serve.")
    except Exception as error:  # never worse than the fp32 model that already serves
        log.warning("the fast path failed", exc_info=error)
        fast.finish(f"Fast path failed ({type(error).__name__}: {error}): the fp32 layers serve.")


def dense_parameters(module: torch.nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(weight [out, in] fp32, bias) of any layout `kernels.py` may have chosen, else (None, None)."""
    weight = getattr(module, "weight", None)
    if weight is None and getattr(module, "weight_t", None) is not None:  # linear_layouts.NNLinear
        weight = module.weight_t.t()
    if not isinstance(weight, torch.Tensor):
        return None, None
    bias = getattr(module, "bias", None)
    dense = lambda t: t.to_dense() if t.is_mkldnn else t  # noqa: E731  (oneDNN-packed layouts)
    return dense(weight.detach()), None if bias is None else dense(bias.detach())


def verdict_key(gguf: Path, library) -> str:
    """Where `chosen_rows` keeps its verdict in the choice file: per machine, GGUF and built library."""
    return f"{machine_key()}|fast path|{gguf.name} {gguf.stat().st_size} bytes|{library.path.name}"


def chosen_rows(plan: list, library, gguf: Path, fast: FastPath) -> tuple[int, str]:
    """`fastest_rows`' verdict, remembered on disk per machine, GGUF and built library (`kernel_choices.py`), so
    that a later load skips the timing. Other processes on the cores slow the one-thread kernels most (a desktop
    screenshot's Chromium made them look 1.4x slower than the fp32 layers, 2.4x faster idle): a verdict against
    them timed then is timed again after a pause, the best of all rounds counting, and such a timing is never
    remembered."""
    key = verdict_key(gguf, library)
    with CHOICES_LOCK:
        remembered = load_choices().get(key)
    if isinstance(remembered, dict) and remembered.get("max_rows") in (0, *ROW_COUNTS):
        return remembered["max_rows"], f"{remembered.get('timings', '')} (remembered for this machine)"
    best: dict[str, dict[int, float]] = {"quant": {}, "tiles": {}, "fp32": {}}
    for attempt in range(TIMINGS_WHEN_BUSY):
        if attempt:
            time.sleep(BUSY_PAUSE_S)
        if fast.exiting:
            raise _Exiting
        timing = OtherProcesses()
        max_rows, timings = fastest_rows(plan, library, fast.quiet, best)
        others = timing.cores()
        if others < BUSY_CORES or max_rows:
            break
    if others < BUSY_CORES:
        with CHOICES_LOCK:
            save_choices({**load_choices(), key: {"max_rows": max_rows, "timings": timings}})
        return max_rows, timings
    return max_rows, f"{timings} (timed while other processes used {others:.1f} cores: not remembered)"


def fastest_rows(plan: list, library, quiet: Callable[[], ContextManager],
                 best: dict[str, dict[int, float]] | None = None) -> tuple[int, str]:
    """Time a step's matrix products at 1-16 rows: on the kernels, on the dequantised tiles that serve wider batches
    once the fp32 layers are gone, and (one row) on the fp32 layers. The fast path serves if its kernels beat the
    fp32 layers at one row (0 otherwise), and its kernels take batches up to the largest row count at which they
    beat the tiles. Every layer once per round, as a step streams the weights from memory: one block's layers
    timed again and again ran from the cache, where fp32 won at 16 rows and lost in real steps. `best` (the
    fastest round of each path and row count) may hold an earlier timing's rounds."""
    paths = {"quant": [QuantLinear(blocks, library, library.max_rows, bias) for *_, blocks, bias in plan],
             "tiles": [QuantLinear(blocks, library, 0, bias) for *_, blocks, bias in plan],
             "fp32": [module for _, _, _, module, _, _ in plan]}
    threads = {"quant": 1, "tiles": None, "fp32": None}  # as decoding steps run them
    best = {kind: {} for kind in paths} if best is None else best
    with torch.inference_mode():
        for rows in ROW_COUNTS:
            inputs = [torch.randn(1, rows, layer.in_features) for layer in paths["quant"]]
            for round_ in range(3):  # interleaved rounds, best of each
                for kind, layers in paths.items():
                    # fp32 decides at one row only; the tiles dequantise every layer each round (0.07-0.2 s
                    # a round, 2-3x the kernels' time on a 2-core EPYC): one round tells, ~1 s sooner ready
                    if kind == "fp32" and rows > 1 or kind == "tiles" and round_ > 0:
                        continue
                    with quiet(), this_threads_openmp(threads[kind]):
                        layers[0](inputs[0])  # wakes the threads the timing uses
                        t0 = time.perf_counter()
                        for layer, x in zip(layers, inputs):
                            layer(x)
                        seconds = time.perf_counter() - t0
                    best[kind][rows] = min(best[kind].get(rows, seconds), seconds)
    max_rows = 0
    if best["quant"][1] < best["fp32"][1]:
        for rows in ROW_COUNTS:
            if best["quant"][rows] >= best["tiles"][rows]:
                break
            max_rows = rows
    ms = lambda kind: "/".join(f"{seconds * 1e3:.2f}" for seconds in best[kind].values())  # noqa: E731
    return max_rows, f"ms for a step's matrix products at {'/'.join(map(str, ROW_COUNTS))} rows: " \
                     f"quantised {ms('quant')}, dequantised tiles {ms('tiles')}, fp32 {ms('fp32')} at 1 row"

