"""Faster CPU inference: oneDNN-packed weights for every linear layer.

PyTorch's default fp32 GEMM is slow for the 1-16 rows a decoding step has; the
oneDNN (mkldnn) linear with pre-packed weights is ~1.4x faster for one row and
~2x for a batch of 8 on our 2-core machine (bench/batching.py measures it).
GPT-2's `Conv1D` is a transposed linear layer and is packed too.
"""

from __future__ import annotations

import os

import torch


def packing_enabled(device: str, dtype: torch.dtype) -> bool:
    return (device == "cpu" and dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and os.environ.get("TOKVIZ_CPU_PACK", "1") != "0")


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace nn.Linear and GPT-2 Conv1D modules by oneDNN-packed ones; returns how many."""
    import warnings

    from transformers.pytorch_utils import Conv1D

    with warnings.catch_warnings():  # its TorchScript base class warns about a deprecation we do not use
        warnings.simplefilter("ignore", FutureWarning)
        from torch.utils.mkldnn import MkldnnLinear

    packed = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv1D):  # y = x @ W + b with W [in, out]
                dense = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                dense.weight = torch.nn.Parameter(child.weight.detach().t().contiguous(), requires_grad=False)
                dense.bias = torch.nn.Parameter(child.bias.detach(), requires_grad=False)
            elif type(child) is torch.nn.Linear:
                dense = child
            else:
                continue
            setattr(module, name, MkldnnLinear(dense, torch.float32))
            packed += 1
    # What is left (embeddings, norms) may still point into the memory-mapped
    # checkpoint; own copies let the mapping, and the packed layers' old pages, go.
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            if not tensor.is_mkldnn:
                tensor.data = tensor.data.clone()
    return_freed_memory()
    return packed


def return_freed_memory() -> None:
    """glibc keeps large freed buffers (unpacked weights, KV caches) in its arenas; hand them back."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
