"""Plain data the engine hands out: frozen, picklable, free of torch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .compare import Comparison


MAX_TOP_N = 20  # the most alternatives a token lists (OpenAI's `top_logprobs` ceiling)
DROP_REASONS = ("greedy", "top-k", "top-p", "min-p", "typical")  # the samplers that can drop a token


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is drawn. `top_k=0`, `top_p=1.0`, `min_p=0.0`, `typical_p=1.0` and
    `repetition_penalty=1.0` mean "off". They apply in transformers' order (`engine/metrics.py`):
    repetition penalty → temperature → top-k → top-p → min-p → typical. `top_n` is no sampler: how
    many alternatives each token lists (10, up to 20)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    greedy: bool = False
    min_p: float = 0.0  # keep tokens with p >= min_p * p_max (after temperature)
    typical_p: float = 1.0  # locally typical sampling's mass
    repetition_penalty: float = 1.0  # every id in the context: logit / penalty if logit > 0, else logit * penalty
    top_n: int = 10

    def __post_init__(self) -> None:
        if not self.greedy and not self.temperature > 0:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax)")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be in [0, 1]")
        if not 0 < self.typical_p <= 1:
            raise ValueError("typical_p must be in (0, 1]")
        if not 0 < self.repetition_penalty < float("inf"):
            raise ValueError("repetition_penalty must be > 0")
        if not 1 <= self.top_n <= MAX_TOP_N:
            raise ValueError(f"top_n must be in [1, {MAX_TOP_N}]")

    @property
    def plain(self) -> bool:
        """Draws from the raw distribution: no temperature, no penalty, no cut."""
        return (not self.greedy and self.temperature == 1.0 and self.top_k == 0 and self.top_p >= 1.0
                and self.min_p == 0.0 and self.typical_p >= 1.0 and self.repetition_penalty == 1.0)


@dataclass(frozen=True)
class Alternative:
    """One of the most likely tokens at a position."""

    token_id: int
    text: str
    prob: float
    sampled_prob: float | None  # None where a remote server cannot tell
    dropped_by: str | None = None  # "greedy", "top-k", "top-p", "min-p", "typical"; None: kept (or unknown)


@dataclass(frozen=True)
class LayerRow:
    """The logit lens at one layer for one token: the model's own final norm and output head applied to
    that layer's hidden state at the position before the token. Layer 0 is the embeddings, layer k the
    output of block k; the last row is the model's own prediction (the token's `prob`, `rank`, `entropy`)."""

    layer: int
    top: tuple[Alternative, ...]  # the 5 most likely tokens at this layer (`sampled_prob` None: no sampling here)
    token_rank: int  # 1 = the most likely at this layer
    token_prob: float
    entropy: float  # bits


@dataclass(frozen=True)
class TokenStep:
    """Everything known about one token at one position.

    `prob`/`logprob`/`rank`/`entropy` come from the model's raw distribution at
    temperature 1; `sampled_prob` from the distribution after the session's sampling
    settings. For the very first prompt token the model has no prediction: those
    fields are None and `alternatives` is empty.
    """

    token_id: int
    text: str  # readable: partial UTF-8 bytes shown as a byte marker like ‹F0 9F›
    prob: float | None
    logprob: float | None
    rank: int | None  # 1 = most likely, over the whole vocabulary
    entropy: float | None  # bits
    sampled_prob: float | None
    alternatives: tuple[Alternative, ...] = ()
    position: int = 0  # 0-based among generated tokens (or among prompt tokens when is_prompt)
    is_prompt: bool = False
    partial: bool = False  # the token's bytes are not complete UTF-8 on their own
    sampling: SamplingParams | None = None  # settings the token was drawn or scored with
    kept_count: int | None = None  # tokens with non-zero sampled probability here; None where unknown
    kept_mass: float | None = None  # their share of the raw probability mass

    def as_generated(self, position: int) -> TokenStep:
        """The same token and numbers as generated token `position` (scored text becomes a session's text)."""
        return replace(self, is_prompt=False, position=position)

    @property
    def surprisal(self) -> float | None:
        """-log2 p: bits of surprise."""
        return None if self.logprob is None else -self.logprob / 0.6931471805599453


@dataclass(frozen=True)
class ModelInfo:
    """What the page shows about a model before and after loading."""

    key: str
    label: str
    source: str  # hub id, local folder, or bundled GGUF path
    description: str = ""
    status: str = ""  # "cached", "bundled", "download", "local folder", "loaded"
    extra: dict = field(default_factory=dict)


@dataclass
class Branch:
    """One continuation in the branch tree. Branch 0 is the root; a branch made by
    choosing an alternative at `split` shares its parent's tokens before `split`."""

    id: int
    tokens: list[TokenStep]
    parent: int | None = None
    split: int = 0

    def copy(self) -> Branch:
        """A copy whose token list can change without touching this one (the steps are immutable)."""
        return Branch(self.id, list(self.tokens), self.parent, self.split)

    @property
    def logprob(self) -> float:
        """Total natural log-probability of the branch's generated tokens."""
        return sum(t.logprob for t in self.tokens if t.logprob is not None)

    @property
    def perplexity(self) -> float | None:
        import math

        return math.exp(-self.logprob / len(self.tokens)) if self.tokens else None

    @property
    def first_token(self) -> TokenStep | None:
        """The first token where it differs from its parent."""
        return self.tokens[self.split] if self.split < len(self.tokens) else None


@dataclass
class SessionSnapshot:
    """A session frozen in time: what export writes, import reads and `Model.restore` takes."""

    model: dict
    settings: SamplingParams
    prompt: str
    prompt_ids: list[int]
    prompt_tokens: list[TokenStep]
    branches: list[Branch]
    active: int = 0
    extra: dict = field(default_factory=dict)
    messages: list[dict[str, str]] | None = None  # the chat the session was started from; None: a plain prompt
    compare: Comparison | None = None  # the shown text under a second model or context (exports: optional)

    @property
    def tokens(self) -> list[TokenStep]:
        return self.branches[self.active].tokens
