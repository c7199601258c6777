"""The contract between the page and the engines: a backend offers models, a model starts sessions.

The local engine (`engine/`), the remote one (`engine/remote/`) and the test fake all subclass these
Protocols explicitly, so a missing method fails when the class is instantiated (abstract members), not
when a user clicks. What a backend can do is declared in `Capabilities`, which the page reads instead of
probing for attributes. Nothing here imports torch or NiceGUI.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .compare import TokenScore, score_by_session
from .errors import TokvizError
from .types import Branch, LayerRow, ModelInfo, SamplingParams, SessionSnapshot, TokenStep
from .windows import WindowScore, score_by_sessions

Progress = Callable[[float | None, str], None]  # (fraction or None, message), from a worker thread
StopCheck = Callable[[], bool]
PrefillProgress = Callable[[int, int], None]  # (prompt tokens scored, total), from a worker thread
Scored = tuple[int, float | None, int | None, float | None]  # (token_id, prob, rank, sampled_prob)


@dataclass(frozen=True)
class Capabilities:
    """What a model's sessions can do; the page shows or hides features by these flags."""

    streams: bool = False  # Generate to End is one streaming `generate()` call (a server request), not steps
    exact_entropy: bool = True  # entropy over the whole vocabulary (False: from the few tokens a server returns)
    full_vocabulary_rank: bool = True  # rank of any token (False: unknown beyond the returned alternatives)
    vocabulary_search: bool = True  # `find_tokens` + `Session.score` work for any token
    layer_access: bool = False  # `Session.layer_lens` / `decided_layers` work (the logit lens)
    layer_count: int = 0  # blocks the lens sees: its rows are layers 0 (embeddings) .. layer_count
    layer_note: str = ""  # why not, a sentence for the page, where layer_access is off (see `layers_hidden`)
    chat_template: bool = False  # `Model.start_chat` works: the model's tokenizer has a chat template
    what_if: bool = False  # `Session.what_if` works: the text replayed under other sampling settings
    text_scoring: bool = True  # `Model.score_ids` works (False: a server that does not score prompts)


@dataclass(frozen=True)
class ScoreReference:
    """The other side of a comparison for `Model.score_ids`: `model` reading `ids`, whose token ids[start + k] is
    the k-th scored token; its distribution there is the reference P of KL(P ‖ Q)."""

    model: Model
    ids: list[int]
    start: int


def layers_hidden(model: Model) -> str:
    """Why `model`'s layers cannot be seen: its own note, or a plain sentence."""
    return model.capabilities.layer_note or f"{model.label} cannot show its layers."


