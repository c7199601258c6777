"""Which threads run torch's ops on several OpenMP threads: the inference lanes, and work passing through.

torch runs its parallel ops on OpenMP (libgomp), which keeps a pool of worker threads for every thread that
ever ran a parallel op, for as long as that thread lives. Its workers spin between parallel regions only while
the process has no more pooled threads than CPUs; once a second thread has a pool, every worker of every pool
sleeps after each region and each of a forward pass's ~100 ops waits for a wake-up. On a 2-core Xeon a GPT-2
decoding step took 48 ms on the inference lane's thread and 26 ms with the lane's pool alone; an element-wise
op over 400k floats 209 µs instead of 30.

So the lane's thread is the only long-lived thread with a pool: the engine's calls in the callers' threads
(a tab's statistics, its samplers) run on one OpenMP thread (`one_openmp_thread`), and heavy work outside
the lane (loading, the layer lens, what-if replays, comparisons) runs on a thread that ends with it
(`in_passing_thread`), so its pool goes with it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from concurrent.futures import Future
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


@functools.cache
def _openmp():
    """torch's OpenMP runtime (libgomp, loaded with torch), where torch runs its ops on OpenMP."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        import ctypes

        return ctypes.CDLL("libgomp.so.1")
    except OSError:
        return None


@contextlib.contextmanager
def this_threads_openmp(count: int | None):
    """This thread's OpenMP thread count for the calls inside (None: leave it). Not `torch.set_num_threads`:
    that also sets the count with which every thread started meanwhile begins, for good."""
    omp = _openmp()
    if count is None or omp is None:
        yield
        return
    before = torch.get_num_threads()  # also lets torch set this thread up first (it would undo the change)
    omp.omp_set_num_threads(count)
    try:
        yield
    finally:
        omp.omp_set_num_threads(before)


def one_openmp_thread(method: Callable[..., T]) -> Callable[..., T]:
    """Run `method` on one OpenMP thread: it runs in a caller's thread, which must not get a pool."""

    @functools.wraps(method)
    def on_one_thread(*args, **kwargs):
        with this_threads_openmp(1):
            return method(*args, **kwargs)

    return on_one_thread


def in_passing_thread(work: Callable[..., T], *args, **kwargs) -> T:
    """`work(*args, **kwargs)` on torch's full thread count, on a thread that ends with it (and so does its
    OpenMP pool). Not a daemon: a daemon thread inside a torch op aborts the interpreter at exit."""
    if _openmp() is None:
        return work(*args, **kwargs)
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(work(*args, **kwargs))
        except BaseException as error:  # handed to the caller
            done.set_exception(error)

    thread = threading.Thread(target=run, name="tokviz-passing")
    thread.start()
    thread.join()
    return done.result()


def on_passing_thread(method: Callable[..., T]) -> Callable[..., T]:
    """Run `method` with `in_passing_thread`. Its caller must not hold a lock the method takes."""

    @functools.wraps(method)
    def passing(*args, **kwargs):
        return in_passing_thread(method, *args, **kwargs)

    return passing
