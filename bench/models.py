"""Benchmark models: the real GPT-2 architectures with random weights.

The compute of a forward pass does not depend on the weights' values, so a random
GPT-2 124M costs exactly what the real one does, with no download.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = {
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "gpt2-medium": {"n_layer": 24, "n_embd": 1024, "n_head": 16},
}
TOKENIZER_VOCAB = 1000  # ids below this decode to real text; the model still has GPT-2's 50,257 outputs


def build_random_gpt2(size: str = "gpt2", folder: Path | None = None) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    from tests.tiny_model import train_tokenizer

    folder = Path(folder or tempfile.mkdtemp(prefix=f"tokviz-bench-{size}-"))
    if (folder / "config.json").exists():
        return folder
    hf_logging.disable_progress_bar()
    tokenizer = train_tokenizer(TOKENIZER_VOCAB)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, bos_token_id=0, eos_token_id=0, **SIZES[size])
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder
