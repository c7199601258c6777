"""What-if replay (issue 14): the probability each token of a text would have had under other sampling settings,
without generating anything and without changing a token.

One re-scoring pass: a plain forward of the shared model over the session's ids (chunks of FORWARD_CHUNK with a
private cache, in the calling thread, like the layer lens: the lane's resident rows are not touched). Keeping its
[T, V] float32 logits would answer every later question from memory, but costs 200 MB for 1,000 tokens of GPT-2,
so each row (the prediction of the token after it) keeps only
  - its KEPT + 1 largest logits with their ids, by value and then id (the order the samplers break ties in),
  - the mass of the other tokens at temperature 1: sum(exp(z - z_max)) over all but the first KEPT,
  - the logit of the token that is there,
  - and the final hidden state, where the model's head reproduces the logits from it (checked on the first rows)
    and the states fit MAX_HIDDEN_BYTES.
From these (`what_if_kept.py`) the samplers are decided exactly wherever their cut falls inside the kept tokens:
top-k with k <= KEPT (everything after it then works on kept tokens only); min-p, whose test p >= min_p * p_max needs
no normaliser, where its line lies above the (KEPT + 1)-th logit; top-p where the nucleus ends inside the kept
tokens. At a temperature T the other tokens' mass is only bounded (each of their logits is at most the (KEPT + 1)-th
one, and power means bound sum(x^(1/T)) by sum(x)), so a top-p cut is taken only where the whole interval gives the
same cut, MARGIN away from the line (the samplers themselves compare float32 sums). After such a cut the
probabilities are a softmax over kept tokens: exact. Greedy, and temperature 1 with no cut, are exact too; a
temperature with no cut needs the whole vocabulary's normaliser and is taken where the bounds agree to EXACT.
The first call answers from the pass's own logits, as it goes.
Every other row is recomputed: its logits from the kept hidden state by the output head alone (for GPT-2 a third of
a forward pass), or by a new forward pass where no hidden state is kept, then `metrics.samplers`, the code that
sampled the tokens. The repetition penalty and typical sampling need the whole distribution: always recomputed.
"""

from __future__ import annotations

import math

import torch

from . import metrics
from ..core.types import SamplingParams
from .what_if_kept import Replay, from_kept
from .openmp import on_passing_thread

KEPT = 256  # logits kept per position
FORWARD_CHUNK = 512  # tokens per forward pass: bounds the [chunk, V] logits
HEAD_CHUNK = 128  # rows recomputed at once: [128, V] logits and the samplers' temporaries
MAX_HIDDEN_BYTES = 64 * 2**20  # final hidden states kept per session; beyond, a recomputation is a forward pass
RESULTS = 16  # settings remembered per text (moving back to a setting costs nothing)


# ------------------------------------------------------------------------------------------- the pass
def rescore(hf_model, device: str, ids: list[int], kept: int = KEPT,
            params: SamplingParams | None = None) -> tuple[Replay, list[float] | None, int]:
    """One chunked forward pass over `ids` (the last id is only a target), summarised per row; with `params`, also
    the answer for them (rows the kept logits cannot decide straight from the logits in hand) and how many rows
    that took."""
    from transformers import DynamicCache

    fed, head = ids[:-1], hf_model.get_output_embeddings()
    keep_hidden = head is not None
    parts: list[tuple[torch.Tensor, ...]] = []
    states: list[torch.Tensor] = []
    answers: list[float] = []
    vocab, sampled = int(hf_model.config.get_text_config().vocab_size), 0
    with torch.inference_mode():
        cache = DynamicCache(config=hf_model.config)
        for start in range(0, len(fed), FORWARD_CHUNK):
            chunk = fed[start : start + FORWARD_CHUNK]
            out = hf_model(input_ids=torch.tensor([chunk], device=device), cache=cache, use_cache=True,
                           output_hidden_states=keep_hidden)
            logits = out.logits[0].float()
            vocab = logits.shape[-1]  # the head's width (some models pad it past the tokenizer)
            if keep_hidden:
                hidden = out.hidden_states[-1][0]
                keep_hidden = start > 0 or _head_matches(head, hidden[:2], logits[:2])
                states.append(hidden.clone())
            targets = torch.tensor(ids[start + 1 : start + 1 + len(chunk)], device=logits.device)
            parts.append(summarise(logits, targets, kept))
            if params is not None:
                p, undecided = from_kept(Replay(ids[start : start + len(chunk) + 1], *parts[-1], None, vocab), params)
                rows = undecided.nonzero()[:, 0].tolist()
                for first in range(0, len(rows), HEAD_CHUNK):
                    some = rows[first : first + HEAD_CHUNK]
                    p[some] = torch.tensor(_sampled(logits[torch.tensor(some, device=logits.device)],
                                                    [start + row for row in some], ids, params), dtype=p.dtype)
                answers += p.tolist()
                sampled += len(rows)
            del out, logits
    if not parts:
        empty = torch.empty(0, kept + 1)
        replay = Replay(list(ids), empty, empty.long(), torch.empty(0, dtype=torch.float64), torch.empty(0), None, vocab)
        return replay, answers if params is not None else None, 0
    values, token_ids, rest, target = (torch.cat(column) for column in zip(*parts))
    hidden = torch.cat(states) if keep_hidden and states else None
    if hidden is not None and hidden.numel() * hidden.element_size() > MAX_HIDDEN_BYTES:
        hidden = None
    return Replay(list(ids), values, token_ids, rest, target, hidden, vocab), \
        answers if params is not None else None, sampled


