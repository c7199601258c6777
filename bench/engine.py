"""Engine speed: a tokviz step vs a bare KV-cached forward vs the naive re-encode loop.

    uv run python bench/engine.py [--model gpt2|gpt2-medium] [--device cpu|cuda] [--json]

Prints ms/token at 100 and 600 tokens of context, the cost of choose() at a
600-token context, a 1,000-token prefill, and the ratios the issues set as targets.
The baseline is an *unmodified* `from_pretrained` copy of the model (plain
transformers), not tokviz's own model with its chosen CPU kernels.
"""

from __future__ import annotations

import json
import statistics
import time

import machine
from models import TOKENIZER_VOCAB, build_random_gpt2


def timed(fn, repeat: int) -> float:
    """Median milliseconds of `repeat` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = machine.model_parser(__doc__, )
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import torch
    from transformers import DynamicCache

    from tokviz_app.engine import ModelManager, SamplingParams

    from transformers import AutoModelForCausalLM

    folder = build_random_gpt2(args.model)
    model = ModelManager(device=args.device).load(str(folder))
    tok = model.tokenizer
    # The baseline: plain transformers, exactly as from_pretrained returns it.
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=model.hf_model.dtype).to(model.device).eval()
    gen = torch.Generator().manual_seed(0)
    results: dict = {"model": args.model, "device": model.device, "dtype": model.dtype,
                     "machine": machine.describe(), "kernels": model.kernels.line() if model.kernels else "n/a"}

    def sync():
        if model.device.startswith("cuda"):
            torch.cuda.synchronize()

    for context in (100, 600):
        prompt = torch.randint(1, TOKENIZER_VOCAB, (context,), generator=gen).tolist()

        session = model.start_from_ids(prompt, SamplingParams(seed=0))
        results[f"step_ms@{context}"] = timed(lambda: (session.step(), sync()), args.steps)

        cache = DynamicCache(config=hf.config)
        with torch.inference_mode():
            out = hf(input_ids=torch.tensor([prompt], device=model.device), cache=cache, use_cache=True)
        state = {"next": int(out.logits[0, -1].argmax()), "length": context}

        def bare_step():
            with torch.inference_mode():
                out = hf(input_ids=torch.tensor([[state["next"]]], device=model.device), cache=cache, use_cache=True,
                         position_ids=torch.tensor([[state["length"]]], device=model.device))
                state["next"] = int(out.logits[0, -1].argmax())
                state["length"] += 1
            sync()

        results[f"bare_ms@{context}"] = timed(bare_step, args.steps)

        naive_ids = list(prompt)

        def naive_step():
            # What simple implementations do: re-encode the whole text, run it all again.
            ids = tok(tok.decode(naive_ids))["input_ids"]
            with torch.inference_mode():
                logits = hf(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits
            naive_ids.append(int(logits[0, -1, :TOKENIZER_VOCAB].argmax()))
            sync()

        results[f"naive_ms@{context}"] = timed(naive_step, max(3, args.steps // 6))
        session.close()

    prompt = torch.randint(1, TOKENIZER_VOCAB, (1000,), generator=gen).tolist()

    def tokviz_prefill():
        model.start_from_ids(prompt, SamplingParams(seed=0)).close()

    def plain_prefill():
        with torch.inference_mode():
            hf(input_ids=torch.tensor([prompt], device=model.device), use_cache=True)
        sync()

    results["prefill_ms@1000"] = timed(tokviz_prefill, 3)
    results["plain_prefill_ms@1000"] = timed(plain_prefill, 3)

    prompt = prompt[:580]
    session = model.start_from_ids(prompt, SamplingParams(seed=0))

    choose_ms = []
    for _ in range(8):
        session.generate(20)
        position = len(session.tokens) - 10
        started = time.perf_counter()
        session.choose(position, 7)
        sync()
        choose_ms.append((time.perf_counter() - started) * 1000)
    results["choose_ms@600"] = statistics.median(choose_ms[1:])
    results["step_over_bare@600"] = results["step_ms@600"] / results["bare_ms@600"]
    results["naive_over_step@600"] = results["naive_ms@600"] / results["step_ms@600"]
    results["choose_over_step@600"] = results["choose_ms@600"] / results["step_ms@600"]
    results["prefill_over_plain@1000"] = results["prefill_ms@1000"] / results["plain_prefill_ms@1000"]

    if args.json:
        print(json.dumps(results, indent=2))
        return
    machine.print_header("tokviz engine benchmark", args.model, model, results["machine"])
    print(f"kernels: {results['kernels']}")
    print(f"{'':28}{'100 ctx':>12}{'600 ctx':>12}")
    for name, label in (("step", "tokviz step() ms/token"), ("bare", "plain transformers forward"),
                        ("naive", "naive re-encode loop")):
        print(f"{label:28}{results[f'{name}_ms@100']:>12.1f}{results[f'{name}_ms@600']:>12.1f}")
    print(f"{'choose() at 600 ctx, ms':28}{'':>12}{results['choose_ms@600']:>12.1f}")
    print()
    print(f"1,000-token prefill: tokviz {results['prefill_ms@1000']:.0f} ms, plain transformers "
          f"{results['plain_prefill_ms@1000']:.0f} ms")
    print()
    print(f"step / plain forward  {results['step_over_bare@600']:.2f}x  (target <= 1.1x)")
    print(f"prefill / plain       {results['prefill_over_plain@1000']:.2f}x  (target <= 1.0x)")
    print(f"naive / step          {results['naive_over_step@600']:.1f}x  (target >= 5x)")
    print(f"choose / step         {results['choose_over_step@600']:.2f}x  (target <= 2.5x)")


if __name__ == "__main__":
    main()
