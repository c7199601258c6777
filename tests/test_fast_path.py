"""The bundled model's fast path: exact kernels on its GGUF's own quantised blocks (engine/fast_path.py).

The kernels are checked against a float64 product with the dequantised weights; the real model on the fast
path against the independent forward of tests/reference.py (transformers alone, fp32 weights)."""

from __future__ import annotations

import os
import platform
import threading
from pathlib import Path

import pytest
import torch

from tests.reference import assert_step_matches, full_logits
from tokviz_app.engine import ModelManager, SamplingParams, bundled, fast_path, kernel_choices, llama_decode, \
    quant_linear
from tokviz_app.engine.quant_library import FLAGS, QuantUnavailable, load_library, target_flags
from tokviz_app.engine.quant_linear import QuantLinear
from tokviz_app.engine.quant_weights import QuantBlocks, matched
from tokviz_app.engine.resident import ResidentBatch, Slot, new_cache


@pytest.fixture(scope="module")
def library():
    try:
        return load_library()
    except QuantUnavailable as error:  # the fast path's own fallback is tested below
        pytest.skip(f"no fast path on this machine: {error}")


def random_blocks(kind: str, rows: int, columns: int, seed: int) -> QuantBlocks:
    g = torch.Generator().manual_seed(seed)
    shape = (rows, columns // 32)
    scales = (torch.rand(shape, generator=g) * 0.02 + 1e-3).half().float()  # fp16 values, as in a GGUF
    if kind == "q4_1":
        quants = torch.randint(0, 256, (*shape, 16), dtype=torch.uint8, generator=g)
        return QuantBlocks(kind, quants, scales, (torch.randn(shape, generator=g) * 0.05).half().float())
    return QuantBlocks(kind, torch.randint(-128, 128, (*shape, 32), dtype=torch.int8, generator=g), scales, None)


def layer(blocks: QuantBlocks, library, bias: bool = False) -> QuantLinear:
    quant = QuantLinear(blocks, library, 16, torch.randn(blocks.shape[0]) if bias else None)
    quant.weight = blocks.dequantised()  # the fp32 weights (as gguf-py computes them), for the tests' products
    return quant


@pytest.mark.parametrize("kind", ["q4_1", "q8_0"])
@pytest.mark.parametrize(("rows", "columns"), [(1, 32), (67, 96), (200, 576), (1536, 576), (576, 1536)])
def test_kernels_equal_the_dequantised_product(library, kind, rows, columns):
    quant = layer(random_blocks(kind, rows, columns, seed=rows + columns), library, bias=True)
    weight = quant.weight.double()
    torch.manual_seed(rows * columns)
    for count in (1, 2, 3, 5, 8, 9, 16, 17, 300):  # 17 or more: BLAS on the weights dequantised a tile at a time
        x = torch.randn(count, columns)
        with torch.inference_mode():
            got = quant(x.view(1, count, columns))
        expected = x.double() @ weight.T + quant.bias.double()
        scale = (x.double().abs() @ weight.abs().T).max()  # the size of the terms summed
        assert got.shape == (1, count, rows)
        assert (got[0].double() - expected).abs().max() <= 1e-6 * scale, (kind, rows, columns, count)


def test_many_rows_go_through_dequantised_tiles_that_are_the_weights_bit_for_bit(library, monkeypatch):
    blocks = random_blocks("q4_1", 1000, 96, seed=5)
    quant = layer(blocks, library, bias=True)
    assert torch.equal(quant.weight_tile(0, 1000), quant.weight)  # d * q + m in one FMA: gguf-py's fp32 weights
    assert torch.equal(quant.weight_tile(37, 501), quant.weight[37:501])
    eights = random_blocks("q8_0", 100, 64, seed=6)
    assert torch.equal(layer(eights, library).weight_tile(0, 100), eights.dequantised())
    monkeypatch.setattr(quant_linear, "TILE_WEIGHTS", 96 * 300)  # four tiles, the last one short
    x = torch.randn(2, 40, 96)
    with torch.inference_mode():
        got = quant(x)
    expected = x.double() @ quant.weight.double().T + quant.bias.double()
    scale = (x.double().abs() @ quant.weight.double().abs().T).max()
    assert got.shape == (2, 40, 1000) and (got.double() - expected).abs().max() <= 1e-6 * scale
    x.requires_grad_(True)  # a gradient reaches the input through the dequantised weights
    quant(x[:, :3]).sum().backward()
    assert torch.allclose(x.grad[:, :3], quant.weight.sum(0).expand(2, 3, 96), atol=1e-4)
    if Path("/proc/self/maps").exists():  # the dequantisation runs on torch's OpenMP runtime, not a second one
        maps = Path("/proc/self/maps").read_text().splitlines()
        assert len({line.split()[-1] for line in maps if line.endswith("/libgomp.so.1")}) <= 1


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 instruction sets")
@pytest.mark.parametrize("isa", ["x86-64-v3", "x86-64"])  # AVX2 (8 lanes) and the scalar fallback
def test_every_instruction_set_gives_the_same_numbers(isa):
    """The machine at hand builds its own -march=native; the code for the others is checked here too."""
    try:
        library = load_library(target_flags(FLAGS, isa))
    except QuantUnavailable as error:
        pytest.skip(f"no C compiler here: {error}")
    assert library.vector_width == (8 if isa == "x86-64-v3" else 1)
    for kind in ("q4_1", "q8_0"):
        quant = layer(random_blocks(kind, 200, 576, seed=3), library)
        weight = quant.weight.double()
        for count in (1, 2, 3, 4, 5, 8, 11, 16):  # every accumulator layout (ACC) of the AVX2 code
            x = torch.randn(count, 576)
            with torch.inference_mode():
                got = quant(x)
            scale = (x.double().abs() @ weight.abs().T).max()
            assert (got.double() - x.double() @ weight.T).abs().max() <= 1e-6 * scale, (isa, kind, count)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 instruction sets")
def test_tokviz_native_arch_builds_the_code_of_another_instruction_set(monkeypatch):
    """TOKVIZ_NATIVE_ARCH=x86-64-v3 builds the AVX2 code on any x86-64 machine (to measure or test the code an
    AVX2 machine runs), and the remembered kernel choices are kept apart from the native code's."""
    monkeypatch.delenv("TOKVIZ_NATIVE_ARCH", raising=False)
    native_key = kernel_choices.machine_key()
    monkeypatch.setenv("TOKVIZ_NATIVE_ARCH", "x86-64-v3")
    try:
        library = load_library()
    except QuantUnavailable as error:
        pytest.skip(f"no C compiler here: {error}")
    assert library.vector_width == 8
    assert kernel_choices.machine_key() != native_key


def test_kernels_give_the_same_numbers_from_many_threads_at_once(library):
    quant = layer(random_blocks("q4_1", 1536, 576, seed=1), library)
    inputs = [torch.randn(1 + i % 4, 576) for i in range(8)]
    with torch.inference_mode():
        alone = [quant(x) for x in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(index: int) -> None:
        with torch.inference_mode():
            results[index] = [quant(x) for _ in range(20) for x in inputs]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():  # each column is summed by one thread in one order: bit for bit the same
        assert all(torch.equal(a, b) for a, b in zip(got, alone * 20))


def test_blocks_are_matched_to_reordered_rows_and_refused_for_other_weights():
    blocks = random_blocks("q4_1", 64, 96, seed=3)
    order = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    weight = blocks.dequantised()[order]  # as the GGUF conversion reorders q/k rows
    found = matched(blocks, weight)
    assert found is not None and torch.equal(found.dequantised(), weight)
    weight[5, 7] += 1e-6
    assert matched(blocks, weight) is None
    assert matched(blocks, weight[:, :64]) is None


# ------------------------------------------------------------------ the real bundled model
pytestmark_real = pytest.mark.slow


def load_bundled(monkeypatch, **env) -> object:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return ModelManager(device="cpu").load("smollm2-135m")


def quant_layers(model) -> list[QuantLinear]:
    return [m for m in model.hf_model.modules() if isinstance(m, QuantLinear)]


def check_against_reference(model, params: SamplingParams, steps: int = 6) -> None:
    session = model.start("The capital of France is", params)
    session.generate(steps)
    logits = full_logits(model, session.token_ids)
    n_prompt = len(session.prompt_tokens)
    for token in session.tokens:
        assert_step_matches(token, logits[n_prompt + token.position - 1], greedy=params.greedy,
                            temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
    session.close()


@pytestmark_real
def test_fast_path_serves_the_bundled_model_with_the_reference_numbers(monkeypatch):
    # "on": whether the kernels time faster than the fp32 layers depends on the machine and its load (auto's
    # choice is the next test's); here they must serve, whatever the timing
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="on")
    assert model.fast_path.wait(120), "the fast path should be ready within two minutes"
    assert model.fast_path.active, model.fast_path.line
    assert model.background_work() == ""
    assert len(quant_layers(model)) == 30 * 7 + 1  # every matrix of every block, and the output head
    assert model.lane.one_thread_rows == model.fast_path.max_rows > 0
    assert model.lane._decode_threads(model.fast_path.max_rows + 1) is None  # wider batches: fp32 on all threads
    # the fp32 weights it replaced are gone: the model holds the blocks, the embedding (tied to the head), norms
    held = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.hf_model.parameters()}
    assert sum(held.values()) < 0.3 * model.weight_bytes
    check_against_reference(model, SamplingParams(greedy=True))
    check_against_reference(model, SamplingParams(temperature=0.8, top_k=40, top_p=0.9, seed=7))
    # several sessions at once: their steps are batched, the kernels take several rows
    results = {}

    def run(index: int) -> None:
        session = model.start(["Paris is", "One, two,", "The sea"][index], SamplingParams(greedy=True))
        session.generate(8)
        results[index] = session

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.lane.stats["max_batch"] >= 2
    for session in results.values():
        logits = full_logits(model, session.token_ids)
        n_prompt = len(session.prompt_tokens)
        for token in session.tokens:
            assert_step_matches(token, logits[n_prompt + token.position - 1], greedy=True)


@pytestmark_real
def test_one_token_steps_written_out_equal_transformers_forward(monkeypatch):
    """`llama_decode.lean_step` against transformers' own forward of the same model (the same kernels): one
    row with its own cache, and three rows of different lengths left-padded into one batch, for a few steps; with
    the native norms, rotary embeddings and attention (`decode_glue.c`, `decode_attention.c`) within fp32
    rounding, and without them (torch's ops,
    as where no compiler builds them) bit for bit; q/k/v and gate/up joined into one kernel call each, bit for bit
    as separate calls."""
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="on")
    assert model.fast_path.wait(120) and model.fast_path.active, model.fast_path.line
    hf = model.hf_model
    assert hf._tokviz_lean and "one-token steps written out" in model.fast_path.line
    served, ways = [], {}
    real_step = llama_decode.lean_step

    def step(*args):  # the model's glue and joined products as installed, or what `ways` puts in their place
        served.append(args)
        return real_step(*args[:5], *ways.get("glue_and_joints", args[5:]))

    monkeypatch.setattr(llama_decode, "lean_step", step)
    prompts = [model.encode(text) for text in ("Paris is", "The capital of France is", "One, two, three, four,")]

    def batch_of(ids_list):
        slots, kvs = [], []
        for ids in ids_list:
            cache = new_cache(hf.config)
            type(hf).forward(hf, input_ids=torch.tensor([ids]), cache=cache, use_cache=True)
            slot = Slot()
            slot.length = len(ids)
            slots.append(slot)
            kvs.append([(layer.keys, layer.values) for layer in cache.layers])
        batch = ResidentBatch(0, hf.config)
        batch.install(slots, kvs)
        return batch

    assert llama_decode.add_rms_norm() and llama_decode.rotary() and llama_decode.attention()  # (where kernels are)
    growing = type(new_cache(hf.config).layers[0])
    real_spare, spares = growing.spare_column, []
    monkeypatch.setattr(growing, "spare_column", lambda layer: spares.append(real_spare(layer)) or spares[-1])
    compare_steps(hf, batch_of, prompts, exact=False)
    assert len(spares) == 6 * 30 and all(spares)  # every layer's new keys written in place by the attention
    glue, joints = served[0][5:]
    assert glue and glue.attention and glue.silu_mul  # the attention and the gate too
    assert all(joint.qkv and joint.gate_up for joint in joints)  # every layer's products joined
    attention = hf.model.layers[0].self_attn
    # the separate layers read views of the joined blocks: one copy of the weights is kept
    assert attention.q_proj.blocks.quants.data_ptr() == joints[0].qkv.blocks.quants.data_ptr()
    assert attention.v_proj.blocks.mins.untyped_storage().data_ptr() == joints[0].qkv.blocks.mins.data_ptr()
    monkeypatch.setattr(growing, "spare_column", lambda layer: None)  # without a spare column the cache grows
    compare_steps(hf, batch_of, prompts, exact=False)  # in its own update first
    ways["glue_and_joints"] = (None, joints)  # the joined products give each column as before: bit for bit
    compare_steps(hf, batch_of, prompts, exact=True)
    ways["glue_and_joints"] = (None, None)
    compare_steps(hf, batch_of, prompts, exact=True)
    assert len(served) == 24  # every step above went through it; prompts went to transformers


