"""`decode_glue.c` (the norms and rotary embeddings of a Llama one-token step) and `decode_attention.c` (its
attention) against transformers' own modules or torch's SDPA and a float64 reference, on random values of the
shapes the bundled model has and some it has not."""

import pytest
import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from tests.instruction_sets import ARCHES, use_arch
from tokviz_app.engine import llama_decode
from tokviz_app.engine.quant_library import QuantUnavailable, load_library


@pytest.fixture(autouse=True, params=ARCHES)
def arch(request, monkeypatch) -> str:
    """Every test on this machine's own code and on the AVX2 code (tests/instruction_sets.py)."""
    use_arch(monkeypatch, request.param, llama_decode, "add_rms_norm", "rotary", "silu_mul", "attention")
    return request.param


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


@pytest.mark.parametrize("rows, width", [(1, 1536), (8, 1536), (3, 13)])
def test_silu_mul_against_torch_and_float64(rows, width):
    function = llama_decode.silu_mul()
    if function is None:
        pytest.skip(f"the C kernels do not build here: {llama_decode.silu_mul.unavailable}")
    torch.manual_seed(width)
    gate_up = torch.randn(rows, 1, 2 * width) * 6
    gate_up[0, 0, :4] = torch.tensor([-100.0, 100.0, 0.0, -0.0])  # exp's far ends, and zero
    out = torch.empty(rows, 1, width)
    assert function(gate_up.data_ptr(), rows, width, out.data_ptr()) == 0
    gate, up = gate_up.split(width, dim=-1)
    want = F.silu(gate) * up
    exact = gate.double() * torch.sigmoid(gate.double()) * up.double()
    # a few units in the last place (fp32 exp, a division and two products): relative to each value
    assert ((out.double() - exact).abs() <= 1e-6 * exact.abs() + 1e-30).all()
    assert ((out - want).abs() <= 1e-6 * want.abs() + 1e-30).all()


def test_shapes_the_glue_cannot_take_are_refused():
    norm_c, rotary_c = glue_or_skip()
    x = torch.zeros(4)
    assert rotary_c(x.data_ptr(), 1, x.data_ptr(), 1, 1, 3, x.data_ptr(), x.data_ptr()) == 1  # odd head size
    assert norm_c(x.data_ptr(), None, 1, 0, x.data_ptr(), 1e-5, x.data_ptr()) == 1
    if llama_decode.silu_mul() is not None:
        assert llama_decode.silu_mul()(x.data_ptr(), 1, 0, x.data_ptr()) == 1


def attention_or_skip():
    if llama_decode.attention() is None:
        pytest.skip(f"the C kernels do not build here: {llama_decode.attention.unavailable}")
    return llama_decode.attention()


@pytest.fixture(scope="module")
def pool() -> int:
    """The matrix kernels' thread pool (tokviz_parallel), which the attention of a step runs on (loaded once:
    each load keys the library by running the compiler's --version)."""
    try:
        return load_library().parallel
    except QuantUnavailable as error:
        pytest.skip(f"the C kernels do not build here: {error}")


def attend(function, q, keys, values, keep, scale, parallel=None, threads=1):
    rows, kv_heads, columns, dim = keys.shape
    out = torch.empty_like(q)
    status = function(q.data_ptr(), rows, q.shape[-1] // dim, kv_heads, dim, keys.data_ptr(), values.data_ptr(),
                      keys.stride(0), keys.stride(1), columns, None if keep is None else keep.data_ptr(), scale,
                      out.data_ptr(), None, 0, None, 0, parallel, threads)
    return status, out


# the bundled model's shapes (9 query heads on 3 key/value heads of 64) at 1, 8 and 16 rows, with and without
# masked columns (left padding, cropped tokens), a long context, head sizes it has not, one query head per kv head
@pytest.mark.parametrize("rows, q_heads, kv_heads, dim, columns, masked", [
    (1, 9, 3, 64, 110, False), (8, 9, 3, 64, 110, True), (16, 9, 3, 64, 37, True), (8, 9, 3, 64, 5, False),
    (2, 8, 2, 128, 1500, True), (3, 4, 4, 32, 19, True), (2, 6, 3, 24, 9, False)])
