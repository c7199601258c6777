"""One inference lane per model: every forward pass of every session goes through it.

A single worker thread takes all pending requests at once. One-token decode steps
from any number of sessions run as one batched forward pass per resident batch
(`resident.py`: rows grouped by length, padded KV cache kept between steps); prompt
prefills run in chunks between those batches so a long prompt never stalls
streaming tabs for long. A released (closed) session's row is dropped at once, not
at the next step, so its memory goes back with no further activity.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import torch

from ..core.errors import CancelledWork
from .kernels import return_freed_memory
from .openmp import this_threads_openmp
from .resident import ResidentBatch, Slot, bucket_of, is_growing, new_cache, relayout

T = TypeVar("T")

PREFILL_CHUNK_IDLE = 1024  # tokens per prefill forward when nobody else is waiting (a session's prompt chunk)
# While others stream, a prefill chunk should take about CHUNK_BUDGET_STEPS of their steps, but has at
# least PREFILL_CHUNK_MIN tokens: at long contexts a multi-token forward costs several short steps on its
# own (SmolLM2 at 4,000 tokens on 2 cores: 8 tokens 150 ms, 32 tokens 280 ms, a short step 45 ms), and
# smaller chunks only stretch the prompt's scoring (8-token chunks: 116 s for 4,000 tokens) for little gain.
PREFILL_CHUNK_MIN = 16
CHUNK_BUDGET_STEPS = 2.0
GATHER_FRACTION = 0.5  # wait up to this fraction of the last batch's time for the rest of the batch
IDLE_ROUNDS = 4  # a resident row that misses this many batches in a row leaves its batch


@dataclass
class _Request:
    slot: Slot
    ids: list[int]
    keep: int
    should_stop: Callable[[], bool] | None = None
    finish: Callable[[torch.Tensor], object] | None = None
    future: Future = field(default_factory=Future)
    logits: list[torch.Tensor] = field(default_factory=list)


class InferenceLane:
    def __init__(self, hf_model, device: str, *, batching: bool = True) -> None:
        self.hf_model = hf_model
        self.device = device
        self._config = hf_model.config
        probe = new_cache(self._config)
        # Only plain full-attention caches can be padded and masked row by row.
        self.batching = batching and all(is_growing(layer) for layer in probe.layers)
        self._pending: list[_Request] = []
        self._released = False  # a resident row was released: drop it without waiting for a step
        self._closing = False  # the interpreter is exiting: finish the work at hand, then stop
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._batches: dict[int, ResidentBatch] = {}  # bucket -> resident batch
        self._last_chunk: tuple[int, float] | None = None  # (tokens, seconds) of the last prefill chunk
        self.stats = {"batches": 0, "batched_rows": 0, "prefill_chunks": 0, "rebuilds": 0, "max_batch": 0}
        # Decoding steps of up to this many rows run torch's ops on one OpenMP thread: the fast path's kernels
        # serve them on threads of their own, and each of torch's small parallel ops beside them woke a worker.
        self.one_thread_rows = 0
        self.forwards = threading.Lock()  # held while the worker runs forward passes (and by timings that need quiet)

    # ------------------------------------------------------------------ API
    def use_one_openmp_thread(self, max_rows: int) -> None:
        """The model's matrix products now run on the fast path's own threads in steps of up to `max_rows` rows."""
        self.one_thread_rows = max_rows

    def _decode_threads(self, rows: int) -> int | None:
        return 1 if rows <= self.one_thread_rows else None

    def new_slot(self) -> Slot:
        return Slot()

    def feed(self, slot: Slot, ids: list[int], keep: int, should_stop: Callable[[], bool] | None = None,
             finish: Callable[[torch.Tensor], T] | None = None) -> torch.Tensor | T:
        """Crop `slot` to `keep` tokens, run `ids` after them; float32 CPU logits [len(ids), V], or what
        `finish(logits)` makes of them on the lane's thread.

        `finish` is a decoding step's own work after the forward (its draw and statistics): run by the lane
        for every row of a batch in turn, it costs a batch ~0.3 ms a row, where 8 waiting threads each woken
        to do it fought over the GIL and two cores for ~11 ms before the next batch could start.
        A multi-token feed checks `should_stop` before each chunk and raises CancelledWork when it
        says so (a closed tab's prompt stops costing everyone else's time)."""
        if slot.released:
            raise RuntimeError("slot was released")
        request = _Request(slot, list(ids), keep, should_stop, finish)
        with self._cv:
            self._pending.append(request)
            self._start_worker()
            self._cv.notify()
        return request.future.result()

    def release(self, slot: Slot) -> None:
        """Free a session's KV state; a resident row leaves its batch right away."""
        slot.released = True
        slot.cache = None
        if slot.batch is not None:
            with self._cv:
                self._released = True
                self._start_worker()
                self._cv.notify()

    def resident_rows(self) -> int:
        return sum(len(b.rows) for b in self._batches.values())

    def batch_widths(self) -> dict[int, tuple[int, int]]:
        """bucket -> (rows, padded columns): how much every row of a batch pays."""
        return {b: (len(batch.rows), batch.width) for b, batch in sorted(self._batches.items())}

    # ------------------------------------------------------------------ worker
    def _start_worker(self) -> None:  # called with the condition held
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="tokviz-lane", daemon=True)
            self._thread.start()
            _running_lanes.add(self)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the worker finish the work at hand and end: at exit, a daemon thread still inside a torch
        kernel aborts the process ("terminate called without an active exception", status 134)."""
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._released and not self._closing:
                    self._cv.wait()
                if self._closing:
                    for r in self._pending:
                        r.future.set_exception(CancelledWork("the process is exiting"))
                    self._pending = []
                    return
                self._gather()
                requests, self._pending = self._pending, []
                released, self._released = self._released, False
            with self.forwards:
                self._serve(requests, released)

    def _serve(self, requests: list[_Request], released: bool) -> None:
        # Fresh one-token feeds after a non-empty prefix batch; everything else runs privately.
        # (The last token of a chunked prefill is not a decode step: its request holds earlier chunks' logits.)
        decode = [r for r in requests if self._is_decode(r)]
        prefill = [r for r in requests if not self._is_decode(r)]
        try:
            if decode:
                self._decode(decode)
            elif released:
                self._drop_released()
        except BaseException as error:  # hand the failure to every waiting caller
            for r in decode:
                if not r.future.done():
                    r.future.set_exception(error)
            self._reset_batches()
        for r in prefill:  # one chunk each, then back to decoding
            try:
                self._prefill_chunk(r)
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
        rows = [s for b in self._batches.values() for s in b.rows]
        expected = {id(s) for s in rows if not s.released and s.idle <= 1}
        if len(expected) < 2:
            return
        last = sum(b.last_seconds for b in self._batches.values())
        deadline = time.perf_counter() + GATHER_FRACTION * last
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
        size = self._prefill_chunk_size()
        chunk, r.ids = r.ids[:size], r.ids[size:]
        started = time.perf_counter()
        if slot.cache is None:
            slot.cache = new_cache(self._config)
        input_ids = torch.tensor([chunk], device=self.device)
        positions = torch.arange(slot.length, slot.length + len(chunk), device=self.device).unsqueeze(0)
        with torch.inference_mode():
            out = self.hf_model(input_ids=input_ids, cache=slot.cache, position_ids=positions, use_cache=True)
            r.logits.append(out.logits[0].float().cpu())
        slot.length += len(chunk)
        self._last_chunk = (len(chunk), time.perf_counter() - started)
        self.stats["prefill_chunks"] += 1
        if r.ids:
            with self._cv:
                self._pending.append(r)
            return True
        self._deliver(r, torch.cat(r.logits) if len(r.logits) > 1 else r.logits[0])
        return False

    @staticmethod
    def _deliver(r: _Request, logits: torch.Tensor) -> None:
        if r.finish is None:
            r.future.set_result(logits)
            return
        try:
            r.future.set_result(r.finish(logits))
        except BaseException as error:  # the caller's own failure, handed back to it
            r.future.set_exception(error)

    def _prefill_chunk_size(self) -> int:
        """Tokens for the next prefill chunk. While other sessions stream, a chunk should cost about
        CHUNK_BUDGET_STEPS of their steps (a fixed 32-token chunk at 4,000 tokens of context cost 13), within
        [PREFILL_CHUNK_MIN, PREFILL_CHUNK_IDLE]. A chunk costs a fixed part (about one step: the weights are
        read once) plus a part per token, estimated from the last chunk; the per-token part grows with the
        context."""
        if not self._batches:
            return PREFILL_CHUNK_IDLE
        step = max(b.last_seconds for b in self._batches.values())
        if step <= 0 or self._last_chunk is None:
            return 32
        tokens, seconds = self._last_chunk
        per_token = max((seconds - step) / tokens, seconds / tokens / 8)
        wanted = (CHUNK_BUDGET_STEPS - 1) * step / per_token
        return max(PREFILL_CHUNK_MIN, min(PREFILL_CHUNK_IDLE, int(wanted)))

    def _decode(self, requests: list[_Request]) -> None:
        if not self.batching:
            with this_threads_openmp(self._decode_threads(1)):
                for r in requests:
                    self._prefill_chunk(r)
            return
        wanted = {id(r.slot) for r in requests}
        for batch in self._batches.values():
            for slot in batch.rows:
                slot.idle = 0 if id(slot) in wanted else slot.idle + 1
        for r in requests:  # crops of resident rows only hide columns
            if r.slot.batch is not None:
                r.slot.batch.crop_row(r.slot, r.keep)
            else:
                self._crop_private(r.slot, r.keep)
        # Each row's bucket by its length; idle and released rows leave.
        members: dict[int, list[Slot]] = {}
        for b, batch in sorted(self._batches.items()):
            for slot in batch.rows:
                moving = id(slot) in wanted and bucket_of(slot.length) != b
                if not slot.released and slot.idle < IDLE_ROUNDS and not moving:
                    members.setdefault(b, []).append(slot)
        for r in requests:
            if r.slot.batch is None or bucket_of(r.slot.length) != r.slot.batch.bucket:
                members.setdefault(bucket_of(r.slot.length), []).append(r.slot)
        self._relayout(members)
        by_batch: dict[int, list[_Request]] = {}
        for r in requests:
            by_batch.setdefault(r.slot.batch.bucket, []).append(r)
        for b, batch_requests in by_batch.items():
            with this_threads_openmp(self._decode_threads(len(self._batches[b].rows))):
                logits = self._batches[b].step(self.hf_model, self.device,
                                               [(r.slot, r.ids[0]) for r in batch_requests])
            self.stats["batches"] += 1
            self.stats["batched_rows"] += len(batch_requests)
            self.stats["max_batch"] = max(self.stats["max_batch"], len(batch_requests))
            for r in batch_requests:
                self._deliver(r, logits[r.slot.row].unsqueeze(0))

    # ------------------------------------------------------------------ batch bookkeeping
    def _relayout(self, members: dict[int, list[Slot]]) -> None:
        released = any(s.released for b in self._batches.values() for s in b.rows)
        if relayout(self._batches, members, self._config):
            self.stats["rebuilds"] += 1
            if released:  # closed tabs: give their KV memory back to the OS, not just to malloc
                return_freed_memory()

    def _drop_released(self) -> None:
        members = {b: [s for s in batch.rows if not s.released] for b, batch in self._batches.items()}
        self._relayout(members)

    def _make_private(self, slot: Slot) -> None:
        """Move a resident row into its own cache (needed before multi-token feeds)."""
        if slot.batch is not None:
            members = {b: [s for s in batch.rows if s is not slot] for b, batch in self._batches.items()}
            self._relayout(members)

    @staticmethod
    def _crop_private(slot: Slot, keep: int) -> None:
        if keep < slot.length:
            if slot.cache is not None and keep > 0:
                slot.cache.crop(keep - slot.length)
            elif keep == 0:
                slot.cache = None
            slot.length = keep

    def _reset_batches(self) -> None:
        for batch in self._batches.values():
            for s in batch.rows:
                s.batch, s.row = None, None
                s.released = True  # their caches are gone; sessions must restart
        self._batches = {}


_running_lanes: weakref.WeakSet[InferenceLane] = weakref.WeakSet()
atexit.register(lambda: [lane.stop() for lane in list(_running_lanes)])
