"""A lean decoding step for Llama-architecture models on the fast path (the bundled SmolLM2).

With the matrix products in `exact_quant.c`, most of a one-token step of SmolLM2's 30 thin layers is
transformers' eager Python around them (decorators, keyword plumbing, mask building, the attention dispatch).
For one-token steps this calls the same modules and the same functions in the same order with nothing
around them (16.4–17.5 -> 14.4–15.3 ms a forward on a 2-core Xeon); everything else (prompts, hidden states for the
layer lens, other models) goes to transformers' forward. The norms and rotary embeddings run in `decode_glue.c`
(one call each instead of 7-14 torch ops: 44 -> ~37 ms a step on a 2-core AVX2 EPYC), where it builds; its logits
equal transformers' within fp32 rounding (tested), bit for bit without the glue. A layer's q/k/v and gate/up
products are one kernel call each (`quant_linear.joined`: 41.6 -> 37.1 ms a step there, bit for bit). The
attention runs in `decode_attention.c` (SDPA's CPU kernel is made for long queries: 215 -> 109 us a layer at 8
rows, 44 -> 21 us at 1, on a 2-core AVX2 EPYC), within fp32 rounding of SDPA, its (row, head) pairs shared out
on the matrix kernels' own threads (8 rows: 6.8 -> 3.3 ms a step on a 2-core AVX-512 EPYC).
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .quant_library import LazyFunction

GLUE_SOURCE = Path(__file__).with_name("decode_glue.c")
GLUE_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC")  # contracted FMAs round otherwise
_p, _n = ctypes.c_void_p, ctypes.c_int64
add_rms_norm = LazyFunction(GLUE_SOURCE, GLUE_FLAGS, "tokviz_add_rms_norm", [_p, _p, _n, _n, _p, ctypes.c_float, _p],
                            "one-token steps norm with torch")
rotary = LazyFunction(GLUE_SOURCE, GLUE_FLAGS, "tokviz_rotary", [_p, _n, _p, _n, _n, _n, _p, _p],
                      "one-token steps rotate with torch")
silu_mul = LazyFunction(GLUE_SOURCE, GLUE_FLAGS, "tokviz_silu_mul", [_p, _n, _n, _p],
                        "one-token steps gate with torch")
ATTENTION_SOURCE = Path(__file__).with_name("decode_attention.c")
attention = LazyFunction(ATTENTION_SOURCE, ("-O3", "-march=native", "-shared", "-fPIC"), "tokviz_decode_attention",
                         [_p, _n, _n, _n, _n, _p, _p, _n, _n, _n, _p, ctypes.c_float, _p, _p, _n, _p, _n, _p,
                          ctypes.c_int],
                         "one-token steps attend with torch's SDPA")


class Glue(NamedTuple):
    """The native functions a step uses (each None where it does not build; the norm and rotary come together)."""

    norm: object
    rotary: object
    attention: object
    silu_mul: object  # silu(gate) * up, for models whose activation is SiLU
    parallel: int | None = None  # exact_quant.c's thread pool (tokviz_parallel), where the attention may use it
    threads: int = 1


_ALLOWED = frozenset({"input_ids", "cache", "use_cache", "position_ids", "attention_mask"})


def install(hf_model: torch.nn.Module, parallel: int | None = None) -> bool:
    """Serve this model's one-token steps with `lean_step`; False where its architecture is not the one
    written here (nothing is changed then). `parallel`: the matrix kernels' thread pool (QuantLibrary.parallel),
    on which the attention then runs as many threads as torch would use."""
    if not _is_plain_llama(hf_model) or getattr(hf_model, "_tokviz_lean", False):
        return False
    transformers_forward = hf_model.forward
    # built here (the fast path's background preparation), not in a user's first step
    glue = None
    if add_rms_norm() is not None and rotary() is not None:
        gate = silu_mul() if hf_model.config.hidden_act == "silu" else None
        glue = Glue(add_rms_norm(), rotary(), attention(), gate, parallel, torch.get_num_threads())
    joints = [_LayerJoints.of(layer) for layer in hf_model.model.layers]

    def forward(*args, **kwargs):
        if not args and kwargs.keys() <= _ALLOWED and _one_token_step(kwargs):
            return lean_step(hf_model, kwargs["input_ids"], kwargs["cache"], kwargs.get("position_ids"),
                             kwargs.get("attention_mask"), glue, joints)
        return transformers_forward(*args, **kwargs)

    hf_model.forward = forward
    hf_model._tokviz_lean = True
    return True


class _LayerJoints:
    """A layer's q/k/v and gate/up products as one kernel call each, where its layers are the fast path's."""

    def __init__(self, qkv, qkv_sizes: list[int], gate_up, ff_size: int) -> None:
        self.qkv, self.qkv_sizes, self.gate_up, self.ff_size = qkv, qkv_sizes, gate_up, ff_size

    @classmethod
    def of(cls, layer) -> "_LayerJoints":
        from .quant_linear import joined

        attention, mlp = layer.self_attn, layer.mlp
        parts = [attention.q_proj, attention.k_proj, attention.v_proj]
        return cls(joined(parts), [part.out_features for part in parts], joined([mlp.gate_proj, mlp.up_proj]),
                   mlp.gate_proj.out_features)


def _is_plain_llama(hf_model: torch.nn.Module) -> bool:
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaRMSNorm

    base = getattr(hf_model, "model", None)
    config = hf_model.config
    return (type(hf_model) is LlamaForCausalLM and base is not None
            and all(type(layer) is LlamaDecoderLayer for layer in base.layers)
            and all(type(norm) is LlamaRMSNorm for layer in base.layers
                    for norm in (layer.input_layernorm, layer.post_attention_layernorm))
            and len(base.layers) == config.num_hidden_layers)


def _one_token_step(kwargs: dict) -> bool:
    from transformers.cache_utils import DynamicCache, DynamicLayer

    ids, cache, mask = kwargs.get("input_ids"), kwargs.get("cache"), kwargs.get("attention_mask")
    return (isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[1] == 1 and ids.device.type == "cpu"
            and isinstance(cache, DynamicCache) and cache.get_seq_length() > 0
            and all(isinstance(layer, DynamicLayer) for layer in cache.layers)
            and (kwargs.get("position_ids") is not None or ids.shape[0] == 1)
            and (mask is None or mask.dim() == 2) and kwargs.get("use_cache", True) is not False
            and not torch.is_grad_enabled())


def lean_step(hf_model, input_ids: torch.Tensor, cache, position_ids: torch.Tensor | None,
              attention_mask: torch.Tensor | None, glue: Glue | None = None, joints: list | None = None):
    """transformers' LlamaForCausalLM forward for one token per row (the rows' pasts in `cache`), written out.
    `glue`: the native functions, else torch's ops; `joints`: each layer's _LayerJoints."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    base = hf_model.model
    rows = input_ids.shape[0]
    if position_ids is None:
        position_ids = torch.tensor([[cache.get_seq_length()]])
    hidden = base.embed_tokens(input_ids)
    cos, sin = base.rotary_emb(hidden, position_ids)
    if glue and (hidden.dtype != torch.float32 or cos.dtype != torch.float32 or not cos.is_contiguous()):
        glue = None  # the native functions take plain contiguous fp32
    # One query per row sees every key its mask keeps (all of them without a mask): no causal part is left.
    keep = None if attention_mask is None else attention_mask.bool().contiguous()  # [rows, columns], a byte each
    mask = None if keep is None else keep[:, None, None, :]
    pending = None  # the last layer's MLP output: added to `hidden` by the next norm in one call with the glue
    for layer, kv, joint in zip(base.layers, cache.layers, joints or [None] * len(base.layers)):
        attention, mlp = layer.self_attn, layer.mlp
        hidden, x = _add_and_norm(glue, layer.input_layernorm, hidden, pending)
        if joint and joint.qkv:
            q, k, v = joint.qkv.forward(x).split(joint.qkv_sizes, dim=-1)  # (our own layer: no hooks to call)
        else:
            q, k, v = attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)
        if glue:
            dim = attention.head_dim
            q, k = q.contiguous(), k.contiguous()  # (views of the joined product are not, from 2 rows up)
            glue.rotary(q.data_ptr(), q.shape[-1] // dim, k.data_ptr(), k.shape[-1] // dim, rows, dim,
                        cos.data_ptr(), sin.data_ptr())  # in place, rounded as apply_rotary_pos_emb rounds
        out = _append_and_attend(glue, attention, kv, q, k, v, keep)
        if out is None:  # the cache must grow, or no native attention: the cache's own update
            flat_q = q
            q, k, v = (t.view(rows, 1, -1, attention.head_dim).transpose(1, 2) for t in (q, k, v))
            if not glue:
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = kv.update(k, v)
            out, _ = _native_attention(glue, attention, flat_q, k, v, k.shape[2], keep)
        if out is None:
            # SDPA called as transformers calls it, so the numbers are the same bit for bit: grouped-query
            # attention without a mask, and with one the query heads sharing a key/value head as its queries
            if mask is None:
                out = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling, enable_gqa=True)
            else:
                grouped = q.reshape(rows, k.shape[1], -1, attention.head_dim)
                out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask, scale=attention.scaling)
        attended = attention.o_proj(out.reshape(rows, 1, -1))
        hidden, x = _add_and_norm(glue, layer.post_attention_layernorm, hidden, attended)
        if joint and joint.gate_up:
            gate_up = joint.gate_up.forward(x)
            if glue and glue.silu_mul and gate_up.is_contiguous():  # [rows, 1, gate and up side by side]
                gated = torch.empty(rows, 1, joint.ff_size)
                glue.silu_mul(gate_up.data_ptr(), rows, joint.ff_size, gated.data_ptr())
            else:
                gate, up = gate_up.split(joint.ff_size, dim=-1)
                gated = mlp.act_fn(gate) * up
            pending = mlp.down_proj(gated)
        else:
            pending = mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))
    hidden, x = _add_and_norm(glue, base.norm, hidden, pending)
    logits = hf_model.lm_head(x)
    return CausalLMOutputWithPast(logits=logits, cache=cache)


