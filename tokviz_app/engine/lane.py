"""One inference lane per model: every forward pass of every session goes through it.

A single worker thread takes all pending requests at once. One-token decode steps
from any number of sessions run as ONE batched forward pass over a resident batch
(the weights are read once for all of them); prompt prefills run in chunks between
those batches so a long prompt never stalls streaming tabs for long.

The resident batch keeps its padded KV cache between steps. Rows have different
true lengths: a 2-D attention mask hides padding and holes, and explicit position
ids give each row its true position, so a batched step computes exactly what an
unbatched one does. Cropping a resident row (choose/truncate) only masks columns.
Rows join, leave or get compacted by one copy of the cache, which only happens
when the set of active sessions changes.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import CancelledWork

from .kernels import return_freed_memory

PREFILL_CHUNK_BUSY = 32  # tokens per prefill forward while other sessions stream: bounds their stall
PREFILL_CHUNK_IDLE = 512  # ... and when nobody else is waiting
GATHER_FRACTION = 0.5  # wait up to this fraction of the last batch's time for the rest of the batch
IDLE_ROUNDS = 4  # a resident row that misses this many batches in a row leaves the batch
MAX_HOLES = 64  # compact when padding + holes exceed this many columns beyond the longest row


class Slot:
    """A session's KV state: private (own cache) or a row of the resident batch."""

    __slots__ = ("length", "cache", "row", "idle", "released")

    def __init__(self) -> None:
        self.length = 0  # valid tokens
        self.cache = None  # private DynamicCache, or None while resident / empty
        self.row: int | None = None
        self.idle = 0
        self.released = False


@dataclass
class _Request:
    slot: Slot
    ids: list[int]
    keep: int
    should_stop: Callable[[], bool] | None = None
    future: Future = field(default_factory=Future)
    logits: list[torch.Tensor] = field(default_factory=list)


