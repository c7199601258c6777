"""The bundled GGUF's own quantised blocks, matched to the loaded model's fp32 layers.

The fp32 model *is* these blocks dequantised (d * q + m in fp32), so a kernel that multiplies by the
blocks gives the same numbers with 1/6 of the memory traffic. Each GGUF matrix is dequantised here the way
gguf-py does it and compared with the layer's fp32 weight row by row (the conversion reorders q/k rows for
rotary embeddings: rows are matched, not assumed); a layer is only ever served from blocks that reproduce
its weight bit for bit.
"""

from __future__ import annotations

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


def read_gguf_blocks(path: Path) -> dict[str, QuantBlocks]:
    """transformers module path -> blocks, for every Q4_1 / Q8_0 matrix of a llama-architecture GGUF."""
    import gguf

    from .bundled import plain_reader_class

    reader = plain_reader_class()(str(path))  # the conversion's faster reader (its metadata is most of the time)
    kinds = {gguf.GGMLQuantizationType.Q4_1: "q4_1", gguf.GGMLQuantizationType.Q8_0: "q8_0"}
    found = {}
    for tensor in reader.tensors:
        kind = kinds.get(tensor.tensor_type)
        if kind is None:
            continue
        if tensor.name == "token_embd.weight":
            module = "lm_head"  # tied: the output head multiplies by the embedding matrix
        else:
            parts = tensor.name.split(".")  # blk.N.attn_q.weight
            if parts[0] != "blk" or parts[2] not in LLAMA_NAMES:
                continue
            module = LLAMA_NAMES[parts[2]].format(parts[1])
        found[module] = _blocks(kind, np.asarray(tensor.data), int(tensor.shape[-1]))
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
