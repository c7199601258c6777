"""CPU kernels chosen by measurement: every layout gives the independent forward's numbers,
the choice is remembered per machine, and TOKVIZ_CPU_KERNELS overrides it."""

from __future__ import annotations

import json

import pytest
import torch

from tests.test_engine import PROMPT, check_all
from tokviz_app.engine import ModelManager, SamplingParams
from tokviz_app.engine import few_rows, kernels


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKVIZ_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def layouts_in(model) -> set[str]:
    found = set()
    for module in model.hf_model.modules():
        name = type(module).__name__
        if name in ("NNLinear", "Conv1D"):
            found.add("nn")
        elif name in ("NTLinear", "Linear"):
            found.add("nt")
        elif name == "MkldnnLinear":
            found.add("packed")
        elif name == "RowsLinear":
            found.add("rows")
    return found


@pytest.mark.parametrize("mode", ["nt", "nn", "packed", "rows", "auto", "plain"])
def test_every_layout_gives_the_independent_forwards_numbers(tiny_model_path, mode):
    if mode == "packed" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    if mode == "rows" and not few_rows.available():
        pytest.skip("no C compiler with OpenMP here")
    model = ModelManager(device="cpu", cpu_kernels=mode).load(str(tiny_model_path))
    if mode in ("nt", "nn", "packed", "rows"):
        assert mode in layouts_in(model)
    a = model.start(PROMPT, SamplingParams(seed=5))
    b = model.start("Hello world!", SamplingParams(seed=6, temperature=0.8, top_k=30))
    a.generate(12)
    b.generate(12)  # the two sessions batch in the lane
    a.choose(3, a.tokens[3].alternatives[1].token_id)
    a.generate(4)
    check_all(a, model)
    check_all(b, model, temperature=0.8, top_k=30)


def test_the_choice_is_remembered_per_machine_and_shape(tiny_model_path, private_cache):
    first = ModelManager(device="cpu", cpu_kernels="auto").load(str(tiny_model_path)).kernels
    assert first is not None and first.chosen and first.timings
    assert set(first.chosen.values()) <= set(kernels.LAYOUTS)
    for shape, by_layout in first.timings.items():
        assert set(by_layout) >= {"nt", "nn"}
        assert all(t > 0 for by_rows in by_layout.values() for t in by_rows.values())
    choice_file = private_cache / "cpu-kernels.json"  # absent when the machine was too busy to trust the timing
    remembered = json.loads(choice_file.read_text()) if choice_file.exists() else {}
    assert all(key.startswith(kernels.machine_key()) for key in remembered)
    # Steady measurements on a quiet machine are remembered; the others are timed again.
    second = ModelManager(device="cpu", cpu_kernels="auto").load(str(tiny_model_path)).kernels
    remembered_shapes = {key.split("|")[-2] for key in remembered}
    assert set(second.timings) == set(first.chosen) - remembered_shapes
    for shape in remembered_shapes:
        assert second.chosen[shape] == first.chosen[shape]
    assert "CPU kernels (auto" in second.line()


def test_the_environment_variable_overrides(tiny_model_path, monkeypatch):
    monkeypatch.setenv("TOKVIZ_CPU_KERNELS", "plain")
    model = ModelManager(device="cpu").load(str(tiny_model_path))
    assert model.kernels.mode == "plain" and not model.kernels.chosen
    assert layouts_in(model) == {"nn", "nt"}  # GPT-2 as loaded: Conv1D blocks, a Linear head
    monkeypatch.setenv("TOKVIZ_CPU_KERNELS", "fastest-please")
    with pytest.raises(ValueError, match="TOKVIZ_CPU_KERNELS"):
        ModelManager(device="cpu")


def test_pick_prefers_the_loaded_layout_and_guards_prefill():
    t = {"nt": {1: 1.0, 8: 2.0, 64: 10.0}, "nn": {1: 0.99, 8: 2.0, 64: 10.0}, "packed": {1: 0.5, 8: 0.5, 64: 30.0}}
    assert kernels.pick(t, "nt") == "nt"  # within 3 %: no copy
    t["nn"][8] = 1.0
    assert kernels.pick(t, "nt") == "nn"
    assert kernels.pick(t, "nn") == "nn"  # packed is fastest at 1 and 8 rows but triples prefill
    t["rows"] = {1: 0.8, 8: 0.9, 64: 12.7}  # a prompt chunk 27 % slower than nn's, a step's rows much faster
    assert kernels.pick(t, "nn") == "rows"
    t["rows"][64] = 16.0  # 60 % slower: kept out
    assert kernels.pick(t, "nn") == "nn"


def test_the_timing_spends_its_rounds_on_the_contenders(tiny_model_path, monkeypatch):
    """Prompt chunks are timed in the first rounds only (rows shares nt's call); a layout far behind after them
    is not timed again. The times here are made up, one per layout, so the rounds are what is counted."""
    from transformers import AutoModelForCausalLM

    from tokviz_app.engine.linear_layouts import candidates, linear_layers

    made_up = {"Conv1D": 3e-3, "NTLinear": 0.8e-3, "RowsLinear": 0.5e-3, "NNLinear": 0.8e-3, "MkldnnLinear": 0.8e-3}
    calls: dict[tuple[str, int], int] = {}

    def fake_call(module, x):
        name = type(module).__name__
        calls[name, x.shape[1]] = calls.get((name, x.shape[1]), 0) + 1
        return made_up[name] * x.shape[1]

    monkeypatch.setattr(kernels, "_call_seconds", fake_call)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    layer = next(found for found in linear_layers(model) if found.loaded == "nn")
    layouts = candidates(layer, tied=False)
    assert "rows" in layouts and "nt" in layouts
    times, steady = kernels.measure(layer, layouts)
    assert steady and kernels.pick(times, "nn") == "rows"
    prefill, rounds, early = kernels.ROWS_PREFILL, kernels.ROUNDS, kernels.PREFILL_ROUNDS
    assert calls["NTLinear", prefill] == early and ("RowsLinear", prefill) not in calls
    assert times["rows"][prefill] == times["nt"][prefill]
    assert calls["RowsLinear", 1] == calls["NTLinear", 1] == rounds  # within FAR_BEHIND of the best
    assert calls["Conv1D", 1] == early  # the loaded layout at 6x the best: out after the early rounds
