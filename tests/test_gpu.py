"""The GPU path (bf16/fp16 on CUDA): same numbers within half-precision tolerance. Skipped without CUDA."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_session_in_half_precision_matches_fp32_reference(tiny_model_path):
    from tests.reference import full_logits, softmax
    from tokviz_app.engine import ModelManager, SamplingParams

    model = ModelManager(device="auto").load(str(tiny_model_path))
    assert model.device == "cuda" and model.dtype in {"bfloat16", "float16"}
    sessions = [model.start(p, SamplingParams(seed=i)) for i, p in enumerate(["The quick brown fox", "Hello", ""])]
    threads = [threading.Thread(target=s.generate, args=(20,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.lane.stats["max_batch"] >= 1
    for s in sessions:
        logits = full_logits(model, s.token_ids)
        n_prompt = len(s.prompt_tokens)
        for step in s.tokens:
            p = softmax(logits[n_prompt + step.position - 1])
            assert abs(step.prob - p[step.token_id]) < 3e-2
            np.testing.assert_allclose([a.prob for a in step.alternatives[:3]], np.sort(p)[::-1][:3], atol=3e-2)
