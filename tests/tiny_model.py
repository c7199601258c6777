"""Build a tiny GPT-2 with a byte-level BPE tokenizer trained on the fly.

Saved with `save_pretrained` so tests load it through the same `from_pretrained`
path users hit. Random weights, fixed seed: the numbers are arbitrary but exact.
"""

from __future__ import annotations

from pathlib import Path

CORPUS = (
    "The quick brown fox jumps over the lazy dog. "
    "A language model predicts the next token from the ones before it. "
    "Tokens are coloured by probability: green, blue, purple, orange and red. "
    "Hello world! Bonjour le monde. Hallo Welt. 1234567890 "
    "<script>alert('x')</script> & ampersands, \"quotes\" and 'apostrophes'.\n"
    "New lines\n\tand tabs. Emoji: 🦊 🐶 ✨ café naïve résumé.\n"
)


def train_tokenizer(vocab_size: int, model_max_length: int = 1_000_000):
    """A byte-level BPE tokenizer (GPT-2 style) trained on CORPUS in well under a second."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>", model_max_length=model_max_length,  # context checks are the engine's job
    )


def build_tiny_model(folder: Path, *, n_layer: int = 2, n_embd: int = 64, n_positions: int = 256,
                     vocab_size: int = 400, seed: int = 0, train_steps: int = 40, outputs: int | None = None) -> Path:
    """`outputs`: the model's vocabulary width where it should differ from the tokenizer's (GPT-2's 50,257)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast = train_tokenizer(vocab_size)
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=outputs or len(fast), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=4,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    # A few quick training steps on the corpus: random weights predict near-uniformly,
    # a little training gives the spread of confident and unsure tokens the page shows.
    stream = fast(CORPUS * 8)["input_ids"]
    window = min(64, n_positions)
    ids = torch.tensor(stream[: len(stream) // window * window]).view(-1, window)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(train_steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    import sys

    print(build_tiny_model(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-gpt2")))
