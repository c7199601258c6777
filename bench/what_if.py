"""What-if replay speed (issue 14): a text re-coloured under other sampling settings, against one prefill.

    uv run python bench/what_if.py [--lengths 100,1000] [--model gpt2] [--device cpu] [--json]

For each length: the prefill (`model.start_from_ids`, the page's prompt scoring: one chunked forward pass and
every token's numbers), the first what-if on that text (`session.what_if`: one re-scoring forward pass that keeps
the top 256 logits, the rest's mass and the final hidden states, then the samplers' maths), and each later change of
settings on the same text (from the kept logits; rows they cannot decide are recomputed by the output head from
the kept hidden states). The issue asks: the first within one prefill's time, later changes that only need the
kept logits within 100 ms at 1,000 tokens.

Two distributions on the GPT-2 architecture: random weights (`flat`: near-uniform logits, about 15.5 bits of
entropy, the worst case: a nucleus or a min-p line there holds tens of thousands of tokens, never decided by 256
kept logits) and the same weights with the final norm scaled (`peaked`: entropy of a few bits, as a trained model
shows on text). The compute of the forward pass is the same for both. `--trained` adds a trained model on real
text: the bundled SmolLM2-135M (135M parameters, 49k vocabulary) reading this repository's README.
"""

from __future__ import annotations

import json
import random
import statistics
import time

import machine
from models import TOKENIZER_VOCAB, build_random_gpt2

SETTINGS = {  # label -> SamplingParams fields
    "top-k 40, T 0.7": {"top_k": 40, "temperature": 0.7},
    "top-k 40 + top-p 0.9": {"top_k": 40, "top_p": 0.9},
    "top-p 0.9": {"top_p": 0.9},
    "min-p 0.1": {"min_p": 0.1},
    "T 0.7 (no cut)": {"temperature": 0.7},
}
PEAKED_SCALE = 12.0  # the final norm's scale that gives the random model a trained model's few bits of entropy


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def entropy_bits(session) -> float:
    return statistics.fmean(s.entropy for s in session.prompt_tokens[1:])


def run(model, ids: list[int]) -> dict:
    from tokviz_app.core.types import SamplingParams

    model.start_from_ids(ids[:50]).close()  # warm-up: first-call costs out of the figures
    prefill, session = timed(lambda: model.start_from_ids(ids))
    row = {"tokens": len(ids), "prefill_s": round(prefill, 3), "entropy_bits": round(entropy_bits(session), 2),
           "settings": {}}
    try:
        for label, fields in SETTINGS.items():
            params = SamplingParams(**fields)
            session._replay = None  # a cold start for this setting: the re-scoring pass included
            first, _ = timed(lambda: session.what_if(params, prompt=True))
            cold = dict(session.what_if_stats)
            session._replay.results.clear()  # the pass stays, the answer does not: the maths again
            later, _ = timed(lambda: session.what_if(params, prompt=True))
            row["settings"][label] = {"first_s": round(first, 3), "first_vs_prefill": round(first / prefill, 2),
                                      "later_ms": round(later * 1000, 1),
                                      "recomputed_rows": session.what_if_stats["recomputed"],
                                      "hidden_kept": cold["hidden_kept"]}
    finally:
        session.close()
    return row


def main() -> None:
    parser = machine.model_parser(__doc__)
    parser.add_argument("--lengths", default="100,1000")
    parser.add_argument("--trained", action="store_true", help="also the bundled SmolLM2 on the README's text")
    args = parser.parse_args()
    import torch

    from tokviz_app.engine import ModelManager

    model = ModelManager(device=args.device).load(str(build_random_gpt2(args.model)))
    rng = random.Random(0)
    lengths = [int(n) for n in args.lengths.split(",")]
    text = [rng.randrange(1, TOKENIZER_VOCAB) for _ in range(max(lengths))]
    results = {"machine": machine.describe(), "model": args.model, "runs": {}}
    norm = model.hf_model.transformer.ln_f
    for shape in ("flat", "peaked"):
        if shape == "peaked":
            with torch.no_grad():
                norm.weight.mul_(PEAKED_SCALE)
                norm.bias.mul_(PEAKED_SCALE)
        results["runs"][shape] = [run(model, text[:n]) for n in lengths]
    if args.trained:
        from pathlib import Path

        smol = ModelManager(device=args.device).load("smollm2-135m")
        words = smol.encode((Path(__file__).resolve().parents[1] / "README.md").read_text())
        results["runs"]["SmolLM2 on the README"] = [run(smol, words[:n]) for n in lengths]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"What-if replay, {args.model} architecture, on {machine.line(results['machine'])}")
    for shape, rows in results["runs"].items():
        for row in rows:
            print(f"\n{shape}: {row['tokens']} tokens, entropy {row['entropy_bits']} bits, prefill {row['prefill_s']} s")
            print(f"  {'settings':<22} {'first':>8} {'/prefill':>9} {'later':>10} {'recomputed':>11}")
            for label, s in row["settings"].items():
                print(f"  {label:<22} {s['first_s']:>7.2f}s {s['first_vs_prefill']:>8.2f}x {s['later_ms']:>8.1f}ms "
                      f"{s['recomputed_rows']:>6} rows")


if __name__ == "__main__":
    main()
