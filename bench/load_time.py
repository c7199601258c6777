"""Bundled model load time: cold (GGUF dequantised and cached) vs warm (cached safetensors).

    uv run python bench/load_time.py [--runs N] [--no-bytecode-cache] [--json]

Every load runs in a fresh process with a fresh ModelManager; a cold load starts from an empty
TOKVIZ_CACHE_DIR (so it also times the CPU kernels once), a warm one reuses the folder the cold
one filled. Per run it prints:
  import      `from tokviz_app.engine import ModelManager` (torch, transformers' top level)
  model code  transformers' Llama modules, which the first load in any process imports
  load        ModelManager.load, split into conversion (GGUF -> safetensors, or checking the cache),
              weights (tokenizer + model from the cache) and kernels (CPU kernel choice)
  1st step    the first generation step after the load
"warm plain" is a warm load with TOKVIZ_CPU_KERNELS=plain, which separates the kernel choice.
Python's bytecode is cached in a private folder (warmed by one untimed process), as after a normal
install; `--no-bytecode-cache` keeps the environment as it is (PYTHONDONTWRITEBYTECODE=1 makes every
process compile transformers' sources again: seconds more of import and model code).
Targets (issue 10): first use <= 25 s, later loads <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

TARGETS = {"cold": 25.0, "warm": 2.0, "warm plain": 2.0}
WARM_UP = ("import tokviz_app.engine, gguf, transformers.models.llama.modeling_llama, "
           "transformers.modeling_gguf_pytorch_utils, transformers.integrations.gguf")
LOAD = """
import json, time
started = time.perf_counter()
from tokviz_app.engine import ModelManager
imported = time.perf_counter()
import transformers.models.llama.modeling_llama  # the bundled model's code: its first load would import it
coded = time.perf_counter()
events = []
model = ModelManager(device="cpu").load("smollm2-135m", progress=lambda f, m: events.append((time.perf_counter(), m)))
loaded = time.perf_counter()
model.start("Hello").step()
stepped = time.perf_counter()
weights_at = next((t for t, m in events if m.startswith("Loading weights")), coded)
kernels_at = next((t for t, m in events if m.startswith("Choosing CPU kernels")), loaded)
print(json.dumps({"import_s": imported - started, "model_code_s": coded - imported, "load_s": loaded - coded,
                  "conversion_s": weights_at - coded, "weights_s": kernels_at - weights_at,
                  "kernels_s": loaded - kernels_at, "first_step_s": stepped - loaded,
                  "kernels": model.kernels.line() if model.kernels else None}))
"""
FIELDS = ("import_s", "model_code_s", "load_s", "conversion_s", "weights_s", "kernels_s", "first_step_s")


def run(code: str, env: dict) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return out.stdout


def load_once(env: dict) -> dict:
    started = time.perf_counter()
    result = json.loads(run(LOAD, env).strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def summary(runs: list[dict]) -> dict:
    """Best (min) of each field, and the spread (max - min) of the load."""
    best = {field: min(r[field] for r in runs) for field in FIELDS + ("process_s",)}
    loads = [r["load_s"] for r in runs]
    best["load_spread_s"] = max(loads) - min(loads)
    best["load_median_s"] = statistics.median(loads)
    best["kernels"] = runs[-1]["kernels"]
    best["runs"] = len(runs)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="fresh processes per kind (best and spread shown)")
    parser.add_argument("--no-bytecode-cache", action="store_true", help="keep PYTHONDONTWRITEBYTECODE as set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"cold": [], "warm": [], "warm plain": []}
    with tempfile.TemporaryDirectory(prefix="tokviz-load-") as scratch:
        env = dict(os.environ)
        env.pop("TOKVIZ_CPU_KERNELS", None)
        if not args.no_bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
            run(WARM_UP, env)
        for i in range(args.runs):
            cache = os.path.join(scratch, f"cache{i}")
            os.mkdir(cache)
            env["TOKVIZ_CACHE_DIR"] = cache
            results["cold"].append(load_once(env))
            results["warm"].append(load_once(env))
            results["warm plain"].append(load_once(dict(env, TOKVIZ_CPU_KERNELS="plain")))
    best = {name: summary(runs) for name, runs in results.items()}
    info = machine.describe()
    if args.json:
        print(json.dumps({"machine": info, "targets_s": TARGETS, "best": best, "runs": results}, indent=2))
        return
    bytecode = "environment as is" if args.no_bytecode_cache else "bytecode cached"
    print(f"bundled SmolLM2-135M load, fresh process each, best of {args.runs} ({bytecode}); seconds")
    print(machine.line(info))
    print(f"{'':11}{'import':>7}{'model':>7}{'load':>7}{'(conv':>7}{'weights':>8}{'kernels)':>9}{'spread':>8}"
          f"{'1st step':>9}{'target':>8}")
    for name, r in best.items():
        verdict = "ok" if r["load_s"] <= TARGETS[name] else "MISSED"
        print(f"{name:11}{r['import_s']:>7.2f}{r['model_code_s']:>7.2f}{r['load_s']:>7.2f}{r['conversion_s']:>7.2f}"
              f"{r['weights_s']:>8.2f}{r['kernels_s']:>9.2f}{r['load_spread_s']:>8.2f}{r['first_step_s']:>9.2f}"
              f"{'<=' + format(TARGETS[name], 'g'):>6} {verdict}")
    print("model = transformers' Llama code, imported by the first load in a process; kernels:",
          best["warm"]["kernels"] or "none")


if __name__ == "__main__":
    main()
