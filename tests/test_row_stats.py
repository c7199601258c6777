"""`row_stats.c` (a prompt token's statistics in one native call) against numpy in float64, its refusals, and
`token_steps` where it cannot run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.instruction_sets import use_arch
from tokviz_app.core.types import SamplingParams
from tokviz_app.engine import row_stats as native
from tokviz_app.engine.token_steps import token_steps

UNDERFLOW = -150 * math.log(2)  # fp32 exp rounds to 0 below this


def kernel_or_skip():
    if native.kernel() is None:
        pytest.skip(f"the C kernels do not build here: {native.kernel.unavailable}")


def expected(row: np.ndarray, target: int, k: int) -> dict:
    x = row.astype(np.float64)
    finite = x[np.isfinite(x)]
    log_sum = finite.max() + math.log(np.exp(finite - finite.max()).sum())
    logprobs = x - log_sum
    p = np.exp(logprobs)
    return {"logprob": logprobs[target], "rank": int((x > x[target]).sum()) + 1,
            "entropy_nats": -float(np.sum(p[p > 0] * logprobs[p > 0])), "top_ids": np.argsort(-x, kind="stable")[:k],
            "top_logprobs": np.sort(logprobs)[::-1][:k], "logprobs": logprobs}


def rows_with(vocab: int, seed: int) -> torch.Tensor:
    """Ordinary rows, a wide row (most tokens underflow to probability 0), a row with -inf entries, and ties."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(vocab, generator=g) * 3, torch.rand(vocab, generator=g) * -400 + 20,
            torch.randn(vocab, generator=g) * 5, torch.randint(0, 4, (vocab,), generator=g).float()]
    rows[2][1::3] = float("-inf")  # (token 0 stays finite)
    return torch.stack(rows)


