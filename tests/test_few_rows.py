"""The few-rows fp32 kernel (few_rows.c): BLAS's numbers to fp32 rounding for every row count it takes, the
shapes it refuses, the same result on any thread count, and torch's OpenMP runtime shared, not a second one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.instruction_sets import ARCHES, use_arch
from tokviz_app.engine import ModelManager, few_rows
from tokviz_app.engine.linear_layouts import RowsLinear
from tokviz_app.engine.openmp import this_threads_openmp

pytestmark = pytest.mark.skipif(not few_rows.available(), reason="no C compiler with OpenMP here")


@pytest.fixture(autouse=True, params=ARCHES)
def arch(request, monkeypatch) -> str:
    """Every test on this machine's own code and on the AVX2 code (4-row tiles where AVX-512 has 8)."""
    use_arch(monkeypatch, request.param, few_rows, "kernel")
    return request.param


def error_against_float64(out: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> float:
    exact = x.double() @ w.double().T + (0 if b is None else b.double())
    return float((out.double() - exact).abs().max())


@pytest.mark.parametrize("k", [16, 64, 768])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 190, 1001])
def test_it_gives_blas_numbers_for_every_row_count(k, n):
    g = torch.Generator().manual_seed(k * 10_000 + n)
    w = torch.randn(n, k, generator=g)
    for bias in (None, torch.randn(n, generator=g)):
        for m in range(1, few_rows.MAX_ROWS + 1):
            x = torch.randn(m, k, generator=g)
            out = few_rows.matmul(x, w, bias)
            assert out is not None and out.shape == (m, n)
            blas = torch.nn.functional.linear(x, w, bias)
            # Both sum K fp32 products in some order: each is within a few fp32 roundings of the exact sum.
            # BLAS's own error sets the scale (its order is the machine's choice); 1e-6 covers tiny sums.
            assert error_against_float64(out, x, w, bias) <= 4 * error_against_float64(blas, x, w, bias) + 1e-6


def test_shapes_it_does_not_take_go_to_blas():
    w = torch.randn(8, 64)
    assert few_rows.matmul(torch.randn(few_rows.MAX_ROWS + 1, 64), w, None) is None  # a prompt chunk
    assert few_rows.matmul(torch.randn(2, 20), torch.randn(8, 20), None) is None  # not a whole vector wide
    assert few_rows.matmul(torch.randn(2, 64, dtype=torch.float64), w, None) is None
    layer = RowsLinear(w, torch.randn(8))
    for rows in (1, 2, 17, 40):  # the layout serves every row count, the kernel 1-16 of them
        x = torch.randn(1, rows, 64)
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)


def test_gradients_go_through_blas():
    """The kernel has no backward: an input that needs a gradient takes BLAS, and the gradient is right."""
    layer = RowsLinear(torch.randn(8, 64), torch.randn(8))
    x = torch.randn(3, 64, requires_grad=True)
    layer(x).sum().backward()
    assert torch.allclose(x.grad, layer.weight.sum(0).expand(3, 64))


def test_the_result_does_not_depend_on_the_thread_count():
    """Each thread takes whole output columns, so one or many threads add in the same order."""
    g = torch.Generator().manual_seed(3)
    x, w, b = torch.randn(8, 768, generator=g), torch.randn(3000, 768, generator=g), torch.randn(3000, generator=g)
    with this_threads_openmp(1):
        one = few_rows.matmul(x, w, b)
    assert torch.equal(one, few_rows.matmul(x, w, b))


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_it_runs_on_torchs_openmp_runtime():
    """A second libgomp would be a second thread pool spinning beside torch's on the same cores."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        pytest.skip("this torch build does not run its ops on OpenMP")
    few_rows.matmul(torch.randn(2, 64), torch.randn(300, 64), None)
    maps = Path("/proc/self/maps").read_text().splitlines()
    runtimes = {line.split()[-1] for line in maps if line.endswith("/libgomp.so.1")}
    assert len(runtimes) == 1, runtimes


def test_a_model_in_the_rows_layout_runs_its_steps_in_the_kernel(tiny_model_path, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKVIZ_CACHE_DIR", str(tmp_path))
    model = ModelManager(device="cpu", cpu_kernels="rows").load(str(tiny_model_path))
    layers = [m for m in model.hf_model.modules() if isinstance(m, RowsLinear)]
    assert layers, "the rows layout was applied"
    for layer in layers:  # the kernel serves these shapes, not BLAS behind it
        assert few_rows.matmul(torch.randn(2, layer.in_features), layer.weight, layer.bias) is not None
    # The tied output head keeps the embedding's one Parameter: a second one would be copied off the
    # checkpoint separately, and GPT-2's 154 MB matrix would be held twice (RSS 1.31x instead of 1.0x).
    head, embedding = model.hf_model.get_output_embeddings(), model.hf_model.get_input_embeddings()
    assert isinstance(head, RowsLinear) and head.weight is embedding.weight
