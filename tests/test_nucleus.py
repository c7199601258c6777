"""Top-p without the sort: the nucleus found among the first tokens is exactly the one the sort finds (as
transformers' TopPLogitsWarper, the lower id first in a tie, which the warper leaves to its unstable sort)."""

from __future__ import annotations

import pytest
import torch
from transformers import TopPLogitsWarper

from tokviz_app.engine import nucleus

VOCAB = 50257  # GPT-2's: the size where the sort costs what the rest of a step's statistics do
SEEDS = {"peaked": 1, "flat": 2, "tied": 3}


def rows(kind: str, generator: torch.Generator, count: int = 6) -> torch.Tensor:
    if kind == "peaked":  # a trained model's usual step: the nucleus within the first hundred tokens
        return torch.randn(count, VOCAB, generator=generator) * 4
    if kind == "flat":  # a random-weight model: tens of thousands of tokens in the nucleus
        return torch.randn(count, VOCAB, generator=generator) * 0.05
    return (torch.randn(count, VOCAB, generator=generator) * 2).round() / 2  # ties everywhere: few distinct values


@pytest.mark.parametrize("kind", ["peaked", "flat", "tied"])
@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999])
def test_the_nucleus_is_the_sorts(kind, top_p):
    logits = rows(kind, torch.Generator().manual_seed(SEEDS[kind] * 100 + int(top_p * 1000)), count=20)
    assert torch.equal(nucleus.nucleus(logits, top_p), nucleus._sorted(logits, top_p))


def test_the_sort_is_the_warpers_where_there_are_no_ties():
    logits = rows("peaked", torch.Generator().manual_seed(7))
    for top_p in (0.3, 0.9):
        kept = torch.isfinite(TopPLogitsWarper(top_p)(torch.zeros(1, 1, dtype=torch.long), logits.clone()))
        assert torch.equal(nucleus._sorted(logits, top_p), kept)


def test_peaked_rows_need_no_sort_and_the_rest_are_sorted():
    for kind, left in (("peaked", 0), ("flat", 20), ("tied", 20)):
        probs = torch.softmax(rows(kind, torch.Generator().manual_seed(SEEDS[kind]), count=20).double(), -1)
        keep = torch.zeros_like(probs, dtype=torch.bool)
        assert len(nucleus._among_first(probs, 0.9, torch.arange(len(probs)), keep)) == left, kind