def compare_steps(hf, batch_of, prompts, exact: bool) -> None:
    with torch.inference_mode():
        for rows in ([prompts[1]], prompts):
            ours, theirs = batch_of(rows), batch_of(rows)
            tokens = torch.tensor([[ids[-1]] for ids in rows])
            for _ in range(3):
                positions = torch.tensor([[slot.length] for slot in ours.rows])
                mask = torch.cat([ours.mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
                mask = None if bool(mask.all()) else mask
                got = hf(input_ids=tokens, cache=ours.cache, use_cache=True, attention_mask=mask,
                         position_ids=positions).logits[:, -1]
                want = type(hf).forward(hf, input_ids=tokens, cache=theirs.cache, use_cache=True,
                                        attention_mask=mask, position_ids=positions).logits[:, -1]
                if exact:  # the same ops, bit for bit
                    assert torch.equal(got, want), (len(rows), (got - want).abs().max())
                else:  # the glue's norm sums in float64 where torch sums in fp32, its attention in other orders
                    # than SDPA: last-bit differences, carried through 30 layers (measured on a 2-core AVX2 EPYC:
                    # logits within 2.5e-5, probabilities within 1e-6)
                    assert (got - want).abs().max() < 5e-4, (len(rows), (got - want).abs().max())
                    assert (got.softmax(-1) - want.softmax(-1)).abs().max() < 1e-5
                for batch in (ours, theirs):
                    batch.mask = torch.cat([batch.mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
                    for slot in batch.rows:
                        slot.length += 1
                tokens = got.argmax(-1, keepdim=True)


@pytestmark_real
def test_auto_times_the_kernels_in_quiet_says_what_it_chose_and_remembers_it(monkeypatch, tmp_path):
    choices = tmp_path / "cpu-kernels.json"  # no verdict remembered yet: auto times the kernels
    monkeypatch.setattr(kernel_choices, "choice_file", lambda: choices)
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="auto")
    with model.lane.forwards:  # a tab's forward pass running: the timing waits for it (a step beside it made the
        assert not model.fast_path.wait(6)  # kernels look 7x slower and auto turned them off)
    assert model.fast_path.wait(120)
    line = model.fast_path.line
    assert "ms for a step's matrix products at 1/4/8/16 rows: quantised" in line and ", fp32 " in line
    if model.fast_path.active:  # served up to the largest row count at which they timed faster
        rows = {layer.max_rows for layer in quant_layers(model)}
        assert len(rows) == 1 and rows <= {1, 4, 8, 16} and f"up to {rows.pop()} rows" in line
    else:
        assert "slower than the fp32 layers" in line and not quant_layers(model)
    # remembered for the next load, unless other processes used the cores meanwhile (this suite's Chromium, a
    # busy CI host): then the line says so and the next load times again
    remembered = [value for key, value in kernel_choices.load_choices().items() if "|fast path|" in key]
    if "not remembered" in line:
        assert remembered == []
    else:
        assert remembered == [{"max_rows": model.fast_path.max_rows, "timings": remembered[0]["timings"]}]
        assert remembered[0]["timings"] in line


@pytestmark_real
def test_a_remembered_verdict_skips_the_timing(monkeypatch, tmp_path):
    choices = tmp_path / "cpu-kernels.json"
    monkeypatch.setattr(kernel_choices, "choice_file", lambda: choices)
    library = load_library()
    gguf = bundled.gguf_path()
    key = fast_path.verdict_key(gguf, library)
    kernel_choices.save_choices({key: {"max_rows": 4, "timings": "ms as timed by an earlier load"}})
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="auto")
    with model.lane.forwards:  # no timing: nothing waits for the tab's forward pass to end
        assert model.fast_path.wait(120) and model.fast_path.active, model.fast_path.line
    assert "ms as timed by an earlier load (remembered for this machine)" in model.fast_path.line
    assert {layer.max_rows for layer in quant_layers(model)} == {4}
    check_against_reference(model, SamplingParams(greedy=True), steps=3)


@pytestmark_real
def test_the_model_serves_while_the_fast_path_is_prepared(monkeypatch):
    release = threading.Event()
    real_load = fast_path.load_library

    def held_load():  # the real preparation, held back until the test has used the model
        assert release.wait(120)
        return real_load()

    monkeypatch.setattr(fast_path, "load_library", held_load)
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="on")
    assert model.background_work() == "optimising…" and model.fast_path.optimising
    check_against_reference(model, SamplingParams(greedy=True), steps=3)
    assert not quant_layers(model) and model.lane.one_thread_rows == 0
    release.set()
    assert model.fast_path.wait(120) and model.fast_path.active
    assert model.background_work() == "" and quant_layers(model)
    check_against_reference(model, SamplingParams(greedy=True), steps=3)


@pytestmark_real
def test_compile_off_keeps_the_fp32_layers(monkeypatch):
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="off")
    assert not model.fast_path.optimising and not model.fast_path.active
    assert "TOKVIZ_COMPILE=off" in model.fast_path.line
    assert model.background_work() == "" and not quant_layers(model)
    check_against_reference(model, SamplingParams(greedy=True), steps=3)


