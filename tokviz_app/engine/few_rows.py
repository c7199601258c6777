"""fp32 products for a decoding step's few rows in one native call (`few_rows.c`), where the C kernels build.

The "rows" CPU layout (`linear_layouts.RowsLinear`) runs 1-16 rows here and more rows (prompt chunks) through
BLAS; `kernels.py` times it against the BLAS layouts like any other. Where it cannot be built (no C compiler,
no OpenMP) the layout is simply not a candidate.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path

import torch

from .quant_library import QuantUnavailable, load_shared

SOURCE = Path(__file__).with_name("few_rows.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
MAX_ROWS = 16  # the kernel's limit (few_rows.c); more rows are BLAS's strength

log = logging.getLogger("tokviz.kernels")
_lock = threading.Lock()
_kernel: ctypes._CFuncPtr | None = None
_unavailable: str | None = None


def kernel() -> ctypes._CFuncPtr | None:
    """The compiled kernel, or None (said once in the log) where it cannot be built here."""
    global _kernel, _unavailable
    with _lock:
        if _kernel is None and _unavailable is None:
            try:
                lib = load_shared(SOURCE, FLAGS)[0]
            except QuantUnavailable as error:
                _unavailable = str(error)
                log.info("no few-rows CPU kernel: %s", error)
                return None
            p, n = ctypes.c_void_p, ctypes.c_int64
            lib.tokviz_few_rows_matmul.argtypes = [p, n, n, p, p, p, n, ctypes.c_int]
            lib.tokviz_few_rows_matmul.restype = ctypes.c_int
            _kernel = lib.tokviz_few_rows_matmul
        return _kernel


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
