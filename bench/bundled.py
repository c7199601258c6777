"""The bundled SmolLM2-135M against llama.cpp and the fp32 memory floor (issue 17), one run, one machine.

    uv run python bench/bundled.py [--model smollm2-135m|gpt2] [--compile] [--steps 40] [--json]

Greedy decoding after a 17-token prompt, every engine on the same thread count:
- tokviz `step()` (the token's statistics included: softmax, entropy, rank, top-10), on the fast path (the
  GGUF's own quantised blocks, `engine/fast_path.py`) and with the fp32 layers (TOKVIZ_COMPILE=off);
- plain transformers: a KV-cached forward of the same fp32 weights, unmodified `from_pretrained`;
- with --compile, the same forward under `torch.compile` with a `StaticCache` (the first call compiles);
- llama.cpp on the same GGUF (llama-cpp-python from /opt/llama-venv or $LLAMA_PYTHON, a separate process), plus
  a softmax and top-10 over the whole vocabulary in numpy so it does what a tokviz step does;
- the fp32 floors: reading every weight once (a sum over them) and one matrix-vector product over as many bytes.
`--model gpt2` runs GPT-2's architecture with random weights (no llama.cpp row: there is no GGUF of it).
Each row runs in a process of its own (a second model's inference lane in the same process slows both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import machine
from models import build_random_gpt2

PROMPT = "The capital of France is Paris, and the capital of Germany is"  # 17 SmolLM2 tokens
LLAMA_PYTHON = os.environ.get("LLAMA_PYTHON", "/opt/llama-venv/bin/python")
LLAMA_SCRIPT = """
import json, statistics, sys, time
import numpy as np
from llama_cpp import Llama
path, prompt, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_threads_batch=threads, verbose=False)
llm.eval(llm.tokenize(prompt.encode(), add_bos=False))
times = []
for _ in range(steps + 3):
    started = time.perf_counter()
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float32)
    p = np.exp(logits - logits.max()); p /= p.sum()
    top = np.argpartition(-p, 10)[:10]
    llm.eval([int(p.argmax())])
    times.append(time.perf_counter() - started)
