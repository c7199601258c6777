"""A session's requests for numbers rather than new tokens: the prompt's own tokens, and any token's
logprob after a prefix (a chosen alternative, a searched token, an unnamed end-of-text)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from ...core.errors import ContextFullError
from ...core.types import SamplingParams, TokenStep
from .client import TOP_N, ServerError
from .logprobs import _Dist, _prompt_ranks, align
from .steps import Warn, make_step

if TYPE_CHECKING:
    from .model import RemoteModel

Scored = dict[int, tuple[float | None, _Dist, int | None]]  # prompt position -> (logprob, dist, rank)


class Scorer:
    """Requests on behalf of one session: `warn` collects its caveats, `on_context_full` hears of a text
    the server found too long before the error goes on to the caller."""

    def __init__(self, model: RemoteModel, warn: Warn, on_context_full: Callable[[ContextFullError], None]) -> None:
        self.model = model
        self._warn = warn
        self._on_context_full = on_context_full

    def prompt(self, ids: Sequence[int]) -> list[int] | str:
        """What to send for `ids` (a warning where a text server will read other tokens)."""
        prompt, exact = self.model.prompt_for(ids)
        if not exact:
            self._warn("The server takes text, and this text does not read back as the same tokens: "
                       "its numbers may belong to a slightly different tokenization.")
        return prompt

    def request(self, body: dict[str, Any]) -> dict[str, Any]:
        """One completion's first choice."""
        try:
            return self.model.complete(body)
        except ContextFullError as error:
            self._on_context_full(error)
            raise

    def token(self, prefix: Sequence[int], token_id: int) -> tuple[float | None, _Dist]:
        """The distribution after `prefix`, and `token_id`'s logprob in it (None if the server can't say)."""
        model, caps = self.model, self.model.caps
        ids = list(prefix) + [token_id]
        if caps.echo == "aligned" and (caps.ids_in or model.prompt_for(ids)[1]):
            # one echo request: the logprob of the appended token, exactly, and its top list
            body = model.body(self.prompt(ids), max_tokens=1, logprobs=TOP_N, params=None, echo=True)
            entries = model.parse(self.request(body))
            pairs = align(entries, ids, model.vocab)
            entry = next((entries[j] for j, k in pairs or [] if k == len(ids) - 1), None)
            if entry is not None and entry.top is not None:
                return entry.logprob, _Dist.from_top(entry.top, TOP_N)
        body = model.body(self.prompt(prefix), max_tokens=1, logprobs=caps.deep, params=None)
        entries = model.parse(self.request(body))
        dist = _Dist.from_top(entries[0].top if entries else None, caps.deep)
        return dist.logprob_of(token_id), dist

    def prompt_steps(self, ids: list[int], params: SamplingParams) -> list[TokenStep]:
        """A step for every prompt token; the first has no numbers (nothing comes before it)."""
        text, partial = self.model.token_text(ids[0])
        steps = [TokenStep(token_id=ids[0], text=text, prob=None, logprob=None, rank=None, entropy=None,
                           sampled_prob=None, alternatives=(), position=0, is_prompt=True, partial=partial,
                           sampling=params)]
        if len(ids) == 1:
            return steps
        scored: Scored = {}
        if self.model.caps.echo is not None:  # else the model's notices say that prompts are not scored
            try:
                scored = self._echo(ids)
            except ServerError as error:
                self._warn(f"The prompt could not be scored: {error}")
        for k in range(1, len(ids)):
            logprob, dist, rank = scored.get(k, (None, _Dist(), None))
            steps.append(make_step(self.model, ids[k], logprob, dist, k, params, is_prompt=True, rank=rank))
        return steps

    def _echo(self, ids: list[int]) -> Scored:
        model, caps = self.model, self.model.caps
        # llama-cpp-python pairs echo entries with the right rows only when it strips a leading BOS
        shifted = caps.echo == "shifted" and not (model.bos_token_id is not None and ids[0] == model.bos_token_id)
        asked = caps.deep if shifted else TOP_N
        body = model.body(self.prompt(ids), max_tokens=1, logprobs=asked, params=None, echo=True)
        if caps.prompt_logprobs:  # vLLM: exact ranks too; it also sets the size of the echoed top lists
            body["prompt_logprobs"] = asked
        choice = self.request(body)
        entries = model.parse(choice)
        pairs = align(entries, ids, model.vocab)
        if pairs is None:
            self._warn("The server read the prompt as different tokens, so the prompt's tokens show no "
                       "probabilities.")
            return {}
        out: Scored = {}
        ranks = _prompt_ranks(choice.get("prompt_logprobs"), ids) if caps.prompt_logprobs else {}
        for j, k in pairs:
            entry = entries[j]
            if entry.top is None:
                continue
            dist = _Dist.from_top(entry.top, asked)
            if shifted:  # entry k holds the distribution after token k, i.e. for token k + 1
                if k + 1 < len(ids):
                    out[k + 1] = (dist.logprob_of(ids[k + 1]), dist, None)
            elif k >= 1:
                out[k] = (entry.logprob, dist, ranks.get(k))
        if 1 not in out and len(ids) > 1:  # servers leave the first echo entry empty: ask for it alone
            body = model.body(self.prompt(ids[:1]), max_tokens=1, logprobs=asked, params=None)
            first = model.parse(self.request(body))
            if first and first[0].top is not None:
                dist = _Dist.from_top(first[0].top, asked)
                out[1] = (dist.logprob_of(ids[1]), dist, None)
        return out
