"""The logit lens (issue 16) against an independent computation.

The reference is a separately loaded copy of the model (transformers alone: no kernel layouts, no lane, no
cache): its blocks' outputs caught by forward hooks, the final norm and the output head applied by hand in
float64 numpy. Every layer's top-5 must agree within 1e-4, the last row must be the token's own numbers, and
the decided layers must be what the by-hand lens says.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.reference import plain_model
from tokviz_app.core.errors import PositionError, TokvizError
from tokviz_app.engine import ModelManager, SamplingParams, layer_lens
from tokviz_app.engine.layer_lens import find_lens
from tokviz_app.present.scales import DECIDED, decided_value, level_of_value, value_class

PROMPT = "The quick brown fox jumps over"
TIE = 1e-4  # logits this close to the token's may order either way between float32 kernels


# ------------------------------------------------------------------------------------------ the reference
def reference_lens(model, ids: list[int]) -> np.ndarray:
    """float64 lens logits [layers + 1, len(ids), V]: embeddings and every block's raw output, then the
    final norm (LayerNorm or RMSNorm, by hand) and the head's weight."""
    plain = plain_model(model)
    base = plain.base_model
    blocks = base.h if hasattr(base, "h") else base.layers
    raw: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: raw.append(out[0] if isinstance(out, tuple) else out))
             for b in blocks]
    try:
        with torch.no_grad():
            out = plain(input_ids=torch.tensor([ids]), use_cache=False, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    states = [out.hidden_states[0][0].double().numpy()] + [r[0].double().numpy() for r in raw]
    norm = base.ln_f if hasattr(base, "ln_f") else base.norm
    weight = norm.weight.detach().double().numpy()
    if isinstance(norm, torch.nn.LayerNorm):
        bias, eps = norm.bias.detach().double().numpy(), norm.eps

        def apply(x):
            return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * weight + bias
    else:  # Llama's RMSNorm
        eps = norm.variance_epsilon

        def apply(x):
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * weight
    head = plain.get_output_embeddings().weight.detach().double().numpy()
    return np.stack([apply(s) @ head.T for s in states])


def by_hand(logits: np.ndarray, token: int) -> dict:
    p = np.exp(logits - logits.max())
    p /= p.sum()
    nz = p[p > 0]
    top = np.argsort(-p, kind="stable")[:5]
    return {"prob": p[token], "rank": int((logits > logits[token]).sum()) + 1,
            "entropy": float(-(nz * np.log2(nz)).sum()), "top": top, "top_probs": p[top], "p": p}


def rank_in_range(rank: int, logits: np.ndarray, token: int) -> bool:
    chosen = logits[token]
    return int((logits > chosen + TIE).sum()) + 1 <= rank <= int((logits > chosen - TIE).sum()) + 1


def check_rows(rows, ref: np.ndarray, index: int, token: int) -> None:
    """The engine's rows for the token at `index` against the reference lens."""
    assert [row.layer for row in rows] == list(range(len(ref)))
    for row, logits in zip(rows, ref[:, index - 1]):
        want = by_hand(logits, token)
        np.testing.assert_allclose([a.prob for a in row.top], want["top_probs"], atol=1e-4)
        for alt, ref_id in zip(row.top, want["top"]):
            assert alt.token_id == ref_id or abs(alt.prob - want["p"][alt.token_id]) < 1e-5
        assert abs(row.token_prob - want["prob"]) < 1e-4
        assert rank_in_range(row.token_rank, logits, token), (row.layer, row.token_rank, want["rank"])
        assert abs(row.entropy - want["entropy"]) < 1e-3


def reference_decided(ref: np.ndarray, ids: list[int]) -> list[int | None | str]:
    """Per token after the first: the decided layer by hand; "tie" where a layer is too close to call."""
    out: list[int | None | str] = []
    for index in range(1, len(ids)):
        logits, token = ref[:, index - 1], ids[index]
        others = np.delete(logits, token, axis=1)
        margin = logits[:, token] - others.max(axis=1)  # > 0: the top-1
        if np.any(np.abs(margin) < TIE):
            out.append("tie")
            continue
        layer = None
        for k in range(len(logits) - 1, -1, -1):
            if margin[k] < 0:
                break
            layer = k
        out.append(layer)
    return out


def assert_last_row_is_the_token(rows, step) -> None:
    last = rows[-1]
    assert abs(last.token_prob - step.prob) < 1e-5 and abs(last.entropy - step.entropy) < 1e-5
    assert last.token_rank == step.rank
    assert [a.token_id for a in last.top] == [a.token_id for a in step.alternatives[:5]]


def assert_lens_output_is_the_models(session, step, tol: float) -> None:
    """The lens's own last layer (before the row takes the step's numbers: `own_row`) is the model's output
    up to float32 rounding between a full pass and the cached steps."""
    index = step.position + (0 if step.is_prompt else len(session.prompt_tokens))
    ids = session.token_ids
    computed = session.model.lens.rows(session._kept.states, index - 1, ids[index], session.model.token_text)[-1]
    assert abs(computed.token_prob - step.prob) < tol and abs(computed.entropy - step.entropy) < 10 * tol
    assert computed.token_rank == step.rank


# ---------------------------------------------------------------------------------------------- tiny GPT-2
def test_every_layer_matches_the_reference_and_the_last_row_is_the_token(tiny_model):
    assert tiny_model.capabilities.layer_access and tiny_model.capabilities.layer_count == 2
    lens = tiny_model.lens
    assert lens.norm_name == "ln_f" and lens.norm_owner is tiny_model.hf_model.transformer
    session = tiny_model.start(PROMPT, SamplingParams(seed=11))
    try:
        session.generate(24)
        ids = session.token_ids
        ref = reference_lens(tiny_model, ids)
        n = len(session.prompt_tokens)
        for step in session.tokens:
            rows = session.layer_lens(step.position)
            check_rows(rows, ref, n + step.position, step.token_id)
            assert_last_row_is_the_token(rows, step)
            assert_lens_output_is_the_models(session, step, 1e-5)
        for step in session.prompt_tokens[1:]:
            rows = session.layer_lens(step.position, prompt=True)
            check_rows(rows, ref, step.position, step.token_id)
            assert_last_row_is_the_token(rows, step)
        decided = [None, *session.decided_layers(prompt=True)[1:], *session.decided_layers()]
        want = reference_decided(ref, ids)
        checked = [(d, w) for d, w in zip(decided[1:], want) if w != "tie"]
        assert len(checked) >= len(want) - 2 and all(d == w for d, w in checked), list(zip(decided[1:], want))
        assert any(d is None for d, _ in checked) and any(d is not None for d, _ in checked)
    finally:
        session.close()


def test_one_forward_per_text_until_the_text_changes(tiny_model, monkeypatch):
    passes: list[int] = []
    original = layer_lens.Lens.hidden_states
    monkeypatch.setattr(layer_lens.Lens, "hidden_states",
                        lambda self, ids: passes.append(len(ids)) or original(self, ids))
    session = tiny_model.start(PROMPT, SamplingParams(seed=3))
    try:
        session.generate(10)
        first = session.layer_lens(2)
        session.layer_lens(7)
        session.layer_lens(3, prompt=True)
        session.decided_layers()
        session.decided_layers(prompt=True)
        assert passes == [len(session.token_ids) - 1], "one pass over the whole text gives every position"
        assert session.layer_lens(2) == first
        session.generate(3)  # the text grew: earlier positions are still covered by the kept pass
        session.layer_lens(2)
        assert len(passes) == 1
        session.layer_lens(11)  # a new token needs a new pass
        session.decided_layers()
        assert len(passes) == 2
        other = next(a.token_id for a in session.tokens[4].alternatives if a.token_id != session.tokens[4].token_id)
        session.choose(4, other)  # the text changed at 4: its rows are the new token's
        rows = session.layer_lens(4)
        assert len(passes) == 2, "the prefix before position 4 did not change"
        assert_last_row_is_the_token(rows, session.tokens[4])
        check_rows(rows, reference_lens(tiny_model, session.token_ids), len(session.prompt_tokens) + 4, other)
    finally:
        session.close()


def test_too_large_to_keep_runs_one_pass_per_position(tiny_model, monkeypatch):
    monkeypatch.setattr(layer_lens, "MAX_KEPT_BYTES", 0)
    session = tiny_model.start(PROMPT, SamplingParams(seed=4))
    try:
        session.generate(8)
        ref = reference_lens(tiny_model, session.token_ids)
        n = len(session.prompt_tokens)
        for position in (0, 5, 7):
            check_rows(session.layer_lens(position), ref, n + position, session.tokens[position].token_id)
        assert session._kept.states is None and len(session._kept.fed) == n + 7  # only the prefix it needed
        want = reference_decided(ref, session.token_ids)[n - 1:]
        assert all(w == "tie" or d == w for d, w in zip(session.decided_layers(), want))
    finally:
        session.close()


def test_long_text_is_read_in_chunks(long_context_model_path):
    model = ModelManager(device="cpu").load(str(long_context_model_path))
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
    session = model.score_text(text, SamplingParams())
    try:
        assert len(session.token_ids) > layer_lens.FORWARD_CHUNK + 50
        ref = reference_lens(model, session.token_ids)
        n = len(session.prompt_tokens)
        for position in (3, layer_lens.FORWARD_CHUNK - n + 5, len(session.tokens) - 1):
            rows = session.layer_lens(position)
            check_rows(rows, ref, n + position, session.tokens[position].token_id)
            assert_last_row_is_the_token(rows, session.tokens[position])
    finally:
        session.close()


@pytest.mark.parametrize("mode", ["nn", "packed"])
def test_the_head_runs_in_the_chosen_kernel_layout(tiny_model_path, mode, tmp_path, monkeypatch):
    if mode == "packed" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setenv("TOKVIZ_CACHE_DIR", str(tmp_path))
    model = ModelManager(device="cpu", cpu_kernels=mode).load(str(tiny_model_path))
    session = model.start(PROMPT, SamplingParams(seed=9))
    try:
        session.generate(6)
        ref = reference_lens(model, session.token_ids)
        for step in session.tokens:
            rows = session.layer_lens(step.position)
            check_rows(rows, ref, len(session.prompt_tokens) + step.position, step.token_id)
            assert_last_row_is_the_token(rows, step)
    finally:
        session.close()


def test_positions_and_closed_sessions(tiny_model):
    session = tiny_model.start(PROMPT, SamplingParams(seed=1))
    session.generate(2)
    with pytest.raises(PositionError, match="no generated token"):
        session.layer_lens(2)
    with pytest.raises(PositionError, match="first prompt token"):
        session.layer_lens(0, prompt=True)
    with pytest.raises(PositionError, match="no prompt token"):
        session.layer_lens(len(session.prompt_tokens), prompt=True)
    session.close()
    with pytest.raises(TokvizError, match="closed"):
        session.layer_lens(0)


# ------------------------------------------------------------------------------- when the parts are missing
def test_a_model_without_a_known_norm_or_with_a_rescaled_head_has_no_lens(tiny_model_path):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32).eval()
    lens, note = find_lens(hf, "cpu")
    assert lens is not None and note == ""
    hf.config.final_logit_softcapping = 30.0
    lens, note = find_lens(hf, "cpu")
    assert lens is None and "rescales its output" in note
    hf.config.final_logit_softcapping = None
    hf.transformer.final_mix = hf.transformer.ln_f  # a norm under a name tokviz does not know
    del hf.transformer.ln_f
    lens, note = find_lens(hf, "cpu")
    assert lens is None and note == "tokviz cannot find this model's final norm: its layers cannot be shown."


