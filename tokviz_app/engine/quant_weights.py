"""The bundled GGUF's own quantised blocks, matched to the loaded model's fp32 layers.

The fp32 model *is* these blocks dequantised (d * q + m in fp32), so a kernel that multiplies by the
blocks gives the same numbers with 1/6 of the memory traffic. Each GGUF matrix is dequantised here the way
gguf-py does it and compared with the layer's fp32 weight row by row (the conversion reorders q/k rows for
rotary embeddings: rows are matched, not assumed); a layer is only ever served from blocks that reproduce
its weight bit for bit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

BLOCK = 32
# llama-architecture GGUF names -> transformers module paths ({} is the layer number)
LLAMA_NAMES = {
    "attn_q": "model.layers.{}.self_attn.q_proj", "attn_k": "model.layers.{}.self_attn.k_proj",
    "attn_v": "model.layers.{}.self_attn.v_proj", "attn_output": "model.layers.{}.self_attn.o_proj",
    "ffn_gate": "model.layers.{}.mlp.gate_proj", "ffn_up": "model.layers.{}.mlp.up_proj",
    "ffn_down": "model.layers.{}.mlp.down_proj",
}


@dataclass
class QuantBlocks:
    kind: str  # "q4_1" or "q8_0"
    quants: torch.Tensor  # q4_1: uint8 [N, K/32, 16] (two 4-bit quants a byte); q8_0: int8 [N, K/32, 32]
    scales: torch.Tensor  # float32 [N, K/32]
    mins: torch.Tensor | None  # float32 [N, K/32] (q4_1 only)

    @property
    def shape(self) -> tuple[int, int]:
        return self.quants.shape[0], self.quants.shape[1] * BLOCK

    def dequantised(self) -> torch.Tensor:
        """[N, K] fp32, as gguf-py computes it (so equal bit for bit to a converted checkpoint)."""
        if self.kind == "q4_1":
            q = torch.cat([self.quants & 15, self.quants >> 4], dim=-1).float()
            w = self.scales[..., None] * q + self.mins[..., None]
        else:
            w = self.scales[..., None] * self.quants.float()
        return w.reshape(self.shape)

    def rows(self, order: torch.Tensor) -> "QuantBlocks":
        pick = lambda t: None if t is None else t[order].contiguous()  # noqa: E731
        return QuantBlocks(self.kind, pick(self.quants), pick(self.scales), pick(self.mins))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.quants, self.scales, self.mins) if t is not None)


def _blocks(kind: str, raw: np.ndarray, n_rows: int) -> QuantBlocks:
    """Split a GGUF tensor's bytes [N, K/32 * block bytes] into quants and fp32 scales."""
    size = 20 if kind == "q4_1" else 34
    blocks = raw.reshape(n_rows, -1, size)
    scales = torch.from_numpy(blocks[..., 0:2].copy().view(np.float16).astype(np.float32)[..., 0])
    if kind == "q4_1":
        mins = torch.from_numpy(blocks[..., 2:4].copy().view(np.float16).astype(np.float32)[..., 0])
        return QuantBlocks(kind, torch.from_numpy(blocks[..., 4:].copy()), scales, mins)
    return QuantBlocks(kind, torch.from_numpy(blocks[..., 2:].copy().view(np.int8)), scales, None)


# GGUF metadata value types -> their size in bytes (8: string, 9: array are walked)
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@dataclass
class GGUFTensor:
    name: str
    kind: str  # gguf's GGMLQuantizationType name in lower case: "q4_1", "q8_0", "f32", ...
    dims: tuple[int, ...]  # GGUF order: the row length first
    data: np.ndarray  # uint8 [rows, bytes a row], a view of the file's memory map