@pytestmark_real
def test_without_a_compiler_the_fp32_layers_serve(monkeypatch, tmp_path):
    monkeypatch.delenv("CC", raising=False)
    model = load_bundled(monkeypatch, TOKVIZ_COMPILE="auto", PATH=str(tmp_path))  # no cc, gcc or clang there
    assert model.fast_path.wait(60) and not model.fast_path.active
    assert "no C compiler" in model.fast_path.line and not quant_layers(model)
    check_against_reference(model, SamplingParams(greedy=True), steps=3)


def test_an_unknown_compile_mode_is_refused(monkeypatch):
    monkeypatch.setenv("TOKVIZ_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="TOKVIZ_COMPILE"):
        fast_path.requested_mode()


@pytestmark_real
def test_a_process_exits_cleanly_while_the_fast_path_is_prepared():
    import subprocess
    import sys
    from pathlib import Path

    script = ("from tokviz_app.engine import ModelManager\n"
              "model = ModelManager(device='cpu').load('smollm2-135m')\n"
              "assert model.background_work() == 'optimising…'\n"
              "print('exiting')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "TOKVIZ_COMPILE": "auto"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "exiting" in done.stdout


def test_one_openmp_thread_for_this_thread_only():
    """The lane's decoding steps run torch's ops on one OpenMP thread beside the kernels' own threads; a
    thread that starts meanwhile keeps torch's full count (torch.set_num_threads would hand it 1 for good)."""
    from tokviz_app.engine.openmp import _openmp, this_threads_openmp

    full = torch.get_num_threads()
    seen = {}
    with this_threads_openmp(1):
        seen["inside"] = torch.get_num_threads()
        first_op = lambda: (torch.ones(1_000_000).sum(), seen.update(other=torch.get_num_threads()))  # noqa: E731
        other = threading.Thread(target=first_op)
        other.start()
        other.join()
    assert seen["other"] == full and torch.get_num_threads() == full
    assert seen["inside"] == (1 if _openmp() is not None else full)  # OpenMP: torch's Linux wheels
