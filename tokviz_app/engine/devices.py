"""Pick the device and precision: CUDA, then MPS, then CPU; half precision on GPUs."""

from __future__ import annotations

import torch

from ..core.errors import ModelLoadError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | None = "auto") -> str:
    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("CUDA was requested but no CUDA GPU is available on this machine.")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelLoadError("MPS was requested but is not available on this machine.")
    if device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ModelLoadError(f"Unknown device '{device}': use auto, cpu, cuda or mps.")
    return device


def resolve_dtype(device: str, dtype: str | None = None) -> torch.dtype:
    """fp32 on CPU; bf16 on CUDA where supported, else fp16; fp16 on MPS."""
    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise ModelLoadError(f"Unknown dtype '{dtype}': use auto, float32, bfloat16 or float16.")
        return DTYPES[dtype]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