class InferenceLane:
    def __init__(self, hf_model, device: str, *, batching: bool = True) -> None:
        self.hf_model = hf_model
        self.device = device
        config = hf_model.config
        self._config = config
        probe = self._new_cache()
        # Only plain full-attention caches can be padded and masked row by row.
        self.batching = batching and all(type(layer).__name__ == "DynamicLayer" for layer in probe.layers)
        self._pending: list[_Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        # Resident batch
        self._rows: list[Slot] = []
        self._last_batch_seconds = 0.0
        self._cache = None
        self._mask: torch.Tensor | None = None  # [B, L] long
        self.stats = {"batches": 0, "batched_rows": 0, "prefill_chunks": 0, "rebuilds": 0, "max_batch": 0}

    # ------------------------------------------------------------------ API
    def new_slot(self) -> Slot:
        return Slot()

    def feed(self, slot: Slot, ids: list[int], keep: int,
             should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Crop `slot` to `keep` tokens, run `ids` after them; float32 CPU logits [len(ids), V].

        A multi-token feed checks `should_stop` before each chunk and raises CancelledWork when it
        says so (a closed tab's prompt stops costing everyone else's time)."""
        if slot.released:
            raise RuntimeError("slot was released")
        request = _Request(slot, list(ids), keep, should_stop)
        with self._cv:
            self._pending.append(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="tokviz-lane", daemon=True)
                self._thread.start()
            self._cv.notify()
        return request.future.result()

    def release(self, slot: Slot) -> None:
        """Free a session's KV state (its row leaves the batch at the next round)."""
        slot.released = True
        slot.cache = None

    def resident_rows(self) -> int:
        return len(self._rows)

    # ------------------------------------------------------------------ worker
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                self._gather()
                requests, self._pending = self._pending, []
            # Fresh one-token feeds after a non-empty prefix batch; everything else runs privately.
            # (The last token of a chunked prefill is not a decode step: its request holds earlier chunks' logits.)
            decode = [r for r in requests if self._is_decode(r)]
            prefill = [r for r in requests if not self._is_decode(r)]
            try:
                if decode:
                    self._decode(decode)
            except BaseException as error:  # hand the failure to every waiting caller
                for r in decode:
                    if not r.future.done():
                        r.future.set_exception(error)
                self._reset_batch()
            for r in prefill:  # one chunk each, then back to decoding
                try:
                    if self._prefill_chunk(r):
                        continue
                except BaseException as error:
                    r.future.set_exception(error)

    @staticmethod
    def _is_decode(r: _Request) -> bool:
        return len(r.ids) == 1 and r.keep > 0 and not r.logits and not r.slot.released

    def _gather(self) -> None:
        """Give the sessions of the last batch a moment to come back, so they batch together.

        Without this, threads that are still turning their logits into statistics miss
        the next batch and the sessions settle into two half-size alternating batches.
        Called with the condition held.
        """
        expected = {id(s) for s in self._rows if not s.released and s.idle <= 1}
        if len(expected) < 2:
            return
        deadline = time.perf_counter() + GATHER_FRACTION * self._last_batch_seconds
        while True:
            arrived = {id(r.slot) for r in self._pending}
            if expected <= arrived or any(len(r.ids) != 1 for r in self._pending):
                return
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._cv.wait(remaining)

    def _prefill_chunk(self, r: _Request) -> bool:
        """Run one chunk of a multi-token request privately. True when it was requeued."""
        slot = r.slot
        if slot.released:
            r.future.set_exception(RuntimeError("slot was released"))
            return False
        if r.should_stop is not None and r.should_stop():
            r.future.set_exception(CancelledWork("The work was cancelled."))
            return False
        if not r.logits:
            self._make_private(slot)
            self._crop_private(slot, r.keep)
        if not r.ids and not r.logits:
            r.future.set_result(torch.empty(0))
            return False
        size = PREFILL_CHUNK_BUSY if self._rows else PREFILL_CHUNK_IDLE
        chunk, r.ids = r.ids[:size], r.ids[size:]
        if slot.cache is None:
            slot.cache = self._new_cache()
        input_ids = torch.tensor([chunk], device=self.device)
        positions = torch.arange(slot.length, slot.length + len(chunk), device=self.device).unsqueeze(0)
        with torch.inference_mode():
            out = self.hf_model(input_ids=input_ids, cache=slot.cache, position_ids=positions, use_cache=True)
            r.logits.append(out.logits[0].float().cpu())
        slot.length += len(chunk)
        self.stats["prefill_chunks"] += 1
        if r.ids:
            with self._cv:
                self._pending.append(r)
            return True
        r.future.set_result(torch.cat(r.logits) if len(r.logits) > 1 else r.logits[0])
        return False

    def _decode(self, requests: list[_Request]) -> None:
        if not self.batching:
            for r in requests:
                self._prefill_chunk(r)
            return
        wanted = {id(r.slot) for r in requests}
        for slot in self._rows:
            slot.idle = 0 if id(slot) in wanted else slot.idle + 1
        keep_rows = [s for s in self._rows if not s.released and s.idle < IDLE_ROUNDS]
        joining = [r.slot for r in requests if r.slot.row is None]
        if joining or len(keep_rows) != len(self._rows) or self._holes() > MAX_HOLES:
            released = any(s.released for s in self._rows)
            self._rebuild(keep_rows + joining)
            if released:  # closed tabs: give their KV memory back to the OS, not just to malloc
                return_freed_memory()
        for r in requests:  # crops of resident rows only hide columns
            self._crop_row(r.slot, r.keep)
        batch = len(self._rows)
        tokens = torch.zeros((batch, 1), dtype=torch.long)
        positions = torch.zeros((batch, 1), dtype=torch.long)
        column = torch.zeros((batch, 1), dtype=torch.long)
        for r in requests:
            row = r.slot.row
            tokens[row, 0] = r.ids[0]
            positions[row, 0] = r.slot.length
            column[row, 0] = 1
        mask = torch.cat([self._mask, column], dim=1)
        started = time.perf_counter()
        # Without padding or holes the mask is all ones: leave it out so attention takes its causal fast path.
        attention_mask = None if bool(mask.all()) else mask.to(self.device)
        with torch.inference_mode():
            out = self.hf_model(input_ids=tokens.to(self.device), cache=self._cache, use_cache=True,
                                attention_mask=attention_mask, position_ids=positions.to(self.device))
            logits = out.logits[:, -1].float().cpu()
        self._mask = mask
        self._last_batch_seconds = time.perf_counter() - started
        self.stats["batches"] += 1
        self.stats["batched_rows"] += len(requests)
        self.stats["max_batch"] = max(self.stats["max_batch"], len(requests))
        for r in requests:
            r.slot.length += 1
            r.future.set_result(logits[r.slot.row].unsqueeze(0))

    # ------------------------------------------------------------------ batch bookkeeping
    def _new_cache(self, data=None):
        from transformers import DynamicCache

        return DynamicCache(data, config=self._config)

    def _holes(self) -> int:
        if self._mask is None or not self._rows:
            return 0
        return self._mask.shape[1] - max(s.length for s in self._rows)

    def _row_kv(self, slot: Slot) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (keys, values) [1, H, length, D] of a slot's valid tokens."""
        if slot.row is not None:
            columns = self._mask[slot.row].nonzero().squeeze(-1)[: slot.length].to(self.device)
            return [(layer.keys[slot.row : slot.row + 1, :, columns], layer.values[slot.row : slot.row + 1, :, columns])
                    for layer in self._cache.layers]
        if slot.cache is None or slot.length == 0:
            return []
        return [(layer.keys[:, :, : slot.length], layer.values[:, :, : slot.length]) for layer in slot.cache.layers]

    def _rebuild(self, slots: list[Slot]) -> None:
        """Lay out `slots` as a fresh left-padded batch (one copy of their caches).

        Rows that leave without being released keep a private copy of their cache.
        """
        rows = [self._row_kv(s) for s in slots]
        for s in self._rows:
            if not any(s is kept for kept in slots) and not s.released:
                s.cache = self._new_cache([(k.clone(), v.clone()) for k, v in self._row_kv(s)])
        for s in self._rows:
            s.row = None
        self.stats["rebuilds"] += 1
        if not slots:
            self._rows, self._cache, self._mask = [], None, None
            return
        width = max(s.length for s in slots)
        data = []
        for layer in range(len(rows[0])):
            keys, values = [], []
            for kv, s in zip(rows, slots):
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
            s.row, s.cache, s.idle = i, None, 0
        self._rows, self._cache, self._mask = slots, self._new_cache(data), mask

    def _make_private(self, slot: Slot) -> None:
        """Move a resident row into its own cache (needed before multi-token feeds)."""
        if slot.row is not None:
            self._rebuild([s for s in self._rows if s is not slot])

    def _crop_private(self, slot: Slot, keep: int) -> None:
        if keep < slot.length:
            if slot.cache is not None and keep > 0:
                slot.cache.crop(keep - slot.length)
            elif keep == 0:
                slot.cache = None
            slot.length = keep

    def _crop_row(self, slot: Slot, keep: int) -> None:
        if keep < slot.length:
            columns = self._mask[slot.row].nonzero().squeeze(-1)
            self._mask[slot.row, columns[keep:]] = 0
            slot.length = keep

    def _reset_batch(self) -> None:
        for s in self._rows:
            s.row = None
            s.released = True  # their caches are gone; sessions must restart
        self._rows, self._cache, self._mask = [], None, None
