"""A linear layer that multiplies by a GGUF's quantised blocks for decoding steps (few rows), and by its
fp32 weights for everything else (prompt scoring, gradients, other devices)."""

from __future__ import annotations

import torch

from .quant_library import QuantLibrary
from .quant_weights import QuantBlocks


class QuantLinear(torch.nn.Module):
    def __init__(self, dense: torch.nn.Module, blocks: QuantBlocks, library: QuantLibrary, max_rows: int,
                 bias: torch.Tensor | None) -> None:
        super().__init__()
        self.dense = dense  # the fp32 layer it replaces: same numbers up to fp32 rounding
        self.blocks = blocks
        self.max_rows = min(max_rows, library.max_rows)
        self.out_features, self.in_features = blocks.shape
        self.bias = bias
        self.threads = torch.get_num_threads()  # the kernels' own pool: as many threads as torch would use
        self._kernel = library.q4_1 if blocks.kind == "q4_1" else library.q8_0
        self._pointers = [blocks.quants.data_ptr(), blocks.scales.data_ptr()]
        if blocks.mins is not None:
            self._pointers.append(blocks.mins.data_ptr())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ~210 calls a decoding step: every attribute read here shows in the step time
        rows = x.numel() // self.in_features
        if (rows > self.max_rows or not rows or not x.is_cpu or x.dtype != torch.float32
                or (x.requires_grad and torch.is_grad_enabled())):
            return self.dense(x)
        if not x.is_contiguous():
            x = x.contiguous()
        out = torch.empty((*x.shape[:-1], self.out_features))
        if self._kernel(x.data_ptr(), rows, self.in_features, *self._pointers, out.data_ptr(), self.out_features,
                        self.threads):
            return self.dense(x)  # a shape the kernels refuse (never for the GGUF's layers)
        if self.bias is not None:
            out += self.bias
        return out

    def extra_repr(self) -> str:
        return f"{self.blocks.kind}, {self.in_features} -> {self.out_features}, up to {self.max_rows} rows"
