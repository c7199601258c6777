"""Run every benchmark in one go and print their tables (or one JSON document).

    uv run python bench/all.py [--json] [--plot assets/throughput.png]

Engine step vs bare forward vs naive loop and choose() (engine.py), batched
throughput for 1-16 sessions with prefill stalls and memory (batching.py), model
load time for the bundled model (load_time.py), the UI's server cost per
streamed token (ui.py), and the hardening figures: an innocent tab's worst gap
while another scores a long prompt, and the tabs a real server holds
(hardening.py). Each runs in its own process, one after the other.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True, check=True)
    return out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", help="PNG of throughput vs sessions (batching.py --plot)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    import machine as machine_info

    machine = machine_info.describe()
    plot = ["--plot", args.plot] if args.plot else []
    if args.json:
        doc = {"machine": machine,
               "engine": json.loads(run("engine.py", "--json")),
               "batching": json.loads(run("batching.py", "--json", *plot)),
               "load_time": json.loads(run("load_time.py", "--json")),
               "hardening": json.loads(run("hardening.py", "--json"))}
        print(json.dumps(doc, indent=2))
        return
    print(f"machine: {machine_info.line(machine)}\n")
    for script, extra in (("engine.py", []), ("batching.py", plot), ("load_time.py", []), ("ui.py", []),
                          ("hardening.py", [])):
        print(f"== {script}")
        print(run(script, *extra))


if __name__ == "__main__":
    main()
