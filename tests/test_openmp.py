"""Only the inference lane's thread keeps an OpenMP pool (engine/openmp.py): a second pool makes libgomp's
workers sleep between parallel regions, which made every forward pass wait for wake-ups.

Pools are counted as the process's OS threads: each pool is torch's thread count minus one worker thread."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from tokviz_app.engine import ModelManager
from tokviz_app.engine.openmp import _openmp, in_passing_thread

pytestmark = pytest.mark.skipif(_openmp() is None or torch.get_num_threads() < 2,
                                reason="torch runs its ops on OpenMP with several threads only")
BIG = 1_000_000  # elements: far above torch's grain size (32,768), so an op on them runs in parallel


def os_threads() -> int:
    """The process's OS threads, once steady: a pool's workers end a moment after the thread that owned it."""
    seen, steady_since, deadline = -1, time.monotonic(), time.monotonic() + 10
    while time.monotonic() < deadline:
        count = len(os.listdir("/proc/self/task"))
        if count != seen:
            seen, steady_since = count, time.monotonic()
        elif time.monotonic() - steady_since > 0.3:
            break
        time.sleep(0.02)
    return seen


def threads_while_held(work, count: int) -> int:
    """OS threads added while `count` threads that each ran `work` are still alive."""
    before = os_threads()
    done, release = threading.Barrier(count + 1), threading.Event()

    def hold():
        work()
        done.wait()
        release.wait()

    threads = [threading.Thread(target=hold) for _ in range(count)]
    for t in threads:
        t.start()
    done.wait()
    added = os_threads() - before
    release.set()
    for t in threads:
        t.join()
    return added


def test_a_threads_parallel_op_gives_it_a_pool():
    """The measurement's control: a thread that runs a parallel op keeps a worker beside itself."""
    data = torch.ones(BIG)
    assert threads_while_held(lambda: data.exp(), 2) >= 2 * torch.get_num_threads()


def test_passing_thread_runs_on_all_threads_and_takes_its_pool_along():
    data = torch.ones(BIG)
    data.sum()  # this thread's own pool exists before the count
    before = os_threads()
    seen = in_passing_thread(lambda: (data.exp().sum().item(), torch.get_num_threads()))
    assert seen == (pytest.approx(BIG * 2.718281828, rel=1e-5), torch.get_num_threads())
    assert os_threads() == before  # the thread and its workers ended with the work
    with pytest.raises(ValueError, match="no such"):
        in_passing_thread(lambda: (_ for _ in ()).throw(ValueError("no such thing")))


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A tiny GPT-2 with GPT-2's 50,257 outputs: a step's statistics are parallel ops."""
    from tests.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("wide-vocab"), n_positions=128, outputs=50257, train_steps=0)
    model = ModelManager(device="cpu").load(str(folder))
    model.start_from_ids([1, 2, 3]).step()  # the lane's thread and its pool exist from here on
    return model


def test_tabs_threads_get_no_pool(wide_model):
    """Prefill, steps, a choice, scores, a branch switch: in the callers' threads, none of it makes a pool."""

    def tab():
        session = wide_model.start_from_ids(list(range(5, 40)))
        session.generate(3)
        session.choose(1, 7)
        session.score(0, [3, 4])
        session.switch_branch(0)
        session.truncate(1)
        session.close()

    assert threads_while_held(tab, 3) == 3


def test_heavy_work_outside_the_lane_leaves_no_pool(wide_model):
    """What-if replays, the layer lens, window scores: forward passes of their own, on passing threads."""
    from tokviz_app.engine import SamplingParams

    session = wide_model.start_from_ids(list(range(5, 40)))
    session.generate(2)

    def work():
        session.what_if(SamplingParams(top_k=5))
        session.layer_lens(0)
        session.decided_layers()
        wide_model.score_windows([list(range(5, 30)), list(range(9, 20))])
        wide_model.score_ids(list(range(5, 30)), 1)

    assert threads_while_held(work, 1) == 1
    session.close()
