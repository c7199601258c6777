"""`decode_glue.c` (the norms and rotary embeddings of a Llama one-token step) against transformers' own modules
and a float64 reference, on random values of the shapes the bundled model has and some it has not."""

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from tokviz_app.engine import llama_decode


def glue_or_skip():
    if llama_decode.add_rms_norm() is None or llama_decode.rotary() is None:
        pytest.skip(f"the C kernels do not build here: {llama_decode.add_rms_norm.unavailable}")
    return llama_decode.add_rms_norm(), llama_decode.rotary()


@pytest.mark.parametrize("rows, width", [(1, 576), (3, 576), (2, 7), (16, 2048)])
@pytest.mark.parametrize("with_delta", [False, True])
def test_add_rms_norm_against_transformers_and_float64(rows, width, with_delta):
    norm_c, _ = glue_or_skip()
    torch.manual_seed(rows * width)
    hidden, delta = torch.randn(rows, 1, width) * 3, torch.randn(rows, 1, width)
    norm = LlamaRMSNorm(width, eps=1e-5)
    norm.weight.data.uniform_(-2, 2)
    summed = hidden + delta if with_delta else hidden.clone()
    want = norm(summed).detach()
    s = summed.double()
    exact = norm.weight.double() * s / torch.sqrt(s.pow(2).mean(-1, keepdim=True) + 1e-5)

    ours, out = hidden.clone(), torch.empty(rows, 1, width)
    assert norm_c(ours.data_ptr(), delta.data_ptr() if with_delta else None, rows, width,
                  norm.weight.data_ptr(), 1e-5, out.data_ptr()) == 0
    assert torch.equal(ours, summed)  # the sum is left in `hidden`, rounded as torch's add rounds
    # fp32 rounding: a few units in the last place of each value, against transformers and against float64
    scale = exact.abs().max().item()
    assert (out.double() - exact).abs().max() < 4e-7 * scale
    assert (out - want).abs().max() < 8e-7 * scale


@pytest.mark.parametrize("rows, q_heads, k_heads, dim", [(1, 9, 3, 64), (3, 9, 3, 64), (2, 4, 4, 6)])
def test_rotary_is_transformers_bit_for_bit(rows, q_heads, k_heads, dim):
    _, rotary_c = glue_or_skip()
    torch.manual_seed(dim)
    q, k = torch.randn(rows, 1, q_heads * dim), torch.randn(rows, 1, k_heads * dim)
    angles = torch.rand(rows, 1, dim) * 100  # a position per row, as a batch of tabs has
    cos, sin = angles.cos(), angles.sin()
    want_q, want_k = apply_rotary_pos_emb(q.view(rows, 1, q_heads, dim).transpose(1, 2),
                                          k.view(rows, 1, k_heads, dim).transpose(1, 2), cos, sin)
    assert rotary_c(q.data_ptr(), q_heads, k.data_ptr(), k_heads, rows, dim, cos.data_ptr(), sin.data_ptr()) == 0
    assert torch.equal(q.view(rows, 1, q_heads, dim).transpose(1, 2), want_q)
    assert torch.equal(k.view(rows, 1, k_heads, dim).transpose(1, 2), want_k)


def test_shapes_the_glue_cannot_take_are_refused():
    norm_c, rotary_c = glue_or_skip()
    x = torch.zeros(4)
    assert rotary_c(x.data_ptr(), 1, x.data_ptr(), 1, 1, 3, x.data_ptr(), x.data_ptr()) == 1  # odd head size
    assert norm_c(x.data_ptr(), None, 1, 0, x.data_ptr(), 1e-5, x.data_ptr()) == 1
