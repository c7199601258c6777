"""The CPU-kernel choice remembered on disk, per CPU model, thread count, torch version and shape,
and whether the machine was quiet enough for a timing to be worth remembering."""

from __future__ import annotations

import json
import logging
import os
import platform
import threading
import time
from pathlib import Path

import torch

from .quant_library import native_arch

log = logging.getLogger("tokviz.kernels")
CHOICES_LOCK = threading.Lock()  # one load's read, change and write of the file at a time
# Other processes using more than this many cores during a timing: it serves this process only (on a busy
# 2-core machine every 2-thread call waits for the other core's time slice), and is not remembered.
BUSY_CORES = 0.3


def others_busy_core_seconds() -> float:
    """CPU time used since boot by everything but this process, in core-seconds (Linux; 0 elsewhere)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0
    own = os.times()
    return busy - own.user - own.system


class OtherProcesses:
    """How many cores other processes used from its making until `cores()` is read."""

    def __init__(self) -> None:
        self._busy, self._wall = others_busy_core_seconds(), time.perf_counter()

    def cores(self) -> float:
        return (others_busy_core_seconds() - self._busy) / max(time.perf_counter() - self._wall, 1e-3)


def machine_key() -> str:
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    # torch's kernels (ATEN_CPU_CAPABILITY) and ours (TOKVIZ_NATIVE_ARCH) may be held below the CPU's own
    # instruction set: their timings are another machine's
    isa = f"{torch.backends.cpu.get_cpu_capability()}|{native_arch()}"
    return f"{model_name}|{torch.get_num_threads()} threads|torch {torch.__version__}|{isa}"


def choice_file() -> Path:
    from .bundled import cache_root

    return cache_root() / "cpu-kernels.json"


def load_choices() -> dict:
    try:
        return json.loads(choice_file().read_text())
    except (OSError, ValueError):
        return {}


def save_choices(choices: dict) -> None:
    path = choice_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(choices, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as error:  # a read-only cache only costs the timing next time
        log.warning("could not remember the CPU kernel choice: %s", error)