@runtime_checkable
class Session(Protocol):
    """One text being generated: prompt tokens, generated tokens of the active branch, and the tree."""

    model: Model
    params: SamplingParams  # settings for the next steps (assignable)
    tokens: list[TokenStep]  # the active branch's generated tokens; position = index
    prompt_tokens: list[TokenStep]
    finish_reason: str | None  # "eos", "length", "context", "stopped" after generate()
    warnings: list[str]  # caveats about this session's numbers, for the page (e.g. a server's text prompts)
    messages: list[dict[str, str]] | None = None  # the chat it was started from (`Model.start_chat`); None: a prompt

    # read-only views, provided for every session by `core.branch_tree.BranchTree`
    closed: bool
    token_ids: list[int]  # prompt + generated ids (a copy)
    text: str  # the exact decoded text (an added BOS left out)
    branches: list[Branch]
    active_branch: Branch

    @abstractmethod
    def step(self) -> TokenStep:
        """Draw one token with `params`; raises ContextFullError when the window is full."""

    @abstractmethod
    def generate(self, max_new_tokens: int, *, should_stop: StopCheck | None = None,
                 on_token: Callable[[TokenStep], None] | None = None) -> list[TokenStep]:
        """Up to `max_new_tokens` tokens, stopping after end-of-text or when `should_stop()` turns true."""

    @abstractmethod
    def choose(self, position: int, token_id: int) -> TokenStep:
        """Replace generated token `position` (or force the next one at `len(tokens)`); the old text
        stays a branch."""

    @abstractmethod
    def score(self, position: int, token_ids: list[int]) -> list[Scored]:
        """(token_id, prob, rank, sampled_prob) of any tokens at generated `position`: the raw probability and
        the one after the samplers that token was drawn with (the session's `params` at `len(tokens)`)."""

    @abstractmethod
    def switch_branch(self, branch_id: int) -> list[TokenStep]: ...

    @abstractmethod
    def truncate(self, n_tokens: int) -> None:
        """Keep the first `n_tokens` generated tokens."""

    @abstractmethod
    def is_eos(self, step: TokenStep) -> bool: ...

    @abstractmethod
    def close(self) -> None:
        """Free the session's memory (KV cache); later calls raise TokvizError."""

    def layer_lens(self, position: int, *, prompt: bool = False) -> list[LayerRow]:
        """The logit lens at generated token `position` (prompt token `position` >= 1 when `prompt`): one row
        per layer, embeddings first, each the model's final norm and output head applied to that layer's hidden
        state; the last row is the token's own distribution. Where `capabilities.layer_access`."""
        raise TokvizError(layers_hidden(self.model))

    def decided_layers(self, *, prompt: bool = False) -> list[int | None]:
        """Per generated token (per prompt token when `prompt`, the first None): the first layer from which it
        was the lens's top-1 through the last layer; None where it is not the model's top-1. Where
        `capabilities.layer_access`."""
        raise TokvizError(layers_hidden(self.model))

    def what_if(self, params: SamplingParams, *, prompt: bool = False) -> list[float | None]:
        """Per generated token (per prompt token when `prompt`, the first None): the probability it would have had
        under `params` instead of the settings it was drawn with; 0 where `params` make it impossible. Nothing is
        generated and no token changes. Where `capabilities.what_if`."""
        raise TokvizError(f"{self.model.label} cannot replay its text under other sampling settings.")

    def snapshot(self, prompt: str | None = None) -> SessionSnapshot:
        """The session frozen for export (tokens, numbers, branches)."""
        m = self.model
        return SessionSnapshot(
            model={"key": m.key, "label": m.label, "source": m.source},
            settings=self.params,
            prompt=prompt if prompt is not None else m.decode(self.token_ids[: len(self.prompt_tokens)]),
            prompt_ids=[t.token_id for t in self.prompt_tokens],
            prompt_tokens=list(self.prompt_tokens),
            branches=[b.copy() for b in self.branches],
            active=self.active_branch.id,
            messages=None if self.messages is None else [dict(m) for m in self.messages],
        )


