"""RemoteSession: the contract's `Session` on a server: one request per step, a stream for generate()."""

from __future__ import annotations

import math
import random
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...core.branch_tree import BranchTree
from ...core.contract import Scored, Session, StopCheck
from ...core.errors import ContextFullError, PositionError, TokvizError
from ...core.types import SamplingParams, SessionSnapshot, TokenStep
from .client import TOP_N, ServerError
from .scoring import Scorer
from .steps import make_step, step_from_entry

if TYPE_CHECKING:
    from .model import RemoteModel


# llama.cpp's own server sends no logprob entry for a token that ends inside a character, only "\ufffd" text
WITHHELD = ("The model server at {base} withheld a token that is part of a character (it sends no probabilities "
            "for it until the character is complete), so tokviz cannot identify it. Use a server that returns "
            "every token (vLLM) to continue exactly.")


class RemoteSession(BranchTree, Session):
    """A session with a served model: one completion request per step, a stream for `generate`. The
    server keeps no state, so branches, truncation and restore are bookkeeping."""

    def __init__(self, model: RemoteModel, prompt_ids: list[int], params: SamplingParams, *, bos_added: bool,
                 restore: SessionSnapshot | None = None) -> None:
        self.model: RemoteModel = model
        self.params = params
        self._ids: list[int] = list(prompt_ids)
        self._n_prompt = len(prompt_ids)
        self._bos_added = bos_added  # `text` (BranchTree) leaves out the BOS the tokenizer added
        self._lock = threading.RLock()
        self._closed = False
        self._rng = random.Random(params.seed if params.seed is not None else random.getrandbits(63))
        self.tokens: list[TokenStep] = []
        self._init_tree()
        self.prompt_tokens: list[TokenStep] = []
        self.finish_reason: str | None = None
        self.warnings: list[str] = []  # caveats about this session's numbers, for the page
        self._scorer = Scorer(model, self._warn, self._context_full)
        if restore is None:
            self.prompt_tokens = self._scorer.prompt_steps(self._ids, params)
        else:
            self.prompt_tokens = list(restore.prompt_tokens)
            self._init_tree(restore.branches, restore.active)
            self._ids = self._ids + [t.token_id for t in self.tokens]

    # ----------------------------------------------------------------- public API
    @property
    def context_length(self) -> int | None:
        return self.model.context_length

    def step(self) -> TokenStep:
        """One token from the server (one request with max_tokens=1)."""
        with self._lock:
            self._check_open()
            self._check_room()
            params = self.params
            body = self._sampling_body(self._ids, max_tokens=1, params=params, stream=False)
            choice = self._scorer.request(body)
            entries = self.model.parse(choice)
            if entries:
                # A text server that returns more tokens than asked for (llama-cpp-python) went on because the
                # first one ended inside a UTF-8 character: it cannot be the whole token its text suggests.
                step = step_from_entry(self.model, entries[0], len(self.tokens), params, self._warn,
                                       whole_ok=len(entries) == 1)
            elif choice.get("finish_reason") == "stop":
                step = self._end_of_text_step(len(self.tokens), params)
            elif "\ufffd" in str(choice.get("text", "")):
                raise ServerError(WITHHELD.format(base=self.model.client.base))
            else:
                raise ServerError(f"The model server at {self.model.client.base} returned no token "
                                  f"(finish reason: {choice.get('finish_reason')!r}).")
            self._append(step)
            return step

    def generate(self, max_new_tokens: int, *, should_stop: StopCheck | None = None,
                 on_token: Callable[[TokenStep], None] | None = None) -> list[TokenStep]:
        """Up to `max_new_tokens` tokens in one streaming request; `should_stop` cancels it."""
        steps: list[TokenStep] = []
        self.finish_reason = None
        with self._lock:
            self._check_open()
            if max_new_tokens <= 0:
                self.finish_reason = "length"
                return steps
            if should_stop is not None and should_stop():
                self.finish_reason = "stopped"
                return steps
            try:
                self._check_room()
            except ContextFullError:
                return steps
            if self.model.context_length:
                max_new_tokens = min(max_new_tokens, self.model.context_length - len(self._ids))
            params = self.params
            body = self._sampling_body(self._ids, max_tokens=max_new_tokens, params=params, stream=True)
            finish: str | None = None
            stopped = False
            inferred_last = False  # the last token's id was inferred from a text several tokens share

            def stop_now() -> bool:
                return self._closed or (should_stop is not None and should_stop())

            def emit(step: TokenStep) -> None:
                self._append(step)
                steps.append(step)
                if on_token is not None:
                    on_token(step)

            try:
                for event in self.model.client.stream("/completions", body, stop_now):
                    choice = _streamed_choice(event)
                    if choice is None:
                        continue
                    for entry in self.model.parse(choice):
                        if stop_now():
                            stopped = True
                            break
                        try:
                            step = step_from_entry(self.model, entry, len(self.tokens), params, self._warn)
                        except ServerError:
                            if inferred_last:  # a fragment followed it: it was a fragment too, not the whole token
                                self.truncate(len(self.tokens) - 1)
                                steps.pop()
                            raise
                        inferred_last = entry.token.id is None
                        emit(step)
                    if stopped:
                        break
                    finish = str(choice.get("finish_reason") or "") or finish
                    if finish:
                        break
                else:
                    stopped = stop_now()
            except ContextFullError as error:
                self._context_full(error)
                return steps
            except TokvizError:
                self.finish_reason = "error"
                raise
            if not stopped and finish == "stop" and not (steps and self.is_eos(steps[-1])):
                emit(self._end_of_text_step(len(self.tokens), params))  # the server ended on an unreported EOS
            self.finish_reason = self._ending(steps, finish, stopped, max_new_tokens)
            return steps

    def choose(self, position: int, token_id: int) -> TokenStep:
        """Replace generated token `position` by `token_id` (or force the next token when
        `position == len(tokens)`); the old continuation stays in the branch tree."""
        with self._lock:
            self._check_position(position)
            self._check_token_id(token_id)
            index = self._n_prompt + position
            logprob, dist = self._scorer.token(self._ids[:index], token_id)
            if position < len(self.tokens):
                self._branch_off(position)
            step = make_step(self.model, token_id, logprob, dist, position, self.params)
            del self._ids[index:]
            del self.tokens[position:]
            self._append(step)
            return step

    def score(self, position: int, token_ids: list[int]) -> list[Scored]:
        """(token_id, prob, rank, sampled_prob) of any tokens as candidates for generated `position`; None where
        the server cannot tell (the probability after the samplers: always, a server scores the raw one)."""
        with self._lock:
            self._check_position(position)
            prefix = self._ids[: self._n_prompt + position]
            out = []
            for token_id in token_ids:
                self._check_token_id(token_id)
                logprob, dist = self._scorer.token(prefix, token_id)
                known = dist.find(token_id)
                out.append((token_id, None if logprob is None else math.exp(logprob), known.rank if known else None,
                            None))
            return out

    # ----------------------------------------------------------------- branch tree (as the local session)
    def switch_branch(self, branch_id: int) -> list[TokenStep]:
        with self._lock:
            self._check_open()
            self._ids = self._select_branch(branch_id)
            return self.tokens

    def truncate(self, n_tokens: int) -> None:
        with self._lock:
            self._check_open()
            self._keep_tokens(n_tokens)

    def close(self) -> None:
        """The server holds nothing for us; a streaming request in flight is cancelled."""
        self._closed = True

    # ----------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise TokvizError("This session was closed.")

    def _check_position(self, position: int) -> None:
        """An open session with a generated token at `position`, or the place of the next one."""
        self._check_open()
        if not 0 <= position <= len(self.tokens):
            raise PositionError(f"There is no generated token at position {position}.")

    def _check_token_id(self, token_id: int) -> None:
        size = self.model.vocab_size
        if token_id < 0 or (size and token_id >= size):
            raise PositionError(f"Token id {token_id} is outside the vocabulary (0..{(size or 1) - 1}).")

    def _room(self) -> int | None:
        return None if not self.model.context_length else self.model.context_length - len(self._ids)

    def _check_room(self) -> None:
        room = self._room()
        if room is not None and room <= 0:
            self.finish_reason = "context"
            raise ContextFullError(f"The context window of {self.model.context_length} tokens is full: "
                                   f"nothing more can be generated.")

    def _context_full(self, error: ContextFullError) -> None:
        """The server found the text too long: it may have said how long the context is."""
        self.model.learn_context(error)
        self.finish_reason = "context"

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _append(self, step: TokenStep) -> None:
        self._ids.append(step.token_id)
        self.tokens.append(step)

    def _ending(self, steps: list[TokenStep], finish: str | None, stopped: bool, max_new_tokens: int) -> str:
        """Why a stream ended: "stopped", "eos", "context" or "length"."""
        if stopped:
            return "stopped"
        if steps and self.is_eos(steps[-1]):
            return "eos"
        if finish == "length" or len(steps) >= max_new_tokens:
            return "context" if self._room() == 0 else "length"
        return "length"

    def _sampling_body(self, ids: Sequence[int], *, max_tokens: int, params: SamplingParams,
                       stream: bool) -> dict[str, Any]:
        seed = None if params.greedy else self._rng.getrandbits(31)
        return self.model.body(self._scorer.prompt(ids), max_tokens=max_tokens, logprobs=max(TOP_N, params.top_n),
                               params=params, stream=stream, seed=seed)

    def _end_of_text_step(self, position: int, params: SamplingParams) -> TokenStep:
        """The server stopped on an end-of-text token without listing it (llama.cpp servers do this)."""
        eos = sorted(self.model.eos_token_ids)
        if not eos:
            self.finish_reason = "eos"
            raise ServerError("The server ended the text with an end-of-text token it did not name, and no local "
                              "tokenizer says which one.")
        if len(eos) > 1:
            self._warn("The server ended the text without saying which end-of-text token it drew; the first one is "
                       "shown.")
        logprob, dist = self._scorer.token(self._ids, eos[0])
        return make_step(self.model, eos[0], logprob, dist, position, params)


def _streamed_choice(event: Any) -> dict[str, Any] | None:
    """The first choice of a streamed event (any JSON); None where it has none."""
    choices = event.get("choices") if isinstance(event, dict) else None
    return choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
