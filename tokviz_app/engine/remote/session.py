"""RemoteSession: `GenerationSession`'s interface, one request per step, a stream for generate()."""

from __future__ import annotations

import math
import random
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from ...core.branch_tree import BranchTree
from ...core.contract import Session
from ...core.errors import ContextFullError, PositionError, TokvizError
from ...core.types import Alternative, SamplingParams, TokenStep
from .client import TOP_N, ServerError
from .logprobs import _Dist, _Entry, _Tok, _is_plain, _prompt_ranks

if TYPE_CHECKING:
    from .model import RemoteModel, _Capabilities


class RemoteSession(BranchTree, Session):
    """`GenerationSession` for a served model: one completion request per step, a stream for
    `generate`. The server keeps no state, so branches, truncation and restore are bookkeeping."""

    def __init__(self, model: RemoteModel, prompt_ids: list[int], params: SamplingParams, *, bos_added: bool,
                 restore=None) -> None:
        self.model = model
        self.params = params
        self._ids: list[int] = list(prompt_ids)
        self._n_prompt = len(prompt_ids)
        self._bos_added = bos_added
        self._lock = threading.RLock()
        self._closed = False
        self._rng = random.Random(params.seed if params.seed is not None else random.getrandbits(63))
        self.tokens: list[TokenStep] = []
        self._init_tree()
        self.prompt_tokens: list[TokenStep] = []
        self.finish_reason: str | None = None
        self.warnings: list[str] = []  # honest caveats about this session's numbers, for the page
        if restore is None:
            self._score_prompt()
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
            choice = self._request(body)
            entries = self.model.parse(choice)
            if entries:
                # A text server that returns more tokens than asked for (llama-cpp-python) went on because the
                # first one ended inside a UTF-8 character: it cannot be the whole token its text suggests.
                step = self._step_from_entry(entries[0], len(self.tokens), params, whole_ok=len(entries) == 1)
            elif choice.get("finish_reason") == "stop":
                step = self._end_of_text_step(len(self.tokens), params)
            else:
                raise ServerError(f"The model server at {self.model.client.base} returned no token "
                                  f"(finish reason: {choice.get('finish_reason')!r}).")
            self._append(step)
            return step

    def generate(self, max_new_tokens: int, *, should_stop: Callable[[], bool] | None = None,
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
            finish = None
            stopped = False
            inferred_last = False  # the last token's id was inferred from a text several tokens share

            def stop_now() -> bool:
                return self._closed or (should_stop is not None and should_stop())

            try:
                for event in self.model.client.stream("/completions", body, stop_now):
                    choices = event.get("choices") or []
                    if not choices:
                        continue
                    choice = choices[0]
                    for entry in self.model.parse(choice):
                        if stop_now():
                            stopped = True
                            break
                        try:
                            step = self._step_from_entry(entry, len(self.tokens), params)
                        except ServerError:
                            if inferred_last:  # a fragment followed it: it was a fragment too, not the whole token
                                self.truncate(len(self.tokens) - 1)
                                steps.pop()
                            raise
                        inferred_last = entry.token.id is None
                        self._append(step)
                        steps.append(step)
                        if on_token is not None:
                            on_token(step)
                    if stopped:
                        break
                    finish = choice.get("finish_reason") or finish
                    if finish:
                        break
                else:
                    stopped = stop_now()
            except ContextFullError as error:
                self._learn_context(error)
                self.finish_reason = "context"
                return steps
            except TokvizError:
                self.finish_reason = "error"
                raise
            if stopped:
                self.finish_reason = "stopped"
            elif finish == "stop" and not (steps and self.is_eos(steps[-1])):
                step = self._end_of_text_step(len(self.tokens), params)  # the server ended on an unreported EOS
                self._append(step)
                steps.append(step)
                if on_token is not None:
                    on_token(step)
                self.finish_reason = "eos"
            elif steps and self.is_eos(steps[-1]):
                self.finish_reason = "eos"
            elif finish == "length" or len(steps) >= max_new_tokens:
                self.finish_reason = "context" if self._room() == 0 else "length"
            else:
                self.finish_reason = "length"
            return steps

    def choose(self, position: int, token_id: int) -> TokenStep:
        """Replace generated token `position` by `token_id` (or force the next token when
        `position == len(tokens)`); the old continuation stays in the branch tree."""
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            self._check_token_id(token_id)
            index = self._n_prompt + position
            logprob, dist = self._score_token(self._ids[:index], token_id)
            if position < len(self.tokens):
                self._branch_off(position)
            step = self._make_step(token_id, logprob, dist, position, self.params)
            del self._ids[index:]
            del self.tokens[position:]
            self._append(step)
            return step

    def score(self, position: int, token_ids: list[int]) -> list[tuple[int, float | None, int | None]]:
        """(token_id, prob, rank) of any tokens as candidates for generated `position`; None where
        the server cannot tell."""
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            prefix = self._ids[: self._n_prompt + position]
            out = []
            for token_id in token_ids:
                self._check_token_id(token_id)
                logprob, dist = self._score_token(prefix, token_id)
                known = dist.find(token_id)
                out.append((token_id, None if logprob is None else math.exp(logprob), known.rank if known else None))
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
            n_tokens = max(0, min(n_tokens, len(self.tokens)))
            del self._ids[self._n_prompt + n_tokens:]
            del self.tokens[n_tokens:]

    def close(self) -> None:
        """The server holds nothing for us; a streaming request in flight is cancelled."""
        self._closed = True

    # ----------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise TokvizError("This session was closed.")

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

    def _learn_context(self, error: ContextFullError) -> None:
        length = getattr(error, "context_length", None)
        if length and not self.model.context_length:
            self.model.context_length = length

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _append(self, step: TokenStep) -> None:
        self._ids.append(step.token_id)
        self.tokens.append(step)

    def _prompt(self, ids: Sequence[int]) -> list[int] | str:
        prompt, exact = self.model.prompt_for(ids)
        if not exact:
            self._warn("The server takes text, and this text does not read back as the same tokens: "
                       "its numbers may belong to a slightly different tokenization.")
        return prompt

    def _sampling_body(self, ids: Sequence[int], *, max_tokens: int, params: SamplingParams, stream: bool) -> dict:
        seed = None if params.greedy else self._rng.getrandbits(31)
        return self.model.body(self._prompt(ids), max_tokens=max_tokens, logprobs=TOP_N, params=params,
                               stream=stream, seed=seed)

    def _request(self, body: dict) -> dict:
        try:
            return self.model.complete(body)
        except ContextFullError as error:
            self._learn_context(error)
            self.finish_reason = "context"
            raise

    def _sampled_id(self, tok: _Tok, whole_ok: bool = True) -> int:
        if tok.id is not None:
            return tok.id
        candidates = self.model.vocab.ids_for_text(tok.text)
        # A text shared by several tokens: where exactly one of them is a whole token with that text and
        # the others are fragments of a multi-byte character or control tokens, the whole token is meant.
        whole = [i for i in candidates if i not in self.model.vocab.special_ids
                 and self.model.token_text(i) == (tok.text, False)]
        if len(whole) == 1 and tok.text and whole_ok:
            self._warn(f"The server returned the text {tok.text!r}, which several tokens share; it was read as the "
                       f"whole token {whole[0]}.")
            return whole[0]
        raise ServerError(f"The server returned a token tokviz cannot identify ({tok.text!r} matches "
                          f"{len(candidates) or 'no'} tokens of the vocabulary): this server sends token text, not "
                          f"ids, and the text of a token that is part of a character is lost. Use a server that "
                          f"returns token ids (vLLM) to continue exactly.")

    def _step_from_entry(self, entry: _Entry, position: int, params: SamplingParams, *,
                         whole_ok: bool = True) -> TokenStep:
        token_id = self._sampled_id(entry.token, whole_ok)
        dist = _Dist.from_top(entry.top, TOP_N)
        self._check_served(dist)
        logprob = entry.logprob if entry.logprob is not None else None
        return self._make_step(token_id, logprob, dist, position, params)

    def _check_served(self, dist: _Dist) -> None:
        if dist.returned < min(TOP_N, self.model.vocab_size or TOP_N) and dist.returned == len(dist.known):
            self._warn(f"The server returned {dist.returned} alternatives where {TOP_N} were asked for.")

    def _make_step(self, token_id: int, logprob: float | None, dist: _Dist, position: int,
                   params: SamplingParams, *, is_prompt: bool = False, rank: int | None = None) -> TokenStep:
        known = dist.find(token_id)
        if logprob is None and known is not None:
            logprob = known.logprob
        if rank is None and known is not None:
            rank = known.rank
        sampler = dist.sampler(params)
        sampled = sampler(token_id)
        if sampled is None and logprob is not None and _is_plain(params):
            sampled = math.exp(logprob)
        text, partial = self.model.token_text(token_id)
        alternatives = tuple(Alternative(k.id, self.model.token_text(k.id)[0], math.exp(k.logprob), sampler(k.id))
                             for k in dist.alternatives())
        return TokenStep(
            token_id=token_id, text=text, prob=None if logprob is None else math.exp(logprob), logprob=logprob,
            rank=rank, entropy=None, sampled_prob=sampled, alternatives=alternatives, position=position,
            is_prompt=is_prompt, partial=partial, sampling=params,
        )

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
        logprob, dist = self._score_token(self._ids, eos[0])
        return self._make_step(eos[0], logprob, dist, position, params)

    def _score_token(self, prefix: Sequence[int], token_id: int) -> tuple[float | None, _Dist]:
        """The distribution after `prefix`, and `token_id`'s logprob in it (None if the server can't say)."""
        caps = self.model.caps
        if caps.echo == "aligned" and (caps.ids_in or self.model.prompt_for(list(prefix) + [token_id])[1]):
            # one echo request: the logprob of the appended token, exactly, and its top list
            ids = list(prefix) + [token_id]
            body = self.model.body(self._prompt(ids), max_tokens=1, logprobs=TOP_N, params=None, echo=True)
            entries = self.model.parse(self._request(body))
            pairs = self.model.align(entries, ids)
            entry = next((entries[j] for j, k in pairs or [] if k == len(ids) - 1), None)
            if entry is not None and entry.top is not None:
                dist = _Dist.from_top(entry.top, TOP_N)
                return entry.logprob, dist
        body = self.model.body(self._prompt(prefix), max_tokens=1, logprobs=caps.deep, params=None)
        entries = self.model.parse(self._request(body))
        dist = _Dist.from_top(entries[0].top if entries else None, caps.deep)
        known = dist.find(token_id)
        return (known.logprob if known else None), dist

    # ----------------------------------------------------------------- the prompt
    def _score_prompt(self) -> None:
        ids = self._ids
        params = self.params
        first_text, first_partial = self.model.token_text(ids[0])
        self.prompt_tokens = [TokenStep(ids[0], first_text, None, None, None, None, None, (), 0, True, first_partial,
                                        params)]
        if len(ids) == 1:
            return
        caps = self.model.caps
        dists: dict[int, tuple[float | None, _Dist, int | None]] = {}  # position -> (logprob, dist, rank)
        if caps.echo is not None:
            try:
                dists = self._echo_prompt(ids, caps)
            except ContextFullError:
                raise
            except ServerError as error:
                self._warn(f"The prompt could not be scored: {error}")
        for k in range(1, len(ids)):
            logprob, dist, rank = dists.get(k, (None, _Dist(), None))
            step = self._make_step(ids[k], logprob, dist, k, params, is_prompt=True, rank=rank)
            self.prompt_tokens.append(step)
        if caps.echo is None:
            self._warn("This server does not score prompts: the prompt's tokens show no probabilities.")

    def _echo_prompt(self, ids: list[int], caps: _Capabilities) -> dict[int, tuple[float | None, _Dist, int | None]]:
        # llama-cpp-python pairs echo entries with the right rows only when it strips a leading BOS
        shifted = caps.echo == "shifted" and not (self.model.bos_token_id is not None
                                                   and ids[0] == self.model.bos_token_id)
        asked = caps.deep if shifted else TOP_N
        body = self.model.body(self._prompt(ids), max_tokens=1, logprobs=asked, params=None, echo=True)
        if caps.prompt_logprobs:  # vLLM: exact ranks too; it also sets the size of the echoed top lists
            body["prompt_logprobs"] = asked
        choice = self._request(body)
        entries = self.model.parse(choice)
        pairs = self.model.align(entries, ids)
        if pairs is None:
            self._warn("The server read the prompt as different tokens; the prompt's tokens show no probabilities.")
            return {}
        out: dict[int, tuple[float | None, _Dist, int | None]] = {}
        ranks = _prompt_ranks(choice.get("prompt_logprobs"), ids) if caps.prompt_logprobs else {}
        for j, k in pairs:
            entry = entries[j]
            if entry.top is None:
                continue
            dist = _Dist.from_top(entry.top, asked)
            if shifted:  # entry k holds the distribution after token k, i.e. for token k + 1
                if k + 1 < len(ids):
                    known = dist.find(ids[k + 1])
                    out[k + 1] = (known.logprob if known else None, dist, None)
            elif k >= 1:
                out[k] = (entry.logprob, dist, ranks.get(k))
        if 1 not in out and len(ids) > 1:  # servers leave the first echo entry empty: ask for it alone
            body = self.model.body(self._prompt(ids[:1]), max_tokens=1, logprobs=asked, params=None)
            first = self.model.parse(self._request(body))
            if first and first[0].top is not None:
                dist = _Dist.from_top(first[0].top, asked)
                known = dist.find(ids[1])
                out[1] = (known.logprob if known else None, dist, None)
        return out
