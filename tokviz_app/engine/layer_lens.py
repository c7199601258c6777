"""The logit lens: what the model would predict after each layer, for any token of a session.

Layer 0 is the embeddings, layer k the output of block k. Each layer's hidden state at the position before
the token goes through the model's own final norm and output head (its modules, so a CPU kernel layout
chosen by `kernels.py` applies as it does in every forward pass). transformers' last hidden state already
has the final norm applied (GPT-2 and Llama alike: `last_hidden_state`), so the last layer is the model's own
output; its row shows the token's own numbers (`own_row`), the ones its `TokenStep` shows.

One plain forward pass of the shared model with `output_hidden_states=True` over the session's ids (chunked
with a private cache, so a long text never builds a [T, T] attention at once), run in the calling thread: the
session's KV cache and the lane's resident rows are not touched. Its hidden states give every position's rows,
so they are kept (up to MAX_KEPT_BYTES) until the text before the asked position changes.

"Decided at layer k": the first layer from which the token is the lens's top-1 (no strictly more likely
token) through the last layer; None where the model's own top-1 is another token (its rank, as the page shows
it, is not 1). Found from the last layer down, where only positions still top-1 go on to the next layer: a
token that is not the model's top-1 costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import metrics
from ..core.contract import layers_hidden
from ..core.errors import PositionError, TokvizError
from ..core.types import Alternative, LayerRow
from .openmp import on_passing_thread

LENS_TOP = 5  # tokens listed per layer
FORWARD_CHUNK = 512  # tokens per forward: bounds attention memory on long texts
MAX_KEPT_BYTES = 256 * 2**20  # hidden states kept per session; beyond this each position runs its own pass
LOGITS_PER_BATCH = 2**24  # floats of lens logits at once while finding decided layers (64 MB in float32)
# attribute names of the final norm on the base model (GPT-2/Bloom/Falcon, Llama/Mistral/Qwen, NeoX/OPT, Phi, MPT)
NORM_NAMES = ("ln_f", "norm", "final_layer_norm", "final_layernorm", "norm_f")
# config fields that make the logits more than the head's output: the lens would not end at the model's own
SCALED_HEAD = ("final_logit_softcapping", "logit_scale", "logits_scaling")


@dataclass
class Lens:
    """How to apply one model's final norm and output head to its hidden states."""

    hf_model: torch.nn.Module
    base: torch.nn.Module  # the model without its head: returns hidden states
    norm_owner: torch.nn.Module
    norm_name: str
    layers: int  # blocks; the lens has layers + 1 rows
    device: str

    def norm(self, hidden: torch.Tensor) -> torch.Tensor:
        return getattr(self.norm_owner, self.norm_name)(hidden)

    def head(self, normed: torch.Tensor) -> torch.Tensor:
        """float32 logits; through the model's current head module (kernel layouts swap modules)."""
        return self.hf_model.get_output_embeddings()(normed.unsqueeze(0))[0].float()

    def state_bytes(self, tokens: int) -> int:
        config = self.hf_model.config.get_text_config()
        element = next(self.base.parameters()).element_size()
        return (self.layers + 1) * tokens * int(config.hidden_size) * element

    def hidden_states(self, ids: list[int]) -> list[torch.Tensor]:
        """Per layer [T, d]: the embeddings and block outputs 0 .. layers - 1 as they are, the last normed."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.hf_model.config)
        parts: list[tuple[torch.Tensor, ...]] = []
        with torch.inference_mode():
            for start in range(0, len(ids), FORWARD_CHUNK):
                chunk = torch.tensor([ids[start : start + FORWARD_CHUNK]], device=self.device)
                out = self.base(input_ids=chunk, cache=cache, use_cache=True, output_hidden_states=True)
                if out.hidden_states is None or len(out.hidden_states) != self.layers + 1:
                    raise TokvizError("This model did not return one hidden state per layer: its layers cannot "
                                      "be shown.")
                parts.append((*out.hidden_states[:-1], out.last_hidden_state))
        return [torch.cat([p[k][0] for p in parts]) if len(parts) > 1 else parts[0][k][0]
                for k in range(self.layers + 1)]

    def layer_logits(self, states: list[torch.Tensor], k: int, rows: torch.Tensor | slice) -> torch.Tensor:
        """Lens logits [n, V] of layer k at the given rows."""
        hidden = states[k][rows]
        return self.head(hidden if k == self.layers else self.norm(hidden.unsqueeze(0))[0])

    def rows(self, states: list[torch.Tensor], row: int, target: int, texts) -> list[LayerRow]:
        """The lens at hidden-state `row` (the prediction of the token `target` after it)."""
        with torch.inference_mode():
            hidden = torch.stack([s[row] for s in states])  # [layers + 1, d]
            normed = torch.cat([self.norm(hidden[:-1].unsqueeze(0))[0], hidden[-1:]])
            logits = self.head(normed).cpu()
            logprobs = metrics.log_softmax(logits)
            probs = logprobs.exp()
            ranks = metrics.ranks(logits, torch.full((len(logits),), target, dtype=torch.long))
            entropy = metrics.entropy_bits(logprobs, probs)
            top_probs, top_ids = probs.topk(min(LENS_TOP, probs.shape[-1]), dim=-1)
        out = []
        for k, (ids, ps) in enumerate(zip(top_ids.tolist(), top_probs.tolist())):
            top = tuple(Alternative(i, texts(i)[0], p, None) for i, p in zip(ids, ps))
            out.append(LayerRow(k, top, int(ranks[k]), float(probs[k, target]), float(entropy[k])))
        return out

    def decided(self, states: list[torch.Tensor], ids: list[int], at_output: list[bool | None]) -> list[int | None]:
        """For the tokens ids[1:]: the first layer from which each was top-1 through the last layer. `at_output`:
        whether each is the model's top-1, from the session's own numbers (so the heatmap agrees with the rank
        the page shows); None where unknown, then the last layer decides."""
        count = len(ids) - 1
        targets = torch.tensor(ids[1:], dtype=torch.long, device=states[0].device)
        unknown = torch.tensor([i for i, top in enumerate(at_output) if top is None], dtype=torch.long,
                               device=targets.device)
        known = [i for i, top in enumerate(at_output) if top]
        decided: list[int | None] = [None] * count
        with torch.inference_mode():
            active = torch.cat([torch.tensor(known, dtype=torch.long, device=targets.device),
                                unknown[self._top1(states, self.layers, unknown, targets)]]).sort().values
            for k in range(self.layers, -1, -1):
                if k < self.layers:
                    active = active[self._top1(states, k, active, targets)]
                if not len(active):
                    break
                for row in active.tolist():
                    decided[row] = k
        return decided

    def _top1(self, states: list[torch.Tensor], k: int, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Whether each row's token is layer k's top-1 (no strictly more likely token), in batches of rows."""
        batch = max(1, LOGITS_PER_BATCH // int(self.hf_model.config.get_text_config().vocab_size))
        return torch.cat([self._is_top1(states, k, rows[i : i + batch], targets) for i in range(0, len(rows), batch)]
                         or [torch.zeros(0, dtype=torch.bool, device=targets.device)])

    def _is_top1(self, states: list[torch.Tensor], k: int, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.layer_logits(states, k, rows)
        return logits.gather(-1, targets[rows].unsqueeze(-1)).squeeze(-1) >= logits.amax(-1)  # rank 1: none above


def find_lens(hf_model, device: str) -> tuple[Lens | None, str]:
    """The lens for a loaded causal LM, or None and the sentence that says why its layers cannot be shown."""
    config = hf_model.config.get_text_config()
    if any(getattr(config, name, None) not in (None, 1, 1.0) for name in SCALED_HEAD):
        return None, "This model rescales its output after the head: its layers cannot be shown exactly."
    base = getattr(hf_model, "base_model", None)
    head = hf_model.get_output_embeddings() if hasattr(hf_model, "get_output_embeddings") else None
    layers = getattr(config, "num_hidden_layers", None)
    if base is None or base is hf_model or head is None or not isinstance(layers, int):
        return None, "tokviz cannot find this model's output head: its layers cannot be shown."
    for owner in (base, getattr(base, "decoder", None)):
        if owner is None or getattr(owner, "project_out", None) is not None:  # OPT-350m projects after the norm
            continue
        name = next((n for n in NORM_NAMES if isinstance(getattr(owner, n, None), torch.nn.Module)), None)
        if name is not None:
            return Lens(hf_model, base, owner, name, layers, device), ""
    return None, "tokviz cannot find this model's final norm: its layers cannot be shown."


def own_row(computed: LayerRow, step) -> LayerRow:
    """The last row from the token's own numbers: the same distribution (the model's output) that the session
    computed for its TokenStep, so the panel never shows two values for one probability. A separate forward pass
    differs from the cached steps by float32 rounding (SmolLM2: 2e-5 bits of entropy); tests check both against
    the independent reference."""
    if step.prob is None or step.rank is None or step.entropy is None or len(step.alternatives) < LENS_TOP:
        return computed
    top = tuple(Alternative(a.token_id, a.text, a.prob, None) for a in step.alternatives[:LENS_TOP])
    return LayerRow(computed.layer, top, step.rank, step.prob, step.entropy)


@dataclass
class _Kept:
    """One forward pass's results for a session: valid for any text that starts with `fed`'s prefix."""

    fed: list[int]
    states: list[torch.Tensor] | None  # None: too large to keep
    rows: dict[tuple[int, int], list[LayerRow]] = field(default_factory=dict)  # (index, token id) -> rows
    decided: tuple[list[int], list[int | None]] | None = None  # (the ids, per token after the first)

    def covers(self, ids: list[int], index: int) -> bool:
        """The hidden state before ids[index] is in this pass."""
        return len(self.fed) >= index and self.fed[:index] == ids[:index]


class SessionLayers:
    """`layer_lens` and `decided_layers` for `GenerationSession` (mixed in; it has `model`, `tokens`, `_ids`,
    `_n_prompt`, `_lock` and `_check_open`). The kept pass lives as long as the session."""

    _kept: _Kept | None = None

    @on_passing_thread  # a forward pass and a head over every layer
    def layer_lens(self, position: int, *, prompt: bool = False) -> list[LayerRow]:
        with self._lock:
            self._check_open()
            lens, ids = self._lens(), list(self._ids)
            index = self._lens_index(position, prompt)
            kept, key, states = self._kept, (index, ids[index]), None
            if kept is not None and kept.covers(ids, index):
                if key in kept.rows:
                    return list(kept.rows[key])
                states = kept.states
            if states is None:
                kept, states = self._lens_pass(lens, ids, index)
            rows = lens.rows(states, index - 1, ids[index], self.model.token_text)
            kept.rows[key] = rows = [*rows[:-1], own_row(rows[-1], self._step_at(index))]
            return list(rows)

    @on_passing_thread
    def decided_layers(self, *, prompt: bool = False) -> list[int | None]:
        with self._lock:
            self._check_open()
            lens, ids = self._lens(), list(self._ids)
            kept = self._kept
            if kept is None or kept.decided is None or kept.decided[0] != ids:
                states = kept.states if kept is not None and kept.covers(ids, len(ids) - 1) else None
                if states is None:
                    kept, states = self._lens_pass(lens, ids, len(ids) - 1)
                at_output = [None if s.rank is None else s.rank == 1 for s in [*self.prompt_tokens[1:], *self.tokens]]
                kept.decided = (ids, lens.decided(states, ids, at_output))
            every, n = kept.decided[1], self._n_prompt
            return [None, *every[: n - 1]] if prompt else every[n - 1 :]

    # ------------------------------------------------------------------ internals
    def _lens(self) -> Lens:
        lens = getattr(self.model, "lens", None)
        if lens is None or not self.model.capabilities.layer_access:
            raise TokvizError(layers_hidden(self.model))
        return lens

    def _step_at(self, index: int):
        return self.prompt_tokens[index] if index < self._n_prompt else self.tokens[index - self._n_prompt]

    def _lens_index(self, position: int, prompt: bool) -> int:
        """The index in `_ids` of generated (or prompt) token `position`."""
        if prompt:
            if not 1 <= position < self._n_prompt:
                raise PositionError("The first prompt token has no prediction: it has no layers to show."
                                    if position == 0 else f"There is no prompt token at position {position}.")
            return position
        if not 0 <= position < len(self.tokens):
            raise PositionError(f"There is no generated token at position {position}.")
        return self._n_prompt + position

    def _lens_pass(self, lens: Lens, ids: list[int], index: int) -> tuple[_Kept, list[torch.Tensor]]:
        """One pass over the whole text (every later position comes from it) where its states can be kept,
        else over the prefix the asked position needs (and nothing kept but the rows)."""
        whole = ids[:-1] if len(ids) > 1 else ids
        keep = lens.state_bytes(len(whole)) <= MAX_KEPT_BYTES
        fed = whole if keep else ids[: max(index, 1)]
        states = lens.hidden_states(fed)
        self._kept = _Kept(fed, states if keep else None)
        return self._kept, states