# ------------------------------------------------------------------------------------- the heatmap's values
def test_decided_values_favour_the_last_layers():
    layers = 12
    levels = [level_of_value(decided_value(k, layers), DECIDED) for k in range(layers + 1)]
    assert levels == ["green"] * 7 + ["blue"] * 3 + ["purple"] * 2 + ["orange"]
    assert level_of_value(decided_value(None, layers), DECIDED) == "red"
    assert value_class(decided_value(None, 4), DECIDED) == "tv-d-red" and value_class(None, DECIDED) == "tv-d-none"


# ----------------------------------------------------------------------------------- SmolLM2 (Llama family)
@pytest.mark.slow
def test_smollm2_norm_is_found_and_the_last_row_is_the_token():
    model = ModelManager(device="cpu").load("smollm2-135m")
    assert model.fast_path.wait(120)  # where it serves, the lens's many rows go through its dequantised tiles
    caps, lens = model.capabilities, model.lens
    assert caps.layer_access and caps.layer_count == 30
    assert lens.norm_name == "norm" and lens.norm_owner is model.hf_model.model
    session = model.start("The capital of France is", SamplingParams(greedy=True))
    try:
        session.generate(5)
        ref = reference_lens(model, session.token_ids)
        n = len(session.prompt_tokens)
        for step in [*session.tokens, *session.prompt_tokens[1:]]:
            rows = session.layer_lens(step.position, prompt=step.is_prompt)
            assert_last_row_is_the_token(rows, step)
            # on the fast path the lens's full pass (BLAS on dequantised tiles) and the steps (the exact kernels)
            # sum in different orders over 30 layers: 1.2e-5 apart was seen, the bound is 1e-4
            assert_lens_output_is_the_models(session, step, 5e-5)
            check_rows(rows, ref, step.position + (0 if step.is_prompt else n), step.token_id)
        decided = session.decided_layers()
        assert all(d is not None for d in decided), "greedy tokens are the model's top-1"
        want = reference_decided(ref, session.token_ids)[n - 1:]
        assert all(w == "tie" or d == w for d, w in zip(decided, want)), (decided, want)
    finally:
        session.close()


def test_the_lens_pass_leaves_streaming_sessions_alone(tiny_model):
    """A lens pass runs beside the lane while another session streams: that session's tokens are the ones it
    draws alone (seeded), and the lens's rows are the reference's."""
    import threading

    alone = tiny_model.start(PROMPT, SamplingParams(seed=21))
    expected = [s.token_id for s in alone.generate(30)]
    alone.close()
    looked = tiny_model.start(PROMPT, SamplingParams(seed=5))
    looked.generate(12)
    streaming = tiny_model.start(PROMPT, SamplingParams(seed=21))
    drawn: list[int] = []
    worker = threading.Thread(target=lambda: drawn.extend(s.token_id for s in streaming.generate(30)))
    try:
        worker.start()
        ref = reference_lens(tiny_model, looked.token_ids)
        n = len(looked.prompt_tokens)
        for position in range(12):
            looked._kept = None  # a fresh pass each time, while the other session streams
            check_rows(looked.layer_lens(position), ref, n + position, looked.tokens[position].token_id)
        worker.join(60)
        assert drawn == expected
    finally:
        looked.close()
        streaming.close()
    assert looked._kept is None, "closing the session drops the kept pass"
