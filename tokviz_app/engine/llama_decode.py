"""A lean decoding step for Llama-architecture models on the fast path (the bundled SmolLM2).

With the matrix products in `exact_quant.c`, most of a one-token step of SmolLM2's 30 thin layers is
transformers' eager Python around them (decorators, keyword plumbing, mask building, the attention dispatch).
For one-token steps this calls the same modules and the same functions in the same order with nothing
around them (16.4–17.5 -> 14.4–15.3 ms a forward on a 2-core Xeon); everything else (prompts, hidden states for the
layer lens, other models) goes to transformers' forward. Its logits equal transformers' bit for bit (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_ALLOWED = frozenset({"input_ids", "cache", "use_cache", "position_ids", "attention_mask"})


def install(hf_model: torch.nn.Module) -> bool:
    """Serve this model's one-token steps with `lean_step`; False where its architecture is not the one
    written here (nothing is changed then)."""
    if not _is_plain_llama(hf_model) or getattr(hf_model, "_tokviz_lean", False):
        return False
    transformers_forward = hf_model.forward

    def forward(*args, **kwargs):
        if not args and kwargs.keys() <= _ALLOWED and _one_token_step(kwargs):
            return lean_step(hf_model, kwargs["input_ids"], kwargs["cache"], kwargs.get("position_ids"),
                             kwargs.get("attention_mask"))
        return transformers_forward(*args, **kwargs)

    hf_model.forward = forward
    hf_model._tokviz_lean = True
    return True


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
              attention_mask: torch.Tensor | None):
    """transformers' LlamaForCausalLM forward for one token per row (the rows' pasts in `cache`), written out."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    base = hf_model.model
    rows = input_ids.shape[0]
    if position_ids is None:
        position_ids = torch.tensor([[cache.get_seq_length()]])
    hidden = base.embed_tokens(input_ids)
    cos, sin = base.rotary_emb(hidden, position_ids)
    # One query per row sees every key its mask keeps (all of them without a mask): no causal part is left.
    mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
    for layer, kv in zip(base.layers, cache.layers):
        attention, mlp = layer.self_attn, layer.mlp
        x = layer.input_layernorm(hidden)
        q = attention.q_proj(x).view(rows, 1, -1, attention.head_dim).transpose(1, 2)
        k = attention.k_proj(x).view(rows, 1, -1, attention.head_dim).transpose(1, 2)
        v = attention.v_proj(x).view(rows, 1, -1, attention.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        k, v = kv.update(k, v)
        # SDPA called as transformers calls it, so the numbers are the same bit for bit: grouped-query attention
        # without a mask, and with one the query heads sharing a key/value head as its queries (`pack_gqa`)
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, scale=attention.scaling, enable_gqa=True)
        else:
            grouped = q.reshape(rows, k.shape[1], -1, attention.head_dim)
            out = F.scaled_dot_product_attention(grouped, k, v, attn_mask=mask, scale=attention.scaling)
        hidden = hidden + attention.o_proj(out.reshape(rows, 1, -1))
        x = layer.post_attention_layernorm(hidden)
        hidden = hidden + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))
    logits = hf_model.lm_head(base.norm(hidden))
    return CausalLMOutputWithPast(logits=logits, cache=cache)
