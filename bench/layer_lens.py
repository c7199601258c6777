"""Layer lens speed: opening the layer view of a token vs one prefill (issue 16: at most 2x on GPT-2 at 600 tokens).

    uv run python bench/layer_lens.py [--tokens 600] [--model gpt2] [--device cpu] [--repeats 3]

GPT-2's config with random weights (a forward pass costs the same whatever the weights). "prefill" is what the
page does with a prompt: `model.start_from_ids` scores every token (chunked forward passes through the lane and
the statistics of every position). "lens, first token" is the first `session.layer_lens` on that text: one
forward pass with hidden states over the whole text, then the final norm and the head on one position's
layers. "lens, next token" reuses the kept pass; "decided layers" colours every token of the text (with random
weights few tokens are the model's top-1, so one layer's head over every position is timed too: the worst case,
every token the top-1 at every layer, costs that once per block after the pass). Best of
`--repeats` runs each (the lens's kept pass is dropped before every cold run).
"""

from __future__ import annotations

import random
import time

import machine
from models import TOKENIZER_VOCAB, build_random_gpt2


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = machine.model_parser(__doc__, json_flag=False)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from tokviz_app.engine import ModelManager

    model = ModelManager(device=args.device).load(str(build_random_gpt2(args.model)))
    rng = random.Random(0)
    ids = [rng.randrange(1, TOKENIZER_VOCAB) for _ in range(args.tokens)]
    model.start_from_ids(ids[:64]).close()  # warm-up (kernels, allocator)
    sessions = []
    prefill = best(lambda: sessions.append(model.start_from_ids(ids)), args.repeats)
    session = sessions[-1]
    for other in sessions[:-1]:
        other.close()
    last = len(ids) - 1

    def cold_lens() -> None:
        session._kept = None  # pylint: disable=protected-access
        session.layer_lens(last, prompt=True)

    def cold_decided() -> None:
        session._kept = None  # pylint: disable=protected-access
        session.decided_layers(prompt=True)

    lens = best(cold_lens, args.repeats)
    positions = iter(range(last // 2, last))
    warm = best(lambda: session.layer_lens(next(positions), prompt=True), args.repeats)
    decided = best(cold_decided, args.repeats)
    states = session._kept.states  # pylint: disable=protected-access
    every_row, targets = torch.arange(last), torch.tensor(ids[1:])
    one_layer = best(lambda: model.lens._top1(states, 0, every_row, targets), args.repeats)  # pylint: disable=protected-access
    worst = one_layer * model.capabilities.layer_count
    rows = session.layer_lens(last, prompt=True)
    assert abs(rows[-1].token_prob - session.prompt_tokens[last].prob) < 1e-5
    session.close()

    print(f"layer lens on {args.model} ({model.capabilities.layer_count} blocks, random weights), "
          f"{args.tokens} tokens, {model.device}: {machine.line()}")
    print(f"  prefill (start_from_ids)     {prefill * 1000:8.1f} ms")
    print(f"  lens, first token            {lens * 1000:8.1f} ms   = {lens / prefill:.2f}x prefill (target <= 2x)")
    print(f"  lens, next token (kept pass) {warm * 1000:8.1f} ms")
    print(f"  decided layers, cold         {decided * 1000:8.1f} ms   = {decided / prefill:.2f}x prefill "
          "(random weights: few tokens are the top-1, so little runs below the output)")
    print(f"  decided, one layer's head    {one_layer * 1000:8.1f} ms   on every position; the worst case "
          f"(every token the top-1 at every layer) adds {worst * 1000:.0f} ms = {worst / prefill:.2f}x prefill")


if __name__ == "__main__":
    main()
