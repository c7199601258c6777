"""fp32 products for a decoding step's few rows in one native call (`few_rows.c`), where the C kernels build.

The "rows" CPU layout (`linear_layouts.RowsLinear`) runs 2-16 rows here and other row counts (one row, prompt
chunks) through BLAS; `kernels.py` times it against the BLAS layouts like any other. Where it cannot be built (no C compiler,
no OpenMP) the layout is simply not a candidate.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from .quant_library import LazyFunction

SOURCE = Path(__file__).with_name("few_rows.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 16  # the kernel's limit (few_rows.c); more rows are BLAS's strength

_p, _n = ctypes.c_void_p, ctypes.c_int64
kernel = LazyFunction(SOURCE, FLAGS, "tokviz_few_rows_matmul", [_p, _n, _n, _p, _p, _p, _n, ctypes.c_int],
                      "no few-rows CPU kernel")


def available() -> bool:
    return kernel() is not None


def matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """x [M, K] @ weight [N, K]^T + bias for M <= MAX_ROWS (fp32, CPU, contiguous weight); None: use BLAS."""
    run = kernel()
    if run is None or not 1 <= x.shape[0] <= MAX_ROWS or x.dtype != torch.float32 or x.device.type != "cpu":
        return None
    x = x.contiguous()
    out = torch.empty((x.shape[0], weight.shape[0]))
    status = run(x.data_ptr(), x.shape[0], x.shape[1], weight.data_ptr(), None if bias is None else bias.data_ptr(),
                 out.data_ptr(), weight.shape[0], torch.get_num_threads())
    return out if status == 0 else None
