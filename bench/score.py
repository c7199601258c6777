"""Corpus scoring speed: `tokviz score`'s batched path vs one text at a time through the contract.

    uv run python bench/score.py [--tokens 100000] [--doc-tokens 100] [--model gpt2] [--device cpu] [--json]

A corpus of `--tokens` tokens in documents of about `--doc-tokens` tokens (sentences and short paragraphs,
what surprisal studies score; lengths uniform in [doc/4, 7*doc/4]) on the GPT-2 config with random weights
(the cost of a forward pass does not depend on the weights). "one by one" is the naive loop: each document
scored alone with `model.start_from_ids` (one session, one chunked pass, the page's own prompt scoring);
"batched" pads the windows of many documents into one forward pass (`scoring/corpus.py`), in the groups
the command line uses. Both score after the beginning-of-text token, and their log-probs are compared.
Also printed: the cost of splitting the decoded text among the tokens (character offsets).
The default 10,000 tokens take about 1-2 minutes on 2 CPU cores; `--tokens 100000` is the issue's corpus.
"""

from __future__ import annotations

import json
import random
import time

import machine
from models import TOKENIZER_VOCAB, build_random_gpt2


def corpus(tokens: int, doc_tokens: int, seed: int = 0) -> list[list[int]]:
    """Documents of random decodable ids, `tokens` in all."""
    rng = random.Random(seed)
    docs, left = [], tokens
    while left > 0:
        n = min(left, rng.randint(max(1, doc_tokens // 4), max(1, doc_tokens * 7 // 4)))
        docs.append([rng.randrange(1, TOKENIZER_VOCAB) for _ in range(n)])
        left -= n
    return docs


def units(docs: list[list[int]], tokens: int) -> list[list[list[int]]]:
    out: list[list[list[int]]] = []
    for doc in docs:
        if not out or sum(map(len, out[-1])) + len(doc) > tokens:
            out.append([])
        out[-1].append(doc)
    return out


def naive_scores(model, docs: list[list[int]], prefix: list[int]) -> list[float]:
    """What a simple script does: for every token, one forward pass of everything before it (no cache)."""
    import torch

    found = []
    with torch.inference_mode():
        for doc in docs:
            ids = prefix + doc
            for k in range(len(prefix), len(ids)):
                logits = model.hf_model(input_ids=torch.tensor([ids[:k]], device=model.device), use_cache=False).logits
                found.append(float(torch.log_softmax(logits[0, -1].float(), -1)[ids[k]]))
    return found


def main() -> None:
    parser = machine.model_parser(__doc__, )
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--doc-tokens", type=int, default=100)
    parser.add_argument("--naive-docs", type=int, default=1, help="documents for the per-token naive loop")
    args = parser.parse_args()

    from tokviz_app.engine import ModelManager
    from tokviz_app.scoring import corpus as scoring
    from tokviz_app.scoring.align import token_pieces
    from tokviz_app.scoring.job import GROUP_TOKENS

    model = ModelManager(device=args.device).load(str(build_random_gpt2(args.model)))
    docs = corpus(args.tokens, args.doc_tokens)
    prefix = scoring.prefix_ids(model, None)
    scoring.score(model, docs[:2], prefix, batched=True)  # warm-up: first-call costs out of the figures
    scoring.score(model, docs[:2], prefix, batched=False)

    # Both ways over the same units of documents, alternating which goes first: a burst of other work on a
    # shared machine then hits both alike.
    unit = GROUP_TOKENS if str(model.device).startswith("cuda") else 2048
    batched, single, batch_s, single_s = [], [], 0.0, 0.0
    for i, group in enumerate(units(docs, unit)):
        for way in ("batched", "single") if i % 2 == 0 else ("single", "batched"):
            started = time.perf_counter()
            if way == "batched":  # one call per unit, as `tokviz score` scores a group of files
                batched += scoring.score(model, group, prefix, batched=True)
                batch_s += time.perf_counter() - started
            else:
                single += [scoring.score(model, [doc], prefix, batched=False)[0] for doc in group]
                single_s += time.perf_counter() - started

    started = time.perf_counter()
    sample = naive_scores(model, docs[: args.naive_docs], prefix)
    naive_s, naive_tokens = time.perf_counter() - started, sum(map(len, docs[: args.naive_docs]))

    started = time.perf_counter()
    for doc in docs:
        token_pieces(model.decode, doc)
    pieces_s = time.perf_counter() - started

    difference = max(abs(a.logprob - b.logprob) for x, y in zip(batched, single) for a, b in zip(x, y))
    flat = [s.logprob for doc in batched[: args.naive_docs] for s in doc]
    difference = max([difference] + [abs(a - b) for a, b in zip(flat, sample)])
    results = {"model": args.model, "device": model.device, "dtype": model.dtype, "machine": machine.describe(),
               "tokens": args.tokens, "documents": len(docs), "doc_tokens": args.doc_tokens,
               "batched_tokens_per_s": args.tokens / batch_s, "one_by_one_tokens_per_s": args.tokens / single_s,
               "speedup": single_s / batch_s, "naive_tokens_per_s": naive_tokens / naive_s,
               "speedup_over_naive": naive_s / naive_tokens * args.tokens / batch_s,
               "offsets_tokens_per_s": args.tokens / pieces_s,
               "max_logprob_difference": difference}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    machine.print_header("tokviz score benchmark", args.model, model.device, model.dtype, results["machine"])
    print(f"corpus: {args.tokens:,} tokens in {len(docs):,} documents of ~{args.doc_tokens} tokens")
    print(f"one by one (start_from_ids per document)  {results['one_by_one_tokens_per_s']:>9,.0f} tokens/s")
    print(f"batched (padded windows, one forward)      {results['batched_tokens_per_s']:>9,.0f} tokens/s")
    print(f"batched / one by one                       {results['speedup']:>9.2f}x")
    print(f"naive loop (a forward of the prefix per token; {naive_tokens} tokens) "
          f"{results['naive_tokens_per_s']:>9,.0f} tokens/s")
    print(f"batched / naive loop                       {results['speedup_over_naive']:>9.1f}x")
    print(f"character offsets (token_pieces)           {results['offsets_tokens_per_s']:>9,.0f} tokens/s")
    print(f"largest |log-prob difference| between the two: {difference:.2e}")


if __name__ == "__main__":
    main()
