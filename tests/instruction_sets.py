"""The C kernels as this machine builds them (-march=native) and as an AVX2-only machine does (x86-64-v3), where
this CPU runs that code: an AVX-512 machine's test run checks the AVX2 code paths too (other vector widths, tiles
and accumulators), and the reverse holds on the AVX2 machines."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import pytest

ARCHES = ["native", "x86-64-v3"]


def runs_here(arch: str) -> bool:
    if arch == "native":
        return True
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    if arch == "x86-64":  # the baseline every x86-64 CPU runs
        return True
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return {"avx2", "fma"} <= set(flags.split(":", 1)[1].split())


def use_arch(monkeypatch, arch: str, module, *names: str) -> None:
    """`module`'s kernels `names` (LazyFunctions) built for `arch` for one test; skipped where it cannot run here."""
    if not runs_here(arch):
        pytest.skip(f"this CPU does not run {arch} code")
    if arch != "native":
        for name in names:
            monkeypatch.setattr(module, name, _built(getattr(module, name), arch))


@functools.cache
def _built(function, arch: str):
    """One LazyFunction per kernel and arch for the whole run: each first use keys its library by running the
    compiler (`cc --version`) and loads it."""
    return function.for_arch(arch)
