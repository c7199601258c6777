"""Bundled model load time: cold (GGUF dequantised and cached) vs warm (cached safetensors).

    uv run python bench/load_time.py [--json]

Each load runs in a fresh process with a fresh ModelManager, the cold one with an
empty TOKVIZ_CACHE_DIR, so neither benefits from the other's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

LOAD = """
import time, json
started = time.perf_counter()
from tokviz_app.engine import ModelManager
imported = time.perf_counter()
model = ModelManager(device="cpu").load("smollm2-135m")
loaded = time.perf_counter()
model.start("Hello").step()
print(json.dumps({"import_s": imported - started, "load_s": loaded - imported,
                  "first_step_s": time.perf_counter() - loaded}))
"""


def load_once(cache_dir: str) -> dict:
    env = dict(os.environ, TOKVIZ_CACHE_DIR=cache_dir)
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokviz-cache-") as cache:
        results = {"cold": load_once(cache), "warm": load_once(cache)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("bundled SmolLM2-135M load (fresh process each; seconds)")
    print(f"{'':6}{'import':>9}{'load':>9}{'1st step':>10}{'process':>10}")
    for name, r in results.items():
        print(f"{name:6}{r['import_s']:>9.2f}{r['load_s']:>9.2f}{r['first_step_s']:>10.2f}{r['process_s']:>10.2f}")


if __name__ == "__main__":
    main()
