"""What machine a benchmark ran on: every figure is printed with it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path


def describe() -> dict:
    import torch

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"),
                                   ("amx_tile", "AMX")) if flag in flags]
    from tokviz_app.engine.quant_library import native_arch

    # the code that runs: torch's kernels (ATEN_CPU_CAPABILITY) and tokviz's (TOKVIZ_NATIVE_ARCH) may be held below
    # the CPU's own instruction set, to measure another machine's code here
    code = f"torch {torch.backends.cpu.get_cpu_capability()}, tokviz -march={native_arch()}"
    return {"cpu": cpu, "cores": os.cpu_count(), "isa": isa or ["unknown"], "code": code, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def line(info: dict | None = None) -> str:
    info = info or describe()
    gpu = f", GPU {info['cuda']}" if info.get("cuda") else ""
    return (f"{info['cpu']}, {info['cores']} cores ({', '.join(info['isa'])}; code: {info.get('code', '?')}), "
            f"torch {info['torch']} with {info['torch_threads']} threads{gpu}")


def model_parser(doc: str, *, json_flag: bool = True):
    """The options every model benchmark takes: which GPT-2 size, which device, JSON out."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2", choices=["gpt2", "gpt2-medium"])
    parser.add_argument("--device", default="cpu")
    if json_flag:
        parser.add_argument("--json", action="store_true")
    return parser


def print_header(title: str, model_size: str, device: str, dtype: str, info: dict) -> None:
    print(f"{title}: {model_size} config, random weights, {device} {dtype}")
    print(f"machine: {line(info)}")


def in_own_process(script: str, *args: str) -> dict:
    """Run `script` with `args` in a process of its own and return the JSON object of its last output line.
    One model per process: a second model's inference lane (a second thread with an OpenMP pool) slows both."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
