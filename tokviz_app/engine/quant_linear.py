"""A linear layer that holds a GGUF's quantised blocks and nothing else: decoding steps (few rows) multiply by
the blocks in a kernel of our own; more rows (prompts, the layer lens) dequantise a tile of the weights at a time
into a small buffer and multiply by BLAS. The fp32 weights it replaces are not kept (a model on the fast path
holds ~110 MB of blocks where it held ~540 MB of fp32 weights)."""

from __future__ import annotations

import threading

import torch

from .quant_library import QuantLibrary
from .quant_weights import QuantBlocks

TILE_WEIGHTS = 1 << 20  # fp32 weights dequantised at a time for many rows: 4 MB, reused (a layer's matrix or less)
_scratch = threading.local()  # one tile buffer per thread: forward passes run on several threads


def _tile_buffer(size: int) -> torch.Tensor:
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.numel() < size:
        buffer = _scratch.buffer = torch.empty(size)
    return buffer[:size]


class QuantLinear(torch.nn.Module):
    def __init__(self, blocks: QuantBlocks, library: QuantLibrary, max_rows: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.max_rows = min(max_rows, library.max_rows)
        self.out_features, self.in_features = blocks.shape
        self.bias = bias
        self.threads = torch.get_num_threads()  # the kernels' own pool: as many threads as torch would use
        self.library = library
        q4 = blocks.kind == "q4_1"
        self._kernel = library.q4_1 if q4 else library.q8_0
        self._dequantise = library.q4_1_dequantise if q4 else library.q8_0_dequantise
        self._bind(blocks)

    def _bind(self, blocks: QuantBlocks) -> None:
        self.blocks = blocks
        self._pointers = [blocks.quants.data_ptr(), blocks.scales.data_ptr()]
        if blocks.mins is not None:
            self._pointers.append(blocks.mins.data_ptr())
        self._column_bytes = [t[0].numel() * t.element_size() for t in (blocks.quants, blocks.scales, blocks.mins)
                              if t is not None]  # one output column's share of each array

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ~210 calls a decoding step: every attribute read here shows in the step time
        rows = x.numel() // self.in_features
        if (rows > self.max_rows or not rows or not x.is_cpu or x.dtype != torch.float32
                or (x.requires_grad and torch.is_grad_enabled())):
            return self._by_tiles(x)
        if not x.is_contiguous():
            x = x.contiguous()
        out = torch.empty((*x.shape[:-1], self.out_features))
        if self._kernel(x.data_ptr(), rows, self.in_features, *self._pointers, out.data_ptr(), self.out_features,
                        self.threads):
            return self._by_tiles(x)  # a shape the kernels refuse (never for the GGUF's layers)
        if self.bias is not None:
            out += self.bias
        return out

    def weight_tile(self, start: int, end: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """The fp32 weights of output columns [start, end) ([end - start, in_features]), exactly as dequantised."""
        out = torch.empty(end - start, self.in_features) if out is None else out
        pointers = [p + start * size for p, size in zip(self._pointers, self._column_bytes)]
        if self._dequantise(*pointers, out.data_ptr(), end - start, self.in_features):
            raise ValueError(f"blocks of {self.in_features} inputs cannot be dequantised")
        return out

    def _by_tiles(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled() or not x.is_cpu or x.dtype != torch.float32:
            weight = self.weight_tile(0, self.out_features).to(x.device, x.dtype)  # autograd, other devices
            return torch.nn.functional.linear(x, weight, None if self.bias is None else self.bias.to(x.device))
        flat = x.reshape(-1, self.in_features)
        out = torch.empty(flat.shape[0], self.out_features)
        columns = max(1, TILE_WEIGHTS // self.in_features)
        buffer = _tile_buffer(min(columns, self.out_features) * self.in_features)
        for start in range(0, self.out_features, columns):
            end = min(start + columns, self.out_features)
            tile = self.weight_tile(start, end, buffer[: (end - start) * self.in_features].view(end - start, -1))
            torch.mm(flat, tile.t(), out=out[:, start:end])  # BLAS writes the column slice in place (its ldc)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{self.blocks.kind}, {self.in_features} -> {self.out_features}, up to {self.max_rows} rows"


def joined(parts: list[QuantLinear]) -> QuantLinear | None:
    """One layer whose output is the parts' outputs side by side (q/k/v; gate/up), or None where they differ in
    kind, inputs or rows, or have a bias. One kernel call instead of 2-3 (each ~20 µs of Python, ctypes and
    thread wake-up); every output column is computed as before, bit for bit. The parts then read views of the
    joined blocks, so no second copy is kept, and still serve alone (prompts, other paths)."""
    first = parts[0]
    if any(not isinstance(part, QuantLinear) or part.bias is not None or part.blocks.kind != first.blocks.kind
           or part.in_features != first.in_features or part.max_rows != first.max_rows
           or part.library is not first.library for part in parts):
        return None
    stack = lambda name: None if getattr(first.blocks, name) is None else torch.cat(  # noqa: E731
        [getattr(part.blocks, name) for part in parts])
    whole = QuantLinear(QuantBlocks(first.blocks.kind, stack("quants"), stack("scales"), stack("mins")),
                        first.library, first.max_rows, None)
    start = 0
    for part in parts:
        end = start + part.out_features
        view = lambda t: None if t is None else t[start:end]  # noqa: E731  (rows of a contiguous tensor: contiguous)
        part._bind(QuantBlocks(whole.blocks.kind, view(whole.blocks.quants), view(whole.blocks.scales),
                               view(whole.blocks.mins)))
        start = end
    return whole