# x86-64 and x86-64-v3: the kernel's 4- and 8-float vectors (SSE2, AVX2), whatever this machine builds natively
@pytest.mark.parametrize("path", ["native", "torch", "x86-64", "x86-64-v3"])
@pytest.mark.parametrize("vocab", [1, 5, 16, 17, 33, 1000, 50257])
def test_statistics_match_numpy_in_float64(vocab, path, monkeypatch):
    """`target_stats` from the kernel, and from torch where the kernel does not serve (GPU logits, no compiler)."""
    if path == "torch":
        monkeypatch.setattr(native, "kernel", lambda: None)
    else:
        kernel_or_skip()
    if path.startswith("x86-64"):
        use_arch(monkeypatch, path, native, "kernel")
    logits = rows_with(vocab, seed=vocab)
    targets = [0, vocab - 1, vocab // 2, min(1, vocab - 1)]
    k = min(20, vocab)
    stats = native.target_stats(logits, targets, k)
    for r, target in enumerate(targets):
        row = logits[r].numpy()
        exp = expected(row, target, k)
        if np.isfinite(exp["logprob"]):
            assert abs(stats.logprob[r].item() - exp["logprob"]) < 1e-5 * max(1.0, abs(exp["logprob"]))
        else:
            assert stats.logprob[r].item() == -math.inf
        assert stats.rank[r].item() == exp["rank"]
        assert abs(stats.entropy_nats[r].item() - exp["entropy_nats"]) < 1e-5 * max(1.0, exp["entropy_nats"])
        # the tokens with a non-zero fp32 probability, up to those within float error of the boundary
        near = int((np.abs(exp["logprobs"] - UNDERFLOW) < 1e-3).sum())
        assert abs(stats.kept[r].item() - int((exp["logprobs"] > UNDERFLOW).sum())) <= near
        top = stats.top_logprobs[r].numpy().astype(np.float64)
        # a probability's error is relative to it (fp32 log-probs; torch's fp32 log-sum alone was 1.25e-6 off a
        # probability 0.31 on an AVX2 EPYC before it went to float64): so relative, as the log-prob's check above
        np.testing.assert_allclose(np.exp(top), np.exp(exp["top_logprobs"]), rtol=1e-5, atol=1e-9)
        if path == "native":  # equal logits list the lower id first (numpy's stable sort does the same)
            np.testing.assert_array_equal(stats.top_ids[r].numpy(), exp["top_ids"])
        else:  # torch.topk orders ties as it likes: the listed tokens are the best ones
            np.testing.assert_array_equal(row[stats.top_ids[r].numpy()], row[exp["top_ids"]])
    if vocab >= 1000:
        assert stats.kept[1].item() < vocab // 2, "the wide row must exercise the underflow count"


def test_non_finite_rows_are_refused_and_token_steps_takes_torch():
    kernel_or_skip()
    logits = rows_with(50, seed=1)
    logits[0, 7] = float("nan")
    logits[1] = float("-inf")
    logits[2, 3] = float("inf")
    assert [native.row_stats(logits[r : r + 1], [r], 10) is None for r in range(4)] == [True, True, True, False]
    assert native.row_stats(logits, [0, 1, 2, 3], 10) is None  # one refused row: the whole block takes torch
    steps = token_steps(logits, [0, 1, 2, 3], 1, is_prompt=True, params=SamplingParams(),
                        texts=lambda i: (str(i), False))
    assert math.isnan(steps[0].prob) and math.isnan(steps[1].prob)  # what torch's log_softmax says
    exp = expected(logits[3].numpy(), 3, 10)
    assert abs(steps[3].logprob - exp["logprob"]) < 1e-5 and steps[3].rank == exp["rank"]


def test_targets_outside_the_vocabulary_are_an_error():
    kernel_or_skip()
    with pytest.raises(IndexError):
        native.row_stats(torch.zeros(1, 10), [10], 5)


def test_token_steps_without_a_compiler(monkeypatch, tmp_path):
    """No C compiler: one log line, and torch's path gives the same numbers."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("TOKVIZ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "kernel", native.kernel.fresh())
    assert native.kernel() is None and "no C compiler" in native.kernel.unavailable
    logits = rows_with(300, seed=3)
    targets = [5, 6, 8, 9]
    steps = token_steps(logits, targets, 1, is_prompt=True, params=SamplingParams(top_n=20),
                        texts=lambda i: (str(i), False))
    for r, step in enumerate(steps):
        exp = expected(logits[r].numpy(), targets[r], 20)
        assert abs(step.logprob - exp["logprob"]) < 1e-4 * max(1.0, abs(exp["logprob"]))
        assert step.rank == exp["rank"]
        assert abs(step.entropy - exp["entropy_nats"] / math.log(2)) < 1e-4
        assert len(step.alternatives) == 20


def test_native_and_torch_token_steps_agree(monkeypatch):
    """The same TokenSteps from either path (the torch path is what every other sampler setting uses)."""
    kernel_or_skip()
    logits = rows_with(2000, seed=4)
    targets, params, texts = [11, 12, 13, 14], SamplingParams(), (lambda i: (f"<{i}>", False))
    fast = token_steps(logits, targets, 3, is_prompt=True, params=params, texts=texts)
    monkeypatch.setattr(native, "kernel", lambda: None)
    slow = token_steps(logits, targets, 3, is_prompt=True, params=params, texts=texts)
    for a, b in zip(fast, slow):
        assert (a.token_id, a.text, a.position, a.rank, a.kept_count) == (b.token_id, b.text, b.position, b.rank,
                                                                         b.kept_count)
        for field in ("prob", "logprob", "entropy", "sampled_prob", "kept_mass"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-5, abs=1e-6), field
        assert [x.prob for x in a.alternatives] == pytest.approx([x.prob for x in b.alternatives], abs=1e-6)
        assert all(x.dropped_by is None and x.sampled_prob == x.prob for x in a.alternatives)


def test_a_changed_header_builds_a_new_library(tmp_path, monkeypatch):
    """The kernels' cache key covers the local headers a source includes (vector_exp.h), not the source alone."""
    from tokviz_app.engine import bundled, quant_library

    monkeypatch.setattr(bundled, "cache_root", lambda: tmp_path)
    source, header = tmp_path / "k.c", tmp_path / "k.h"
    source.write_text('#include "k.h"\nint f(void) { return K; }\n')
    header.write_text("#define K 1\n")
    try:
        compiler = quant_library._compiler()
    except quant_library.QuantUnavailable as error:
        pytest.skip(str(error))
    before = quant_library.library_path(compiler, source, ("-O1",))
    header.write_text("#define K 2\n")
    assert quant_library.library_path(compiler, source, ("-O1",)) != before
    assert (Path(native.SOURCE).with_name("vector_exp.h")).is_file()  # shipped beside the sources that include it
