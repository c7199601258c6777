"""GPT-2's activation runs as one fused op: the loaded model has no NewGELUActivation left, and its logits stay
within fp32 rounding of the unmodified model's (the engine's statistics are checked against the independent
forward in test_engine and test_kernels, on the loaded model)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM
from transformers.activations import GELUTanh, NewGELUActivation

from tokviz_app.engine.fused_activations import fuse_activations


def test_the_loaded_model_runs_the_fused_activation(tiny_model):
    kinds = {type(module) for module in tiny_model.hf_model.modules()}
    assert GELUTanh in kinds and NewGELUActivation not in kinds


def test_fused_logits_match_the_unmodified_model(tiny_model_path):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    fused = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    assert fuse_activations(fused) == plain.config.n_layer
    assert fuse_activations(fused) == 0  # nothing left to replace
    ids = torch.randint(0, plain.config.vocab_size, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(input_ids=ids).logits, fused(input_ids=ids).logits
    # Fused and written-out tanh GELU round differently (<= 2.4e-7 apart per activation); through two layers that
    # stays far below 1e-4 in the logits, and the probabilities the page shows are rounded to 0.1 %.
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
