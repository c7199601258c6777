"""Resident batches: sessions' KV caches laid out as rows of one padded cache.

One-token steps of every row run as ONE forward pass (the weights are read once for
all of them). Rows have different true lengths: a 2-D attention mask hides padding
and holes, and explicit position ids give each row its true position, so a batched
step computes exactly what an unbatched one does. Cropping a row (choose/truncate)
only masks columns; a relayout (one copy of the rows' caches) happens only when the
set of rows changes.

Rows are grouped by length (`bucket_of`): padding every row to the longest one made
one 8,000-token tab cost every other tab 8,000 tokens of memory and attention.
"""

from __future__ import annotations

import time

import torch

MAX_HOLES = 64  # relayout when padding + holes exceed this many columns beyond the longest row
BUCKET_BASE = 512  # bucket 0: rows shorter than this; bucket k: [BUCKET_BASE * 2^(k-1), BUCKET_BASE * 2^k)


def bucket_of(length: int) -> int:
    return 0 if length < BUCKET_BASE else (length // BUCKET_BASE).bit_length()


class Slot:
    """A session's KV state: private (own cache) or a row of a resident batch."""

    __slots__ = ("length", "cache", "batch", "row", "idle", "released")

    def __init__(self) -> None:
        self.length = 0  # valid tokens
        self.cache = None  # private DynamicCache, or None while resident / empty
        self.batch: ResidentBatch | None = None
        self.row: int | None = None
        self.idle = 0
        self.released = False


def new_cache(config, data=None):
    """A DynamicCache whose plain full-attention layers grow into spare room (GrowingLayer)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    for layer in cache.layers:
        if type(layer) is DynamicLayer:
            layer.__class__ = _growing_layer_class()
    for layer, (keys, values) in zip(cache.layers, data or ()):
        layer.update(keys, values)
    return cache


def is_growing(layer) -> bool:
    return type(layer).__name__ == "GrowingLayer"


_GROWING = None


def _growing_layer_class():
    """transformers is imported lazily, so the subclass is made on first use."""
    global _GROWING
    if _GROWING is None:
        from transformers.cache_utils import DynamicLayer

        class GrowingLayer(DynamicLayer):
            """A DynamicLayer that appends into spare room instead of copying the whole cache for every
            token: its torch.cat cost 7 of 55 ms per step for 8 GPT-2 rows of 100 tokens, and grows with
            the context. `keys`/`values` are views of the buffers' first tokens; crop() just shortens them."""

            _buffers = None

            def update(self, key_states, value_states, *args, **kwargs):
                if not self.is_initialized:
                    self.lazy_initialization(key_states, value_states)
                length = self._length()
                end = length + key_states.shape[-2]
                if not self._fits(end, key_states.shape[:2]):
                    capacity = end + max(16, end // 4)  # amortised: one copy per quarter of growth
                    grown = []
                    for old, states in ((self.keys, key_states), (self.values, value_states)):
                        buffer = states.new_empty((*states.shape[:2], capacity, states.shape[-1]))
                        if length:
                            buffer[..., :length, :] = old
                        grown.append(buffer)
                    self._buffers = tuple(grown)
                self._buffers[0][..., length:end, :] = key_states
                self._buffers[1][..., length:end, :] = value_states
                self._hold(end)
                return self.keys, self.values

            def spare_column(self) -> tuple[torch.Tensor, torch.Tensor, int] | None:
                """(key buffer, value buffer, tokens held) where the next token fits in place, else None. The
                caller writes that token's keys and values into column `tokens held`, then calls `took_one`."""
                if not self.is_initialized or self.keys.dim() != 4:
                    return None
                length = self._length()
                return (*self._buffers, length) if self._fits(length + 1, self.keys.shape[:2]) else None

            def took_one(self, length: int) -> None:
                self._hold(length + 1)

            def _length(self) -> int:
                return self.keys.shape[-2] if self.keys.dim() == 4 else 0

            def _fits(self, end: int, rows_heads: torch.Size) -> bool:
                """Whether `end` tokens fit the buffers in place (and `keys` still is a view of them)."""
                buffers = self._buffers
                return (buffers is not None and end <= buffers[0].shape[-2] and buffers[0].shape[:2] == rows_heads
                        and (not self._length() or self.keys.data_ptr() == buffers[0].data_ptr()))

            def _hold(self, end: int) -> None:
                self.keys, self.values = (buffer.narrow(2, 0, end) for buffer in self._buffers)

            def reset(self) -> None:
                self._buffers = None
                super().reset()

        _GROWING = GrowingLayer
    return _GROWING


class ResidentBatch:
    def __init__(self, bucket: int, config) -> None:
        self.bucket = bucket
        self._config = config
        self.rows: list[Slot] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, columns] long: 1 where a row has a valid token
        self.last_seconds = 0.0  # duration of the last forward pass

    @property
    def width(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def holes(self) -> int:
        """Columns beyond the longest row (left padding and cropped tokens)."""
        return self.width - max((s.length for s in self.rows), default=0)

    def row_kv(self, slot: Slot) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) [1, H, length, D] of a row's valid tokens (views where possible)."""
        columns = self.mask[slot.row].nonzero().squeeze(-1)[: slot.length]
        columns = columns.to(self.cache.layers[0].keys.device)
        return [(layer.keys[slot.row : slot.row + 1, :, columns], layer.values[slot.row : slot.row + 1, :, columns])
                for layer in self.cache.layers]

    def crop_row(self, slot: Slot, keep: int) -> None:
        if keep < slot.length:
            columns = self.mask[slot.row].nonzero().squeeze(-1)
            self.mask[slot.row, columns[keep:]] = 0
            slot.length = keep

    def install(self, slots: list[Slot], kvs: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Lay out `slots` (with their caches `kvs`) as a fresh left-padded batch."""
        self.rows = slots
        if not slots:
            self.cache, self.mask = None, None
            return
        width = max(s.length for s in slots)
        data = []
        for layer in range(len(kvs[0])):
            keys, values = [], []
            for kv, s in zip(kvs, slots):
                k, v = kv[layer]
                pad = width - s.length
                if pad:
                    k = torch.nn.functional.pad(k, (0, 0, pad, 0))
                    v = torch.nn.functional.pad(v, (0, 0, pad, 0))
                keys.append(k)
                values.append(v)
            data.append((torch.cat(keys), torch.cat(values)))
        mask = torch.zeros((len(slots), width), dtype=torch.long)
        for i, s in enumerate(slots):
            mask[i, width - s.length :] = 1
            s.batch, s.row, s.cache, s.idle = self, i, None, 0
        self.cache, self.mask = new_cache(self._config, data), mask

    def step(self, hf_model, device: str, steps: list[tuple[Slot, int]]) -> torch.Tensor:
        """One token for each (slot, token id); float32 CPU logits [rows, V] (rows without a token: garbage)."""
        batch = len(self.rows)
        tokens = torch.zeros((batch, 1), dtype=torch.long)
        positions = torch.zeros((batch, 1), dtype=torch.long)
        column = torch.zeros((batch, 1), dtype=torch.long)
        for slot, token_id in steps:
            tokens[slot.row, 0] = token_id
            positions[slot.row, 0] = slot.length
            column[slot.row, 0] = 1
        mask = torch.cat([self.mask, column], dim=1)
        started = time.perf_counter()
        # Without padding or holes the mask is all ones: leave it out so attention takes its causal fast path.
        attention_mask = None if bool(mask.all()) else mask.to(device)
        with torch.inference_mode():
            out = hf_model(input_ids=tokens.to(device), cache=self.cache, use_cache=True,
                           attention_mask=attention_mask, position_ids=positions.to(device))
            logits = out.logits[:, -1].float().cpu()
        self.mask = mask
        self.last_seconds = time.perf_counter() - started
        for slot, _ in steps:
            slot.length += 1
        return logits


def relayout(batches: dict[int, ResidentBatch], members: dict[int, list[Slot]], config) -> bool:
    """Give each bucket the rows in `members` (rows absent from it leave with a private copy of their
    cache, unless released). Only buckets whose rows change are copied. Returns True if any changed."""
    changed = []
    for b in sorted(set(batches) | set(members)):
        rows, batch = members.get(b, []), batches.get(b)
        if batch is None:
            if rows:
                changed.append(b)
        elif [id(s) for s in batch.rows] != [id(s) for s in rows] or batch.holes() > MAX_HOLES:
            changed.append(b)
    if not changed:
        return False
    staying = {id(s) for rows in members.values() for s in rows}
    leaving = [s for b in changed if b in batches for s in batches[b].rows if id(s) not in staying]
    # Views of every row to be laid out, read before any batch is replaced.
    kvs = {b: [_kv(s) for s in members.get(b, [])] for b in changed}
    for s in leaving:
        if not s.released:
            s.cache = new_cache(config, [(k.clone(), v.clone()) for k, v in s.batch.row_kv(s)])
    for s in leaving:
        s.batch, s.row = None, None
    for b in changed:
        rows = members.get(b, [])
        if not rows:
            batches.pop(b, None)
            continue
        batches.setdefault(b, ResidentBatch(b, config)).install(rows, kvs[b])
    return True



def _kv(slot: Slot) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if slot.batch is not None:
        return slot.batch.row_kv(slot)
    if slot.cache is None or slot.length == 0:
        return []
    return [(layer.keys[:, :, : slot.length], layer.values[:, :, : slot.length]) for layer in slot.cache.layers]
