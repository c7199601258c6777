"""Build and load tokviz's C kernels (`exact_quant.c`, `row_stats.c`, `few_rows.c`): compiled once on the user's
machine (-march=native), remembered on disk.

The shared library is keyed by the source, the compiler, its flags and the CPU, so a later start loads it
in milliseconds and another machine (or a newer compiler) builds its own. Where no C compiler is found or the
build fails, `QuantUnavailable` says why and the caller keeps the fp32 path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("exact_quant.c")
# -fopenmp: the dequantisation runs on torch's own OpenMP runtime (the library names libgomp.so.1, which torch
# has loaded already); where a compiler has no OpenMP, it builds without it and dequantises on one thread
FLAGS = ("-O3", "-march=native", "-pthread", "-fopenmp", "-shared", "-fPIC")
_build_lock = threading.Lock()


class QuantUnavailable(RuntimeError):
    """The exact quantised kernels cannot run here (the message says why)."""


@dataclass
class QuantLibrary:
    path: Path
    built_seconds: float  # 0 where it was already built
    max_rows: int
    vector_width: int  # fp32 lanes of the vector unit it was built for (1: no AVX2, scalar code)
    q4_1: ctypes._CFuncPtr
    q8_0: ctypes._CFuncPtr
    q4_1_dequantise: ctypes._CFuncPtr  # (quants, scales, mins, out [N, K], N, K)
    q8_0_dequantise: ctypes._CFuncPtr  # (quants, scales, out [N, K], N, K)
    parallel: int  # the address of tokviz_parallel (its thread pool), for other kernels of a step to run on


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise QuantUnavailable("no C compiler (cc, gcc or clang) was found")


def _cpu_line() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    wanted = [line for line in lines if line.startswith(("model name", "flags"))]
    return "\n".join(wanted[:2])


def _source_text(source: Path) -> str:
    """The source and the local headers it includes (`#include "name.h"`, beside it): a changed header is a
    different library."""
    text = source.read_text()
    headers = re.findall(r'^#include "([^"]+)"', text, flags=re.MULTILINE)
    return "\n".join([text, *(source.with_name(header).read_text() for header in headers)])


def library_path(compiler: str, source: Path = SOURCE, flags: tuple[str, ...] = FLAGS) -> Path:
    from .bundled import cache_root

    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as error:
        raise QuantUnavailable(f"the C compiler does not run: {error}") from error
    key = hashlib.sha256("\n".join([_source_text(source), version, " ".join(flags), _cpu_line()]).encode())
    return cache_root() / "kernels" / f"{source.stem}-{key.hexdigest()[:16]}.so"


def build(path: Path, compiler: str, source: Path = SOURCE, flags: tuple[str, ...] = FLAGS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        done = subprocess.run([compiler, *flags, str(source), "-o", str(tmp)], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0:
            raise QuantUnavailable(f"the C compiler failed: {done.stderr.strip()[-500:]}")
        tmp.replace(path)  # atomic: another process never loads half a file
    except (OSError, subprocess.SubprocessError) as error:
        raise QuantUnavailable(f"building the kernels failed: {error}") from error
    finally:
        tmp.unlink(missing_ok=True)


def native_arch() -> str:
    """What `-march=native` builds for: `native`, or TOKVIZ_NATIVE_ARCH (e.g. `x86-64-v3`, the AVX2 code on an
    AVX-512 machine: to measure or test the code other CPUs run)."""
    return os.environ.get("TOKVIZ_NATIVE_ARCH", "").strip() or "native"


def target_flags(flags: tuple[str, ...], arch: str | None = None) -> tuple[str, ...]:
    """`flags` with `-march=native` made `-march=arch` (by default TOKVIZ_NATIVE_ARCH's)."""
    arch = arch or native_arch()
    return tuple(f"-march={arch}" if flag == "-march=native" else flag for flag in flags)


def load_shared(source: Path, flags: tuple[str, ...]) -> tuple[ctypes.CDLL, Path, float]:
    """`source` built with `flags` (once per machine, compiler and source) and loaded: (library, its path,
    seconds spent building: 0 where it was built already)."""
    import time

    started = time.perf_counter()
    flags = target_flags(flags)
    with _build_lock:
        compiler = _compiler()
        path = library_path(compiler, source, flags)
        fresh = not path.is_file()
        if fresh:
            build(path, compiler, source, flags)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as error:
            raise QuantUnavailable(f"the built kernels do not load: {error}") from error
    return lib, path, time.perf_counter() - started if fresh else 0.0


def load_library(flags: tuple[str, ...] = FLAGS) -> QuantLibrary:
    try:
        lib, path, built_seconds = load_shared(SOURCE, flags)
    except QuantUnavailable:
        if "-fopenmp" not in flags:
            raise
        lib, path, built_seconds = load_shared(SOURCE, tuple(f for f in flags if f != "-fopenmp"))
    pointer, rows, width = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.tokviz_q4_1_matmul.argtypes = [pointer, rows, rows, pointer, pointer, pointer, pointer, rows, width]
    lib.tokviz_q8_0_matmul.argtypes = [pointer, rows, rows, pointer, pointer, pointer, rows, width]
    lib.tokviz_q4_1_dequantise.argtypes = [pointer, pointer, pointer, pointer, rows, rows]
    lib.tokviz_q8_0_dequantise.argtypes = [pointer, pointer, pointer, rows, rows]
    for function in (lib.tokviz_q4_1_matmul, lib.tokviz_q8_0_matmul, lib.tokviz_q4_1_dequantise,
                     lib.tokviz_q8_0_dequantise):
        function.restype = ctypes.c_int
    return QuantLibrary(path, built_seconds, lib.tokviz_max_rows(), lib.tokviz_vector_width(),
                        lib.tokviz_q4_1_matmul, lib.tokviz_q8_0_matmul, lib.tokviz_q4_1_dequantise,
                        lib.tokviz_q8_0_dequantise, ctypes.cast(lib.tokviz_parallel, ctypes.c_void_p).value)


class LazyFunction:
    """One C function of `source`, built and loaded on its first use. Calling it gives the function, or None
    where it cannot be built here: `unavailable` then says why, once in the log too."""

    def __init__(self, source: Path, flags: tuple[str, ...], name: str, argtypes: list, without: str) -> None:
        self._args = (source, flags, name, argtypes, without)
        self._lock = threading.Lock()
        self._function: ctypes._CFuncPtr | None = None
        self.unavailable: str | None = None

    def __call__(self) -> ctypes._CFuncPtr | None:
        source, flags, name, argtypes, without = self._args
        with self._lock:
            if self._function is None and self.unavailable is None:
                try:
                    function = getattr(load_shared(source, flags)[0], name)
                except QuantUnavailable as error:
                    self.unavailable = str(error)
                    logging.getLogger("tokviz.kernels").info("%s: %s", without, error)
                    return None
                function.argtypes, function.restype = argtypes, ctypes.c_int
                self._function = function
            return self._function

    def fresh(self, flags: tuple[str, ...] | None = None) -> "LazyFunction":
        """The same function not yet loaded (tests: what a first use does on this machine), built with `flags`
        where given (tests: the code for other instruction sets)."""
        source, own_flags, *rest = self._args
        return LazyFunction(source, own_flags if flags is None else flags, *rest)

    def for_arch(self, arch: str) -> "LazyFunction":
        """The same function built for `-march=arch` (tests: the code other CPUs run, e.g. x86-64-v3 for AVX2)."""
        return self.fresh(target_flags(self._args[1], arch))