def test_decode_attention_against_sdpa_and_float64(rows, q_heads, kv_heads, dim, columns, masked, pool):
    function = attention_or_skip()
    torch.manual_seed(rows * columns + dim)
    # keys and values as the cache holds them: views of buffers with room to grow
    keys = torch.randn(rows, kv_heads, columns + 16, dim)[:, :, :columns]
    values = torch.randn(rows, kv_heads, columns + 16, dim)[:, :, :columns]
    q = torch.randn(rows, 1, q_heads * dim) * 2
    keep = None
    if masked:
        keep = torch.rand(rows, columns) > 0.3
        keep[:, -1] = True  # the step's own token
    scale = dim**-0.5
    status, out = attend(function, q, keys, values, keep, scale)
    assert status == 0
    group = q_heads // kv_heads
    grouped = q.view(rows, kv_heads, group, dim)
    mask = None if keep is None else keep[:, None, None, :]
    want = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask, scale=scale).reshape(rows, 1, -1)
    scores = torch.einsum("rhgd,rhld->rhgl", grouped.double(), keys.double()) * scale
    if keep is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    exact = torch.einsum("rhgl,rhld->rhgd", scores.softmax(-1), values.double()).reshape(rows, 1, -1)
    # fp32 rounding of sums over 64-1,500 terms of values ~1 (measured: within 1.5e-6 of float64, as SDPA is)
    assert (out.double() - exact).abs().max() < 1e-5
    assert (want.double() - exact).abs().max() < 1e-5
    assert (out - want).abs().max() < 1e-5
    # on the kernels' pool, each (row, head) pair shared out is computed as alone: bit for bit the same
    pooled_status, pooled = attend(function, q, keys, values, keep, scale, pool, 2)
    assert pooled_status == 0 and torch.equal(pooled, out)


@pytest.mark.parametrize("rows", [1, 3])
def test_decode_attention_writes_the_steps_keys_and_values_into_the_cache_first(rows, pool):
    """The step's own keys and values (read with row strides, as views of the joined q/k/v output are) land in
    the cache's column `length - 1`, every other column untouched, and are attended to."""
    function = attention_or_skip()
    kv_heads, dim, held, room = 3, 64, 20, 8
    torch.manual_seed(rows)
    key_buffer = torch.randn(rows, kv_heads, held + room, dim)
    value_buffer = torch.randn(rows, kv_heads, held + room, dim)
    before = key_buffer.clone(), value_buffer.clone()
    qkv = torch.randn(rows, 1, (9 + 2 * kv_heads) * dim)
    q, k, v = qkv.split([9 * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    q = q.contiguous()
    out = torch.empty_like(q)
    assert function(q.data_ptr(), rows, 9, kv_heads, dim, key_buffer.data_ptr(), value_buffer.data_ptr(),
                    key_buffer.stride(0), key_buffer.stride(1), held + 1, None, dim**-0.5, out.data_ptr(),
                    k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0), pool, 2) == 0
    assert torch.equal(key_buffer[:, :, held], k.view(rows, kv_heads, dim))
    assert torch.equal(value_buffer[:, :, held], v.view(rows, kv_heads, dim))
    for buffer, old in zip((key_buffer, value_buffer), before):
        assert torch.equal(buffer[:, :, :held], old[:, :, :held])
        assert torch.equal(buffer[:, :, held + 1 :], old[:, :, held + 1 :])
    keys, values = key_buffer[:, :, : held + 1], value_buffer[:, :, : held + 1]
    want = F.scaled_dot_product_attention(q.view(rows, kv_heads, 3, dim), keys, values, scale=dim**-0.5)
    assert (out - want.reshape(rows, 1, -1)).abs().max() < 1e-5


def test_shapes_the_attention_cannot_take_are_refused(pool):
    function = attention_or_skip()
    q, keys = torch.zeros(1, 1, 9 * 64), torch.zeros(1, 3, 4, 64)
    assert attend(function, q, keys, keys, torch.zeros(1, 4, dtype=torch.bool), 0.125)[0] == 2  # nothing to attend to
    second_row_blind = torch.tensor([[True] * 4, [False] * 4])  # on the pool, only the second part sees it
    two = torch.zeros(2, 1, 9 * 64), torch.zeros(2, 3, 4, 64)
    assert attend(function, two[0], two[1], two[1], second_row_blind, 0.125, pool, 2)[0] == 2
    assert attend(function, torch.zeros(1, 1, 8 * 64), keys, keys, None, 0.125)[0] == 1  # 8 query heads on 3
    odd = torch.zeros(1, 3, 4, 12)
    assert attend(function, torch.zeros(1, 1, 9 * 12), odd, odd, None, 0.3)[0] == 1  # a head size not of 8s
