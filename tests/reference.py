"""An independent computation of what the engine should report.

One full forward pass over all ids (no cache), then float64 numpy maths:
nothing here shares code with tokviz_app.engine.metrics.
"""

from __future__ import annotations

import numpy as np
import torch


_PLAIN_MODELS: dict[str, object] = {}


def plain_model(model):
    """An independent copy of the model's weights, loaded by transformers alone (no packing, no lane)."""
    from transformers import AutoModelForCausalLM

    folder = model.hf_model.config._name_or_path
    if folder not in _PLAIN_MODELS:
        _PLAIN_MODELS[folder] = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return _PLAIN_MODELS[folder]


def full_logits(model, ids: list[int]) -> np.ndarray:
    """Logits [len(ids), V] from one uncached forward pass of an independently loaded copy."""
    with torch.no_grad():
        out = plain_model(model)(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].double().numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def sampler_distribution(logits: np.ndarray, temperature=1.0, top_k=0, top_p=1.0, greedy=False) -> np.ndarray:
    if greedy:
        out = np.zeros_like(logits)
        out[int(np.argmax(logits))] = 1.0
        return out
    z = logits / temperature
    if top_k:
        threshold = np.sort(z)[::-1][top_k - 1]
        z = np.where(z < threshold, -np.inf, z)
    p = softmax(z)
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.zeros(len(p), dtype=bool)
        mass = 0.0
        for i in order:  # smallest prefix reaching top_p
            keep[i] = True
            mass += p[i]
            if mass >= top_p:
                break
        p = np.where(keep, p, 0.0)
        p = p / p.sum()
    return p


def expected(logits_row: np.ndarray, token_id: int, **sampling) -> dict:
    p = softmax(logits_row)
    nz = p[p > 0]
    top = np.argsort(-p, kind="stable")[:10]
    return {
        "prob": p[token_id],
        "logprob": np.log(p[token_id]),
        "rank": int((logits_row > logits_row[token_id]).sum()) + 1,
        "entropy": float(-(nz * np.log2(nz)).sum()),
        "sampled_prob": sampler_distribution(logits_row, **sampling)[token_id],
        "top_ids": top.tolist(),
        "top_probs": p[top],
        "top_sampled": sampler_distribution(logits_row, **sampling)[top],
    }


def assert_step_matches(step, logits_row: np.ndarray, tol: float = 1e-4, **sampling) -> None:
    exp = expected(logits_row, step.token_id, **sampling)
    assert abs(step.prob - exp["prob"]) < tol
    assert abs(step.logprob - exp["logprob"]) < max(tol, 1e-3 * abs(exp["logprob"]))
    # The rank is exact up to near ties: logits within 1e-4 of the chosen one may order either way
    # (float32 kernels differ between CPUs and layouts by ~1e-6 relative).
    chosen = logits_row[step.token_id]
    lowest, highest = int((logits_row > chosen + 1e-4).sum()) + 1, int((logits_row > chosen - 1e-4).sum()) + 1
    assert lowest <= step.rank <= highest, (step.rank, exp["rank"])
    assert abs(step.entropy - exp["entropy"]) < 1e-3
    assert abs(step.sampled_prob - exp["sampled_prob"]) < tol
    alt_probs = np.array([a.prob for a in step.alternatives])
    np.testing.assert_allclose(alt_probs, exp["top_probs"], atol=tol)
    np.testing.assert_allclose([a.sampled_prob for a in step.alternatives], exp["top_sampled"], atol=tol)
    # Ids must match except where two probabilities tie within float error.
    for a, b, pa in zip([a.token_id for a in step.alternatives], exp["top_ids"], alt_probs):
        assert a == b or abs(pa - softmax(logits_row)[b]) < 1e-5