def _head_matches(head, hidden: torch.Tensor, logits: torch.Tensor) -> bool:
    """The output head applied to the last hidden state gives the model's logits (no scaling or capping after it)."""
    again = head(hidden.unsqueeze(0))[0].float()
    return again.shape == logits.shape and bool(torch.allclose(again, logits, rtol=1e-4,
                                                               atol=1e-4 * (1 + float(logits.abs().max()))))


def summarise(logits: torch.Tensor, targets: torch.Tensor, kept: int) -> tuple[torch.Tensor, ...]:
    """(values, ids, rest, target) of logits [n, V]."""
    vocab = logits.shape[-1]
    target = logits.gather(-1, targets.unsqueeze(-1))[:, 0]
    values, ids = logits.topk(min(kept + 1, vocab), dim=-1)
    ids, by_id = ids.sort(dim=-1)  # ties by id: sort by id, then stably by value
    values, by_value = values.gather(-1, by_id).sort(dim=-1, descending=True, stable=True)
    ids = ids.gather(-1, by_value)
    stored = min(kept, vocab)
    weights = (logits - values[:, :1]).exp_()
    rest = weights.scatter_(-1, ids[:, :stored], 0.0).sum(-1).double()  # float32 terms; MARGIN covers the sum
    if vocab < kept + 1:  # every token is kept: pad to the same width
        pad = kept + 1 - vocab
        values = torch.cat([values, values.new_full((len(values), pad), -math.inf)], -1)
        ids = torch.cat([ids, ids.new_full((len(ids), pad), -1)], -1)
    return values.cpu(), ids.cpu(), rest.cpu(), target.cpu()


# ------------------------------------------------------------------------------------------ recomputed rows
def recomputed(r: Replay, rows: list[int], params: SamplingParams, hf_model, device: str) -> dict[int, float]:
    """Rows' probabilities from their full logits: the head over the kept hidden states, or a new forward pass."""
    out: dict[int, float] = {}
    for chosen, logits in _logit_rows(r, rows, hf_model, device):
        out.update(zip(chosen, _sampled(logits, chosen, r.ids, params)))
    return out


def _sampled(logits: torch.Tensor, rows: list[int], ids: list[int], params: SamplingParams) -> list[float]:
    """The probability of each row's token through `metrics.samplers`, the code that sampled the tokens. The
    repetition penalty needs each row's context: `from_kept` then leaves every row to this, so `rows` run on."""
    context = ids[: rows[-1] + 1] if params.repetition_penalty != 1.0 else ()
    with torch.inference_mode():
        probs = metrics.samplers(logits, params, context).probs
        targets = torch.tensor([ids[row + 1] for row in rows], device=probs.device)
        return probs.gather(-1, targets.unsqueeze(-1))[:, 0].tolist()


def _logit_rows(r: Replay, rows: list[int], hf_model, device: str):
    """(rows, their logits [n, V] float32), a chunk at a time."""
    if not rows:
        return
    with torch.inference_mode():
        if r.hidden is not None:
            head = hf_model.get_output_embeddings()
            for start in range(0, len(rows), HEAD_CHUNK):
                chosen = rows[start : start + HEAD_CHUNK]
                hidden = r.hidden[torch.tensor(chosen, device=r.hidden.device)]
                yield chosen, head(hidden.unsqueeze(0))[0].float()
            return
        from transformers import DynamicCache

        cache, wanted, end = DynamicCache(config=hf_model.config), set(rows), max(rows) + 1
        for start in range(0, end, FORWARD_CHUNK):
            chunk = r.ids[start : min(start + FORWARD_CHUNK, end)]
            logits = hf_model(input_ids=torch.tensor([chunk], device=device), cache=cache, use_cache=True).logits[0]
            chosen = [row for row in range(start, start + len(chunk)) if row in wanted]
            if chosen:
                yield chosen, logits[torch.tensor([c - start for c in chosen], device=logits.device)].float()


class SessionWhatIf:
    """`what_if` for `GenerationSession` (mixed in; it has `model`, `_ids`, `_n_prompt`, `_lock`, `_check_open`).
    The pass lives until the text changes; `what_if_kept` is how many logits a row keeps."""

    what_if_kept = KEPT
    what_if_stats: dict | None = None  # the last call: rows, from the kept logits, recomputed, whether it re-scored
    _replay: Replay | None = None

    @on_passing_thread  # a forward pass over the text
    def what_if(self, params: SamplingParams, *, prompt: bool = False) -> list[float | None]:
        with self._lock:
            self._check_open()
            ids, replay, model = list(self._ids), self._replay, self.model
            if replay is None or replay.ids != ids or replay.kept != self.what_if_kept:
                self._replay = None  # the old pass's memory goes before the new one's comes
                replay, probs, recomputed_rows = rescore(model.hf_model, model.device, ids, self.what_if_kept, params)
                self._replay, rescored = replay, True
            else:
                probs, recomputed_rows, rescored = replay.results.get(params), 0, False
            if probs is None:
                p, undecided = from_kept(replay, params)
                probs, rows = p.tolist(), undecided.nonzero()[:, 0].tolist()
                for row, value in recomputed(replay, rows, params, model.hf_model, model.device).items():
                    probs[row] = value
                recomputed_rows = len(rows)
            replay.results[params] = probs
            replay.results.move_to_end(params)
            while len(replay.results) > RESULTS:
                replay.results.popitem(last=False)
            self.what_if_stats = {"rows": replay.rows, "recomputed": recomputed_rows, "rescored": rescored,
                                  "hidden_kept": replay.hidden is not None}
            n = self._n_prompt
            return [None, *probs[: n - 1]] if prompt else list(probs[n - 1 :])