@runtime_checkable
class Model(Protocol):
    """A loaded model, shared by every tab; thread-safe."""

    key: str
    label: str
    source: str
    device: str
    dtype: str
    context_length: int | None  # None where a server does not say
    vocab_size: int | None
    eos_token_ids: frozenset[int]
    bos_token_id: int | None  # the token a text is scored after (None: the model has none)
    capabilities: Capabilities
    notices: list[str]  # what the page should say about this model's numbers

    def background_work(self) -> str:
        """What the model is still preparing while it already serves (e.g. "optimising…"); "" when nothing."""
        return ""

    @abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abstractmethod
    def decode(self, ids: list[int]) -> str: ...

    @abstractmethod
    def token_text(self, token_id: int) -> tuple[str, bool]:
        """(readable text, partial-UTF-8 flag) of one token."""

    @abstractmethod
    def start(self, prompt: str, params: SamplingParams | None = None, *,
              should_stop: StopCheck | None = None, progress: PrefillProgress | None = None) -> Session:
        """A session with every prompt token scored; CancelledWork when `should_stop()` turns true.
        `progress(scored, total)` is called as the prompt is scored (at least once: at the end)."""

    @abstractmethod
    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: StopCheck | None = None) -> Session:
        """A session whose prompt is these token ids (no tokenizer involved)."""

    @abstractmethod
    def start_chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None, *,
                   should_stop: StopCheck | None = None) -> Session:
        """A session whose prompt is `messages` ({"role": "system" | "user" | "assistant", "content": text})
        rendered to token ids by the model's chat template with the generation prompt; it ends at the
        end-of-turn token (one of `eos_token_ids`) and keeps the messages in `session.messages`. Raises
        TokvizError where `capabilities.chat_template` is False or the messages are not a chat
        (`core.chat.check_messages`)."""

    @abstractmethod
    def restore(self, snapshot: SessionSnapshot) -> Session:
        """A live session from a snapshot, without re-scoring (its `messages` included)."""

    @abstractmethod
    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        """Vocabulary search by readable text."""

    @abstractmethod
    def info(self) -> ModelInfo: ...

    def score_ids(self, ids: list[int], start: int = 1, *, top_n: int = 5, reference: ScoreReference | None = None,
                  should_stop: StopCheck | None = None) -> list[TokenScore]:
        """The tokens ids[start:] (start >= 1), each scored after all the ids before it: log-prob and rank at
        temperature 1 and the `top_n` most likely tokens; with `reference` (aligned token for token), the KL
        divergence KL(reference ‖ this model) in bits where both distributions are known. Where
        `capabilities.text_scoring`. This default reads a session's prompt scores (a server's echo) and takes
        the KL from top lists (`core.compare.kl_from_lists`); the local engine computes it over the vocabulary."""
        return score_by_session(self, ids, start, top_n=top_n, reference=reference, should_stop=should_stop)

    def score_windows(self, windows: Sequence[Sequence[int]], *,
                      done: Callable[[int], None] | None = None) -> list[list[WindowScore]]:
        """For each window of ids, (log-prob, rank, entropy in bits) of ids[p] predicted from ids[:p], for every p
        (UNSCORED at p = 0); `done(i)` once window i is scored. Where `capabilities.text_scoring`. This default
        runs one session per window, a few at a time (`core.windows`); the local engine pads many windows into
        one forward pass."""
        return score_by_sessions(self, windows, done=done)

    def score_text(self, text: str, params: SamplingParams, *, should_stop: StopCheck | None = None) -> Session:
        """Every token of `text` scored, as a session whose generated tokens are the text after its first
        token: the user can branch from any of them and keep generating."""
        scored = self.start(text, params, should_stop=should_stop)
        try:
            steps, ids = list(scored.prompt_tokens), scored.token_ids
        finally:
            scored.close()
        generated = [step.as_generated(i) for i, step in enumerate(steps[1:])]
        return self.restore(SessionSnapshot(model={}, settings=params, prompt=text, prompt_ids=ids[:1],
                                            prompt_tokens=steps[:1], branches=[Branch(0, generated)], active=0))


@runtime_checkable
class Backend(Protocol):
    """A source of models: the local engine, or the models of `--server` URLs. The manager asks each
    backend in turn whether it `handles` a name; nothing else distinguishes them."""

    @abstractmethod
    def handles(self, name: str) -> bool: ...

    @abstractmethod
    def catalog(self) -> list[ModelInfo]: ...

    @abstractmethod
    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """Check a name (and offer it to every tab when `offer`); raises ModelNotFoundError."""

    @abstractmethod
    def load(self, name: str, progress: Progress | None = None) -> Model: ...

    @abstractmethod
    def unload(self, name: str) -> None: ...

    @abstractmethod
    def loaded(self) -> list[Model]: ...

    def health(self) -> list[dict]:
        """Per-server state for /healthz (backends without servers: none)."""
        return []


@runtime_checkable
class ModelRegistry(Protocol):
    """What the page needs from the process-wide model manager (the engine's `ModelManager`, or a test's)."""

    device: str  # the device asked for local models: "auto", "cpu", "cuda", …

    @abstractmethod
    def catalog(self) -> list[ModelInfo]: ...

    @abstractmethod
    def default_key(self) -> str: ...

    @abstractmethod
    def add(self, name: str, *, offer: bool = True) -> ModelInfo: ...

    @abstractmethod
    def load(self, name: str, progress: Progress | None = None) -> Model: ...

    @abstractmethod
    def loaded(self) -> list[Model]: ...

    def health(self) -> list[dict]:
        return []
