"""The layouts a linear layer can run in on CPU (all compute y = x W^T + b in fp32).

- "nt":     weight [out, in] (nn.Linear's own layout), y = x @ W.T
- "nn":     weight [in, out] (GPT-2 Conv1D's own layout), y = x @ W
- "packed": oneDNN (mkldnn) packed weight
- "rows":   weight [out, in]; 1-16 rows (a decoding step, batched or not) in `few_rows.c`, more rows as "nt"
`kernels.py` times them and swaps the fastest in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import few_rows

LAYOUTS = ("nt", "nn", "packed", "rows")


class NNLinear(torch.nn.Module):
    """y = x @ W + b with W stored [in, out] contiguous (one NN GEMM)."""

    def __init__(self, weight_in_out: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.weight_t = torch.nn.Parameter(weight_in_out, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = flat @ self.weight_t if self.bias is None else torch.addmm(self.bias, flat, self.weight_t)
        return out.view(*x.shape[:-1], out.shape[-1])


class NTLinear(torch.nn.Linear):
    """nn.Linear built from a Conv1D's [in, out] weight (stored [out, in])."""

    def __init__(self, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = weight_out_in.shape[1], weight_out_in.shape[0]
        self.weight = torch.nn.Parameter(weight_out_in, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)


class RowsLinear(NTLinear):
    """NTLinear whose decoding steps (1-16 rows) run in `few_rows.c`, which reads each weight once for all rows.
    One row too: on a 2-core Zen 1 EPYC the kernel's matrix-vector product beat BLAS's (GPT-2's output head
    11.2 ms against 11.8 `nn` / 17.8 `nt`; 768x3072 0.85 against 1.09 / 1.39), on a 2-core Xeon it lost ~2 % to
    BLAS; the layout is timed at one row like every other, so where it loses there another is chosen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        kernel = not (x.requires_grad and torch.is_grad_enabled())  # (it has no backward)
        out = few_rows.matmul(flat, self.weight, self.bias) if kernel else None
        return super().forward(x) if out is None else out.view(*x.shape[:-1], out.shape[-1])


def _packed(weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    import warnings

    with warnings.catch_warnings():  # its TorchScript base class warns about a deprecation we do not use
        warnings.simplefilter("ignore", FutureWarning)
        from torch.utils.mkldnn import MkldnnLinear

    dense = torch.nn.Linear(weight_out_in.shape[1], weight_out_in.shape[0], bias=bias is not None)
    dense.weight = torch.nn.Parameter(weight_out_in.contiguous(), requires_grad=False)
    if bias is not None:
        dense.bias = torch.nn.Parameter(bias, requires_grad=False)
    return MkldnnLinear(dense, torch.float32)


# ------------------------------------------------------------------ the model's linear layers
@dataclass
class LinearLayer:
    parent: torch.nn.Module
    name: str
    module: torch.nn.Module
    loaded: str  # "nt" or "nn"

    @property
    def weight_out_in(self) -> torch.Tensor:
        w = self.module.weight.detach()
        return w if self.loaded == "nt" else w.t()

    @property
    def bias(self) -> torch.Tensor | None:
        return None if self.module.bias is None else self.module.bias.detach()

    @property
    def shape(self) -> tuple[int, int, bool]:
        out_features, in_features = self.weight_out_in.shape
        return in_features, out_features, self.bias is not None


def linear_layers(model: torch.nn.Module) -> list[LinearLayer]:
    from transformers.pytorch_utils import Conv1D

    layers = []
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear:
                layers.append(LinearLayer(parent, name, child, "nt"))
            elif isinstance(child, Conv1D):  # y = x @ W + b with W [in, out]
                layers.append(LinearLayer(parent, name, child, "nn"))
    return layers


def shared_parameters(model: torch.nn.Module) -> set[int]:
    """ids of parameters that more than one module uses (GPT-2's and SmolLM2's output head and embeddings)."""
    seen: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        seen[id(parameter)] = seen.get(id(parameter), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def candidates(layer: LinearLayer, tied: bool) -> tuple[str, ...]:
    rows = ("rows",) if few_rows.available() and (not tied or layer.loaded == "nt") else ()
    if tied:  # another copy would cost the whole matrix again; a view keeps one copy
        return ("nt", "nn", *rows)
    packed = ("packed",) if torch.backends.mkldnn.is_available() else ()
    return ("nt", "nn", *packed, *rows)


def build(layout: str, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    if layout == "nt":
        return NTLinear(weight_out_in.contiguous(), bias)
    if layout == "nn":
        return NNLinear(weight_out_in.t().contiguous(), bias)
    if layout == "rows":
        return RowsLinear(weight_out_in.contiguous(), bias)
    return _packed(weight_out_in, bias)


def shape_key(layer: LinearLayer, tied: bool) -> str:
    in_features, out_features, bias = layer.shape
    return f"{in_features}x{out_features}{'+bias' if bias else ''}{' tied' if tied else ''}"
