"""LoadedModel: a causal LM and its tokenizer on one device, the local backend's `Model`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import torch

from ..core.chat import check_messages, no_template
from ..core.compare import TokenScore
from ..core.contract import Capabilities, Model, ScoreReference
from ..core.errors import PromptTooLongError, TokvizError
from ..core.types import ModelInfo, SamplingParams, SessionSnapshot
from ..core.windows import WindowScore
from .catalog import ModelSpec
from . import compare, window_scoring
from .chat import chat_ids, end_of_turn_ids, has_template
from .devices import dtype_name
from .fast_path import FastPath
from .kernels import KernelReport
from .lane import InferenceLane
from .layer_lens import find_lens
from .session import GenerationSession
from .texts import TokenTexts, prompt_ids, search_vocabulary
from .openmp import on_passing_thread


class LoadedModel(Model):
    """A causal LM and its tokenizer on one device (the local backend's `Model`).

    Thread-safe: all forward passes go through its inference lane, which batches
    the decoding steps of concurrent sessions.
    """

    def __init__(self, spec: ModelSpec, hf_model, tokenizer, device: str, dtype: torch.dtype, load_seconds: float,
                 *, batching: bool = True, weight_bytes: int | None = None, kernels: KernelReport | None = None):
        self.key = spec.key
        self.label = spec.label
        self.source = spec.source
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.device = device
        self.dtype = dtype_name(dtype)
        self.load_seconds = load_seconds
        # counted before any kernel layout change (a packed copy is no longer a parameter)
        self.weight_bytes = weight_bytes if weight_bytes is not None else parameter_bytes(hf_model)
        # exact numbers over the whole vocabulary, steps (not streams); the logit lens where its parts are found
        self.lens, layer_note = find_lens(hf_model, device)
        self.capabilities = Capabilities(chat_template=has_template(tokenizer), layer_access=self.lens is not None,
                                         layer_count=self.lens.layers if self.lens else 0, layer_note=layer_note,
                                         what_if=True)  # engine/what_if.py
        self.notices: list[str] = []
        config = hf_model.config
        self.context_length = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        self.vocab_size = int(config.get_text_config().vocab_size)
        eos = getattr(config, "eos_token_id", None)
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        eos_ids.add(tokenizer.eos_token_id)
        eos_ids |= end_of_turn_ids(tokenizer)  # a chat's answer ends there (SmolLM2: <|im_end|>)
        self.eos_token_ids = frozenset(i for i in eos_ids if i is not None)
        self.bos_token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        self._texts = TokenTexts(tokenizer)
        self.lane = InferenceLane(hf_model, device, batching=batching)
        self._vocab_texts: list[str] | None = None  # built on the first vocabulary search
        self.kernels = kernels  # the CPU kernel choice, where one was made
        self.fast_path: FastPath | None = None  # the bundled model's quantised kernels (prepared in the background)

    def background_work(self) -> str:
        return "optimising…" if self.fast_path is not None and self.fast_path.optimising else ""

    # --------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        """(readable text, partial-UTF-8 flag) of one token."""
        return self._texts.text(token_id)

    # --------------------------------------------------------------- sessions
    def start(self, prompt: str, params: SamplingParams | None = None, *,
              should_stop: Callable[[], bool] | None = None,
              progress: Callable[[int, int], None] | None = None) -> GenerationSession:
        """A new session: the prompt is tokenised once and scored in one pass (chunked).

        `should_stop` is asked between chunks of the prompt; when it says so, CancelledWork is raised.
        `progress(scored, total)` is called before each chunk and at the end."""
        params = params or SamplingParams()
        ids, bos_added = prompt_ids(self.encode, prompt, self.bos_token_id)
        if len(ids) > self.context_length:
            raise PromptTooLongError(
                f"The prompt is {len(ids)} tokens long, but {self.label} reads at most {self.context_length} tokens. "
                f"Shorten it by at least {len(ids) - self.context_length} tokens."
            )
        return GenerationSession(self, ids, params, bos_added=bos_added, should_stop=should_stop, progress=progress)

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: Callable[[], bool] | None = None) -> GenerationSession:
        if not ids:
            raise TokvizError("A session needs at least one token.")
        if len(ids) > self.context_length:
            raise PromptTooLongError(f"{len(ids)} tokens do not fit the context of {self.context_length}.")
        return GenerationSession(self, list(ids), params or SamplingParams(), bos_added=False,
                                 should_stop=should_stop)

    def start_chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None, *,
                   should_stop: Callable[[], bool] | None = None) -> GenerationSession:
        """A session whose prompt is the chat rendered by the tokenizer's template (ids, never re-encoded)."""
        messages = check_messages(messages)
        if not self.capabilities.chat_template:
            raise no_template(self.label)
        ids = chat_ids(self.tokenizer, messages, self.label)
        if len(ids) > self.context_length:
            raise PromptTooLongError(
                f"The chat is {len(ids)} tokens long with its template, but {self.label} reads at most "
                f"{self.context_length} tokens. Shorten it by at least {len(ids) - self.context_length} tokens.")
        session = GenerationSession(self, ids, params or SamplingParams(), bos_added=False, should_stop=should_stop)
        session.messages = messages
        return session

    def restore(self, snapshot: SessionSnapshot) -> GenerationSession:
        """A live session from an exported snapshot: same tokens and numbers, no re-scoring."""
        ids = list(snapshot.prompt_ids)
        total = len(ids) + max((len(b.tokens) for b in snapshot.branches), default=0)
        if total > self.context_length:
            raise PromptTooLongError(f"This session has {total} tokens; {self.label} reads at most "
                                     f"{self.context_length}.")
        if any(i >= self.vocab_size for i in ids):
            raise TokvizError(f"This session was made with a different vocabulary than {self.label}'s.")
        session = GenerationSession(self, ids, snapshot.settings, bos_added=False, restore=snapshot)
        session.messages = None if snapshot.messages is None else [dict(m) for m in snapshot.messages]
        return session

    @on_passing_thread  # forward passes outside the lane (see openmp.py)
    def score_ids(self, ids: list[int], start: int = 1, *, top_n: int = 5, reference: ScoreReference | None = None,
                  should_stop: Callable[[], bool] | None = None) -> list[TokenScore]:
        """Plain forward passes; the KL over the whole vocabulary where the reference is local too (compare.py)."""
        return compare.score_ids(self, ids, start, top_n=top_n, reference=reference, should_stop=should_stop)

    @on_passing_thread
    def score_windows(self, windows: Sequence[Sequence[int]], *, done: Callable[[int], None] | None = None,
                      budget: int | None = None) -> list[list[WindowScore]]:
        """Many windows padded into one forward pass (`window_scoring.py`); `budget`: padded tokens per pass."""
        return window_scoring.score_windows(self, windows, budget=budget, done=done)

    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        """Vocabulary search by readable text: exact matches first, then prefixes, then substrings."""
        if not query:
            return []
        if self._vocab_texts is None:
            self._vocab_texts = [self.token_text(i)[0] for i in range(self.vocab_size)]
        return search_vocabulary(self._vocab_texts, query, limit)

    def info(self) -> ModelInfo:
        return ModelInfo(self.key, self.label, self.source, status="loaded",
                         extra={"device": self.device, "dtype": self.dtype, "context_length": self.context_length,
                                "vocab_size": self.vocab_size, "load_seconds": round(self.load_seconds, 2)})


def parameter_bytes(hf_model) -> int:
    return sum(p.numel() * p.element_size() for p in hf_model.parameters())
