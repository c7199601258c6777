"""One generation: token ids, a KV cache, and the numbers behind every token."""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING, Callable, TypeVar

import torch

from . import metrics
from .lane import PREFILL_CHUNK_IDLE
from .layer_lens import SessionLayers
from .token_steps import token_steps
from .what_if import SessionWhatIf
from ..core.errors import ContextFullError, PositionError, TokvizError
from ..core.branch_tree import BranchTree
from ..core.contract import Scored, Session
from ..core.types import SamplingParams, TokenStep
from .openmp import in_passing_thread, one_openmp_thread

if TYPE_CHECKING:
    from .local_model import LoadedModel

T = TypeVar("T")
# Prompt tokens scored at once. A prompt of up to 1,024 tokens is one forward pass, as plain transformers runs
# it: 512-token chunks made a 1,000-token GPT-2 prompt ~15 % slower (1,527-1,731 vs 1,316-1,334 ms, 2-core
# Xeon). It bounds the [chunk, V] logits of a long prompt (206 MB for GPT-2) and how long a Stop waits.
PREFILL_CHUNK = PREFILL_CHUNK_IDLE  # one chunk, one forward of the idle lane


class GenerationSession(BranchTree, SessionLayers, SessionWhatIf, Session):
    """Token-by-token generation with exact statistics.

    Invariants: `_ids` holds prompt + generated ids (never re-encoded); the
    model's inference lane holds keys/values for `_ids[:_cached]` in this
    session's slot; `_next_logits`, when set, is the model's prediction for the
    token after `_ids`. Cropping is free bookkeeping: the lane applies it with
    the next forward pass.
    """

    @one_openmp_thread
    def __init__(self, model: LoadedModel, prompt_ids: list[int], params: SamplingParams, *, bos_added: bool,
                 restore=None, should_stop: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.model = model
        self.params = params
        self._ids: list[int] = list(prompt_ids)
        self._n_prompt = len(prompt_ids)
        self._bos_added = bos_added
        self._slot = model.lane.new_slot()
        self._cached = 0
        self._next_logits: torch.Tensor | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._generator = torch.Generator()
        self._generator.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        self.tokens: list[TokenStep] = []
        self._init_tree()
        self.prompt_tokens: list[TokenStep] = []
        self.finish_reason: str | None = None  # "eos", "length", "context", "stopped"
        self.warnings: list[str] = []  # exact numbers: nothing to warn about
        try:
            if restore is None:
                self._prefill(should_stop, progress)
            else:
                self._restore(restore)
        except BaseException:  # cancelled or failed: the slot's memory goes at once
            self.close()
            raise

    # ----------------------------------------------------------------- public API
    @property
    def context_length(self) -> int:
        return self.model.context_length

    @one_openmp_thread
    def step(self) -> TokenStep:
        """Draw one token with the current sampling settings (one forward pass)."""
        with self._lock:
            self._check_open()
            if len(self._ids) >= self.context_length:
                self.finish_reason = "context"
                raise ContextFullError(
                    f"The context window of {self.context_length} tokens is full: nothing more can be generated."
                )
            if self._next_logits is not None:
                step = self._draw(self._next_logits)
            elif metrics.is_plain(self.params) or metrics.is_plain_greedy(self.params):
                # cheap (one native pass over the logits): the lane draws it right after the forward
                step = self._feed_for_next(self._draw)
            else:  # samplers cost 1-5 ms a row: in this thread, beside the lane's other rows
                step = self._draw(self._logits_for_next())
            self._append(step.token_id, step)
            return step

    def _draw(self, logits: torch.Tensor) -> TokenStep:
        """The next token from its logits [V] with the current sampling settings, and its numbers. With plain
        sampling (0.2-0.3 ms) it runs on the lane's thread while this session's caller waits for it (holding the
        session's lock)."""
        params = self.params
        if metrics.is_plain_greedy(params):  # the argmax; its numbers from the raw distribution in one pass
            return self._make_step(logits, int(logits.argmax()), len(self.tokens), params, None)
        sampled = metrics.samplers(logits.unsqueeze(0), params, self._ids)  # every sampler, as the step shows
        probs = sampled.probs[0]
        token_id = int(probs.argmax()) if params.greedy else metrics.draw(probs, self._generator)
        return self._make_step(logits, token_id, len(self.tokens), params, sampled)

    def generate(self, max_new_tokens: int, *, should_stop: Callable[[], bool] | None = None,
                 on_token: Callable[[TokenStep], None] | None = None) -> list[TokenStep]:
        """Up to `max_new_tokens` steps; stops after end-of-text or at the context limit."""
        steps: list[TokenStep] = []
        self.finish_reason = None
        for _ in range(max_new_tokens):
            if should_stop is not None and should_stop():
                self.finish_reason = "stopped"
                break
            try:
                step = self.step()
            except ContextFullError:
                break
            steps.append(step)
            if on_token is not None:
                on_token(step)
            if self.is_eos(step):
                self.finish_reason = "eos"
                break
        else:
            self.finish_reason = "length"
        return steps

    @one_openmp_thread
    def choose(self, position: int, token_id: int) -> TokenStep:
        """Replace generated token `position` by `token_id`; the tokens after it are dropped
        from the active text but kept in the branch tree. `position == len(tokens)`
        forces the next token.

        Reuses the cached prefix: one forward pass of one token.
        """
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            self._check_token_id(token_id)
            index = self._n_prompt + position
            if position == len(self.tokens):
                logits = self._logits_for_next()
            else:
                logits = self._logits_at(index)
                self._branch_off(position)
            step = self._make_step(logits, token_id, position, self.params, None)
            del self._ids[index:]
            del self.tokens[position:]
            self._append(token_id, step)
            return step

    # ----------------------------------------------------------------- branch tree
    @one_openmp_thread
    def switch_branch(self, branch_id: int) -> list[TokenStep]:
        """Make another branch the active text; the KV cache keeps the shared prefix."""
        with self._lock:
            self._check_open()
            new_ids = self._select_branch(branch_id)
            common = self._n_prompt
            while common < min(len(new_ids), len(self._ids)) and new_ids[common] == self._ids[common]:
                common += 1
            self._ids = new_ids
            self._crop_to(common)
            self._next_logits = None
            return self.tokens

    @one_openmp_thread
    def score(self, position: int, token_ids: list[int]) -> list[Scored]:
        """(token_id, prob, rank, sampled_prob) of any tokens as candidates for generated `position` (or for the
        next token when position == len(tokens)); sampled under the settings that token was drawn with."""
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            for token_id in token_ids:
                self._check_token_id(token_id)
            index = self._n_prompt + position
            logits = self._logits_for_next() if index == len(self._ids) else self._logits_at(index)
            if index < len(self._ids):
                self._next_logits = None  # _logits_at moved the cache back
            probs = torch.softmax(logits, -1)
            ids = torch.tensor(token_ids, dtype=torch.long)
            rank = metrics.ranks(logits.expand(len(token_ids), -1), ids)
            shown = self.tokens[position].sampling if position < len(self.tokens) else None
            sampled = metrics.sampling_probs(logits, shown or self.params, self._ids[:index])
            return [(t, float(probs[t]), int(r), float(sampled[t])) for t, r in zip(token_ids, rank.tolist())]

    @one_openmp_thread
    def truncate(self, n_tokens: int) -> None:
        """Keep the first `n_tokens` generated tokens of the active branch."""
        with self._lock:
            self._check_open()
            self._keep_tokens(n_tokens)
            self._next_logits = None
            self._crop_to(min(self._cached, len(self._ids) - 1))

    def close(self) -> None:
        """Free the KV cache; the session cannot be used afterwards."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.model.lane.release(self._slot)
                self._next_logits = None
                self._kept = None  # the layer lens's hidden states (layer_lens.py)

    # ----------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise TokvizError("This session was closed.")

    def _check_token_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.model.vocab_size:
            raise PositionError(f"Token id {token_id} is outside the vocabulary (0..{self.model.vocab_size - 1}).")

    def _append(self, token_id: int, step: TokenStep) -> None:
        self._ids.append(token_id)
        self.tokens.append(step)
        self._next_logits = None

    def _crop_to(self, length: int) -> None:
        self._cached = min(self._cached, length)

    def _forward(self, ids: list[int], should_stop: Callable[[], bool] | None = None, finish=None):
        """Run `ids` through the model after the cached prefix; float32 logits [len(ids), V] (or `finish`'s
        result: `InferenceLane.feed`)."""
        out = self.model.lane.feed(self._slot, ids, keep=self._cached, should_stop=should_stop, finish=finish)
        self._cached += len(ids)
        return out

    def _feed_for_next(self, finish: Callable[[torch.Tensor], T]) -> T:
        """`finish(logits [V])` of the prediction after the last token, run on the lane right after the forward."""
        self._crop_to(len(self._ids) - 1)  # at least one token must go through the model
        return self._forward(self._ids[self._cached :], finish=lambda logits: finish(logits[-1]))

    def _logits_for_next(self) -> torch.Tensor:
        if self._next_logits is None:
            self._next_logits = self._feed_for_next(lambda logits: logits)
        return self._next_logits

    def _logits_at(self, index: int) -> torch.Tensor:
        """The prediction for `_ids[index]`, from the cached prefix `_ids[:index - 1]`."""
        self._crop_to(index - 1)
        return self._forward(self._ids[self._cached : index])[-1]

    def _prefill(self, should_stop: Callable[[], bool] | None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """Score the prompt in chunks and keep the prediction for the first new token; `progress(scored, total)`
        before each chunk and at the end (a long prompt takes many seconds on a CPU: the page shows how far it got)."""
        ids = self._ids
        texts = self.model.token_text
        first_text, first_partial = texts(ids[0])
        self.prompt_tokens.append(
            TokenStep(ids[0], first_text, None, None, None, None, None, (), 0, True, first_partial, self.params)
        )
        for start in range(0, len(ids), PREFILL_CHUNK):
            if progress is not None:
                progress(start, len(ids))
            chunk = ids[start : start + PREFILL_CHUNK]
            logits = self._forward(chunk, should_stop)  # the lane splits it further between other tabs' steps
            targets = ids[start + 1 : start + 1 + len(chunk)]
            if targets:  # up to 512 rows over the vocabulary: worth torch's threads (see openmp.py)
                self.prompt_tokens.extend(in_passing_thread(
                    token_steps, logits[: len(targets)], targets, start + 1, is_prompt=True, params=self.params,
                    texts=texts, context=ids[: start + len(targets)]))
            self._next_logits = logits[-1]
        if progress is not None:
            progress(len(ids), len(ids))

    def _restore(self, snapshot) -> None:
        """Take tokens, numbers and branches from a snapshot; only rebuild the KV cache."""
        self.prompt_tokens = list(snapshot.prompt_tokens)
        self._init_tree(snapshot.branches, snapshot.active)
        self._ids = self._ids + [t.token_id for t in self.tokens]
        for start in range(0, len(self._ids), PREFILL_CHUNK):
            logits = self._forward(self._ids[start : start + PREFILL_CHUNK])
        self._next_logits = logits[-1]  # the prediction for the token after the text

    def _make_step(self, logits: torch.Tensor, token_id: int, position: int, params: SamplingParams,
                   sampled: metrics.Sampled | None) -> TokenStep:
        """The step of generated `position`; the ids before it are the repetition penalty's context."""
        return token_steps(logits.unsqueeze(0), [token_id], position, is_prompt=False, params=params,
                           texts=self.model.token_text, context=self._ids[: self._n_prompt + position],
                           sampled=sampled)[0]