def read_gguf_tensors(path: Path) -> list[GGUFTensor]:
    """The tensor table of a little-endian GGUF (v2/v3), its metadata skipped, not parsed.

    gguf's own reader builds a numpy view for every metadata item (the bundled file's 49k-token
    vocabulary and merges: ~1.3M views, 2-6 s); only the tensors are needed here (~50 ms).
    Tensors of types gguf-py does not know are left out. The file stays mapped only while a tensor's
    `data` is referenced (no reference cycle here: a mapped file counts in RSS until it is unmapped)."""
    data = np.memmap(path, dtype=np.uint8, mode="r")
    with memoryview(data) as raw:
        if bytes(raw[:4]) != b"GGUF" or struct.unpack_from("<I", raw, 4)[0] not in (2, 3):
            raise ValueError(f"{path} is not a little-endian GGUF v2/v3 file")
        n_tensors, n_fields = struct.unpack_from("<QQ", raw, 8)
        offset, alignment = 24, 32
        for _ in range(n_fields):
            key, offset = _string(raw, offset)
            (kind,) = struct.unpack_from("<I", raw, offset)
            if key == "general.alignment" and kind == 4:
                (alignment,) = struct.unpack_from("<I", raw, offset + 4)
            offset = _skip_value(raw, kind, offset + 4)
        table = []
        for _ in range(n_tensors):
            name, offset = _string(raw, offset)
            (n_dims,) = struct.unpack_from("<I", raw, offset)
            dims = struct.unpack_from(f"<{n_dims}Q", raw, offset + 4)
            kind, start = struct.unpack_from("<IQ", raw, offset + 4 + 8 * n_dims)
            offset += 4 + 8 * n_dims + 12
            table.append((name, kind, dims, start))
    import gguf

    first = -(-offset // alignment) * alignment
    tensors = []
    for name, kind, dims, start in table:
        try:
            kind = gguf.GGMLQuantizationType(kind)
            block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
        except (ValueError, KeyError):  # a type this gguf-py does not know
            continue
        type_name = kind.name.lower()
        row_bytes = dims[0] // block * block_bytes
        rows = int(np.prod(dims[1:], dtype=np.int64))
        at = first + start
        tensors.append(GGUFTensor(name, type_name, tuple(dims), data[at:at + rows * row_bytes].reshape(rows, row_bytes)))
    return tensors


def _string(raw: memoryview, at: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<Q", raw, at)
    return bytes(raw[at + 8:at + 8 + size]).decode("utf-8"), at + 8 + size


def _skip_value(raw: memoryview, kind: int, at: int) -> int:
    """The offset after a metadata value of this type at `at`."""
    if kind in _SCALAR_BYTES:
        return at + _SCALAR_BYTES[kind]
    if kind == _STRING:
        return at + 8 + struct.unpack_from("<Q", raw, at)[0]
    if kind == _ARRAY:
        item, count = struct.unpack_from("<IQ", raw, at)
        at += 12
        if item in _SCALAR_BYTES:
            return at + count * _SCALAR_BYTES[item]
        for _ in range(count):
            at = _skip_value(raw, item, at)
        return at
    raise ValueError(f"unknown GGUF metadata value type {kind} at byte {at}")


def read_gguf_blocks(path: Path) -> dict[str, QuantBlocks]:
    """transformers module path -> blocks, for every Q4_1 / Q8_0 matrix of a llama-architecture GGUF."""
    found = {}
    for tensor in read_gguf_tensors(path):
        if tensor.kind not in ("q4_1", "q8_0"):
            continue
        if tensor.name == "token_embd.weight":
            module = "lm_head"  # tied: the output head multiplies by the embedding matrix
        else:
            parts = tensor.name.split(".")  # blk.N.attn_q.weight
            if parts[0] != "blk" or parts[2] not in LLAMA_NAMES:
                continue
            module = LLAMA_NAMES[parts[2]].format(parts[1])
        found[module] = _blocks(tensor.kind, np.asarray(tensor.data), tensor.data.shape[0])
    return found


def matched(blocks: QuantBlocks, weight: torch.Tensor) -> QuantBlocks | None:
    """The blocks with their rows in the order of `weight` [N, K] fp32, or None where they do not
    reproduce it exactly (another model, another conversion)."""
    if tuple(weight.shape) != blocks.shape:
        return None
    dense = blocks.dequantised()
    probe = torch.randn(weight.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mine, theirs = dense.double() @ probe, weight.double() @ probe  # one fingerprint per row
    order = torch.empty_like(mine, dtype=torch.long)
    order[torch.argsort(theirs)] = torch.argsort(mine)  # weight row i is blocks row order[i]
    if not torch.equal(dense[order], weight):
        return None
    return blocks.rows(order)