def _append_and_attend(glue, attention, kv, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       keep: torch.Tensor | None) -> torch.Tensor | None:
    """The step's keys and values written into the cache's spare column and its attention, in one native call
    (q, k, v [rows, 1, heads * dim], rotated); None (nothing written) where the cache has no spare column in
    place (it grows in `update`) or the native attention does not serve."""
    spare = kv.spare_column() if glue and glue.attention and hasattr(kv, "spare_column") else None
    if spare is None:
        return None
    keys, values, length = spare
    width = keys.shape[1] * keys.shape[3]
    if k.shape[-1] != width or v.shape[-1] != width or k.stride(-1) != 1 or v.stride(-1) != 1:
        return None
    out, status = _native_attention(glue, attention, q, keys, values, length + 1, keep, new=(k, v))
    if status == 1:  # refused before writing anything
        return None
    kv.took_one(length)
    if status:
        raise RuntimeError("a row of the batch attends to no position")  # its own token is never masked
    return out


def _native_attention(glue, attention, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, columns: int,
                      keep: torch.Tensor | None, new: tuple[torch.Tensor, torch.Tensor] | None = None
                      ) -> tuple[torch.Tensor | None, int]:
    """(out, status) of the step's attention by `decode_attention.c` over the cache's first `columns` positions
    (q [rows, 1, heads * dim], keys/values [rows, kv_heads, ≥ columns, dim], `keep` [rows, columns] bool or None);
    with `new` (k, v), those are first written into column `columns - 1`. Status 1: not served, nothing
    written; 2: a row masks every position; out is None unless status is 0."""
    function = glue.attention if glue else None
    rows, kv_heads, capacity, dim = keys.shape
    if (function is None or values.shape != keys.shape or values.stride() != keys.stride()
            or keys.stride()[2:] != (dim, 1) or keys.dtype != torch.float32 or values.dtype != torch.float32
            or capacity < columns or not q.is_contiguous() or q.shape[0] != rows
            or (keep is not None and keep.shape != (rows, columns))):
        return None, 1
    out = torch.empty_like(q)
    k, v = new or (None, None)
    status = function(q.data_ptr(), rows, q.shape[-1] // dim, kv_heads, dim, keys.data_ptr(), values.data_ptr(),
                      keys.stride(0), keys.stride(1), columns, None if keep is None else keep.data_ptr(),
                      attention.scaling, out.data_ptr(), None if k is None else k.data_ptr(),
                      0 if k is None else k.stride(0), None if v is None else v.data_ptr(),
                      0 if v is None else v.stride(0), glue.parallel, glue.threads)
    return (out if status == 0 else None), status


def _add_and_norm(glue, norm: torch.nn.Module, hidden: torch.Tensor, delta: torch.Tensor | None):
    """(hidden + delta, norm of it): in one native call with the glue (`hidden`, this step's own, is added to in
    place), else as transformers does it."""
    if not glue:
        hidden = hidden if delta is None else hidden + delta
        return hidden, norm(hidden)
    out = torch.empty_like(hidden)
    glue.norm(hidden.data_ptr(), None if delta is None else delta.contiguous().data_ptr(),
              hidden.numel() // hidden.shape[-1], hidden.shape[-1], norm.weight.data_ptr(), norm.variance_epsilon,
              out.data_ptr())
    return hidden, out