print(json.dumps(statistics.median(times[3:]) * 1000))
"""


def median_ms(fn, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def llama_cpp_ms(gguf: Path, steps: int, threads: int) -> float | None:
    if not Path(LLAMA_PYTHON).exists():
        return None
    done = subprocess.run([LLAMA_PYTHON, "-c", LLAMA_SCRIPT, str(gguf), PROMPT, str(steps), str(threads)],
                          capture_output=True, text=True, timeout=600)
    return json.loads(done.stdout) if done.returncode == 0 else None


def plain_step(hf, ids: list[int], static: bool = False):
    """One greedy KV-cached forward per call, as plain transformers runs it."""
    import torch
    from transformers import DynamicCache, StaticCache

    cache = (StaticCache(config=hf.config, max_cache_len=512) if static else DynamicCache(config=hf.config))
    forward = torch.compile(hf.forward) if static else hf.forward
    state = {"position": len(ids)}
    with torch.inference_mode():
        out = hf(input_ids=torch.tensor([ids]), past_key_values=cache, use_cache=True,
                 cache_position=torch.arange(len(ids)))
    state["next"] = int(out.logits[0, -1].argmax())

    def step() -> None:
        with torch.inference_mode():
            out = forward(input_ids=torch.tensor([[state["next"]]]), past_key_values=cache, use_cache=True,
                          cache_position=torch.tensor([state["position"]]))
        state["next"], state["position"] = int(out.logits[0, -1].argmax()), state["position"] + 1

    return step


def floors_ms(weight_bytes: int) -> dict[str, float]:
    """Reading `weight_bytes` of fp32 once: as a sum, and as one matrix-vector product."""
    import torch

    buffer = torch.randn(576, weight_bytes // 4 // 576)
    x = torch.randn(1, 576)
    with torch.inference_mode():
        return {"sum": median_ms(buffer.sum, 10), "gemv": median_ms(lambda: x @ buffer, 10)}


def measure(part: str, folder: str, model_name: str, steps: int, compile_too: bool) -> dict:
    """One part of the table, in a process of its own: a process's second OpenMP pool (another loaded model's
    inference lane, a baseline in the main thread) slows every pool (engine/openmp.py)."""
    import torch

    results: dict = {}
    if part == "plain":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ids = AutoTokenizer.from_pretrained(folder)(PROMPT)["input_ids"]
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        weight_bytes = sum(p.numel() * 4 for p in hf.parameters())  # tied weights are counted once
        results["weights_mb"] = weight_bytes / 1e6
        results["plain_ms"] = median_ms(plain_step(hf, ids), steps)
        if compile_too:
            started = time.perf_counter()
            compiled = plain_step(hf, ids, static=True)
            compiled()
            results["compile_s"] = time.perf_counter() - started
            results["compiled_ms"] = median_ms(compiled, steps)
        results.update({f"floor_{name}_ms": ms for name, ms in floors_ms(weight_bytes).items()})
        return results
    from tokviz_app.engine import ModelManager, SamplingParams

    os.environ["TOKVIZ_COMPILE"] = part
    model = ModelManager(device="cpu").load("smollm2-135m" if model_name == "smollm2-135m" else folder)
    if model.fast_path is not None:
        model.fast_path.wait()
        results["fast_path"] = model.fast_path.line
    results["kernels"] = model.kernels.line() if model.kernels else "n/a"
    session = model.start_from_ids(model.tokenizer(PROMPT)["input_ids"], SamplingParams(greedy=True))
    results["tokviz_fast_ms" if model.fast_path and model.fast_path.active else "tokviz_ms"] = \
        median_ms(session.step, steps)
    session.close()
    return results


def main() -> None:
    parser = machine.model_parser(__doc__)
    parser.set_defaults(model="smollm2-135m")
    parser._option_string_actions["--model"].choices = ["smollm2-135m", "gpt2", "gpt2-medium"]
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile with a static cache")
    parser.add_argument("--part", choices=["off", "auto", "plain"], help=argparse.SUPPRESS)  # one part, JSON out
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(measure(args.part, args.folder, args.model, args.steps, args.compile)))
        return

    import torch

    from tokviz_app.engine import bundled

    folder = bundled.ensure_converted() if args.model == "smollm2-135m" else build_random_gpt2(args.model)
    results: dict = {"model": args.model, "machine": machine.describe(), "threads": torch.get_num_threads()}
    parts = ("off", "auto", "plain") if args.model == "smollm2-135m" else ("off", "plain")
    for part in parts:
        results.update(machine.in_own_process(__file__, "--part", part, "--folder", str(folder), "--model", args.model,
                                              "--steps", str(args.steps), *(["--compile"] if args.compile else [])))
    results["llama_cpp_ms"] = llama_cpp_ms(bundled.gguf_path(), args.steps, torch.get_num_threads()) \
        if args.model == "smollm2-135m" else None
    if args.json:
        print(json.dumps(results, indent=2))
        return
    report(results)


def report(r: dict) -> None:
    print(f"{r['model']}: greedy ms/token after a 17-token prompt, {r['threads']} threads, "
          f"{r['weights_mb']:.0f} MB of fp32 weights")
    print(f"machine: {machine.line(r['machine'])}")
    print(f"kernels: {r['kernels']}")
    if "fast_path" in r:
        print(r["fast_path"])
    llama = r["llama_cpp_ms"]
    rows = [("llama.cpp (same GGUF) + softmax, top-10 in numpy", llama),
            ("tokviz step(), fast path (exact quantised kernels)", r.get("tokviz_fast_ms")),
            ("tokviz step(), fp32 layers" + (" (TOKVIZ_COMPILE=off)" if llama else ""), r["tokviz_ms"]),
            ("plain transformers forward", r["plain_ms"]),
            ("torch.compile + StaticCache", r.get("compiled_ms")),
            ("fp32 floor: one pass over the weights (sum)", r["floor_sum_ms"]),
            ("fp32 floor: one matrix-vector product", r["floor_gemv_ms"])]
    print(f"{'':52}{'ms/token':>10}{'x llama.cpp':>13}{'x floor (sum)':>15}")
    for label, ms in rows:
        if ms is None:
            continue
        versus = f"{ms / llama:>13.2f}" if llama else f"{'':>13}"
        print(f"{label:52}{ms:>10.1f}{versus}{ms / r['floor_sum_ms']:>15.2f}")
    if "compile_s" in r:
        print(f"first compiled call: {r['compile_s']:.0f} s")
    print("targets (issue 17): tokviz <= 2x llama.cpp and <= 1.5x the floor")


if __name__ == "__main__":
    main()
