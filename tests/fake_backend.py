"""A fake engine with the real interface: ModelManager / LoadedModel / session.

Honest numbers: every step computes a real softmax over a small fixed vocabulary
(words, printable ASCII, 256 byte tokens, end-of-text), so prob, log-prob, rank,
entropy and the sampled distribution are consistent with each other. The logits
depend only on the last two token ids and the position, so runs are reproducible.

It subclasses the contract (`tokviz_app.core.contract`), so it cannot drift from the real backends.
Knobs for UI tests: `streams` (Generate to End as one generate() call), `step_delay` (seconds per step),
`prefill_delay` (seconds per prompt token, scored in chunks with progress and stop checks), `load_delay`,
`eos_at` (force end-of-text at that generated position), and failing catalog entries ("offline-model",
"huge-model"; any unknown name is not found). Chats (`start_chat`) use ChatML over `<|im_start|>` and
`<|im_end|>`, the last two tokens; `chat_template = False` makes a model without a template. The layer lens
(`layer_lens`, `decided_layers`) is synthetic but honest: `tests/fake_layers.py`; `score_ids` (comparisons) is
exact over the fake's own logits: `tests/fake_compare.py`. Each catalog key has its own salt (its own logits).
"""

from __future__ import annotations

import math
import random
import threading
import time
import zlib
from collections.abc import Callable

from tokviz_app.core.errors import (
    CancelledWork,
    ContextFullError,
    ModelLoadError,
    ModelNotFoundError,
    OfflineError,
    PositionError,
    PromptTooLongError,
    TokvizError,
)
from tokviz_app.core.branch_tree import BranchTree
from tokviz_app.core.chat import check_messages, no_template
from tokviz_app.core.contract import Capabilities, Model, ModelRegistry, Session
from tokviz_app.core.types import Alternative, ModelInfo, SamplingParams, SessionSnapshot, TokenStep
from tokviz_app.engine.texts import search_vocabulary
from tests.fake_compare import FakeScoring
from tests.fake_layers import LAYERS, FakeLayers
from tests.fake_sampling import FakeWhatIf, sample

EOS = "<|endoftext|>"
WORDS = [
    EOS, " the", " a", " cat", " dog", " sat", " on", " mat", ".", ",", "\n", " ", "  ", "\t", "The", " quick",
    " brown", " fox", " jumps", " over", " lazy", "<script>", "</script>", " &", " is", " was", " and", " of",
    " to", " in", "Hello", " world", "!", "?", " token", " model", " next", " probability", " green", " red",
    "\n\n", " <b>", "bold", "</b>", " café",
]
PRINTABLE = [chr(c) for c in range(32, 127)]
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]  # ChatML's; after the byte tokens, so no other id moves
TOP_N = 10
PREFILL_CHUNK = 64  # prompt tokens between progress reports and stop checks (the engine: 512, split further)


def _build_vocab() -> tuple[list[str], list[bytes], list[bool]]:
    texts: list[str] = []
    raw: list[bytes] = []
    partial: list[bool] = []
    seen: set[bytes] = set()
    for piece in WORDS + PRINTABLE:
        b = piece.encode("utf-8")
        if b in seen:
            continue
        seen.add(b)
        texts.append(piece)
        raw.append(b)
        partial.append(False)
    for byte in range(256):
        b = bytes([byte])
        if b in seen:
            continue
        seen.add(b)
        texts.append(f"‹{byte:02X}›")
        raw.append(b)
        partial.append(True)
    for piece in CHAT_TOKENS:
        texts.append(piece)
        raw.append(piece.encode("utf-8"))
        partial.append(False)
    return texts, raw, partial


VOCAB_TEXT, VOCAB_BYTES, VOCAB_PARTIAL = _build_vocab()
VOCAB_SIZE = len(VOCAB_TEXT)
_BASE_SIZE = VOCAB_SIZE - len(CHAT_TOKENS)  # the tokens whose logits are drawn (as before the chat tokens)
EOS_ID = 0
IM_START_ID, IM_END_ID = _BASE_SIZE, _BASE_SIZE + 1
_WORD_IDS = list(range(1, len(WORDS)))  # candidates that get boosted
_BY_BYTES = {b: i for i, b in enumerate(VOCAB_BYTES)}
_MAX_PIECE = max(len(b) for b in VOCAB_BYTES)


def tokenize(text: str) -> list[int]:
    """Greedy longest match over the vocabulary's bytes (every byte has a token)."""
    data = text.encode("utf-8")
    ids: list[int] = []
    i = 0
    while i < len(data):
        for length in range(min(_MAX_PIECE, len(data) - i), 0, -1):
            token = _BY_BYTES.get(data[i : i + length])
            if token is not None and (length == 1 or not VOCAB_PARTIAL[token]):
                ids.append(token)
                i += length
                break
    return ids


def chat_prompt(messages: list[dict[str, str]]) -> list[int]:
    """The fake's chat template (ChatML): "<|im_start|>role\ncontent<|im_end|>\n" each, then the generation
    prompt "<|im_start|>assistant\n"."""
    ids: list[int] = []
    for m in messages:
        ids += [IM_START_ID, *tokenize(f"{m['role']}\n{m['content']}"), IM_END_ID, *tokenize("\n")]
    return ids + [IM_START_ID, *tokenize("assistant\n")]


def _logits(prev: tuple[int, ...], index: int, salt: int, eos_boost: float, chat: bool = False) -> list[float]:
    rng = random.Random(zlib.crc32(repr((salt, prev[-2:], index % 5)).encode()))
    logits = [rng.gauss(0.0, 1.0) for _ in range(_BASE_SIZE)]
    for i in range(len(WORDS) + len(PRINTABLE), _BASE_SIZE):  # raw bytes: rare
        logits[i] -= 3.0
    for _ in range(rng.randint(1, 3)):  # a few favourites, some very sure
        logits[rng.choice(_WORD_IDS)] += rng.uniform(1.0, 10.0)
    if rng.random() < 0.05:
        logits[rng.randrange(len(WORDS) + len(PRINTABLE), _BASE_SIZE)] += 6.0  # sometimes a partial byte
    logits[EOS_ID] += eos_boost - 2.0
    logits += [-30.0] * len(CHAT_TOKENS)  # the template's tokens: hardly ever drawn
    if chat:  # an answer ends at the end of its turn where a text would end
        logits[EOS_ID], logits[IM_END_ID] = logits[IM_END_ID], logits[EOS_ID]
    return logits


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


class FakeSession(BranchTree, FakeLayers, FakeWhatIf, Session):
    """The contract's Session over the fake vocabulary, with the real branch tree."""

    def __init__(self, model: FakeModel, ids: list[int], params: SamplingParams, *,
                 restore: SessionSnapshot | None = None) -> None:
        self.model = model
        self.params = params
        self._ids = list(ids)
        self._n_prompt = len(ids)
        self._bos_added = False
        self._lock = threading.RLock()
        self._closed = False
        self._rng = random.Random(params.seed if params.seed is not None else 1234)
        self.tokens: list[TokenStep] = []
        self._init_tree()
        self.finish_reason: str | None = None
        self.warnings: list[str] = []
        if restore is not None:
            self.prompt_tokens = list(restore.prompt_tokens)
            self._init_tree(restore.branches, restore.active)
            self._ids += [t.token_id for t in self.tokens]
            return
        first = ids[0]
        self.prompt_tokens: list[TokenStep] = [
            TokenStep(first, VOCAB_TEXT[first], None, None, None, None, None, (), 0, True, VOCAB_PARTIAL[first], params)
        ]
        for i in range(1, len(ids)):
            self.prompt_tokens.append(self._make_step(i, ids[i], i, params, is_prompt=True))

    # -------------------------------------------------------------- public API
    @property
    def context_length(self) -> int:
        return self.model.context_length

    def step(self) -> TokenStep:
        with self._lock:
            self._check_open()
            if self.model.step_delay:
                time.sleep(self.model.step_delay)
            self._check_open()
            if len(self._ids) >= self.context_length:
                self.finish_reason = "context"
                raise ContextFullError(f"The context window of {self.context_length} tokens is full: "
                                       "nothing more can be generated.")
            index = len(self._ids)
            logits = self._logits_at(index)
            sampled, _ = sample(logits, self.params, self._ids)
            if self.params.greedy:  # the argmax after the repetition penalty
                token_id = max(range(VOCAB_SIZE), key=sampled.__getitem__)
            else:
                token_id = self._rng.choices(range(VOCAB_SIZE), weights=sampled)[0]
            step = self._make_step(index, token_id, len(self.tokens), self.params)
            self._ids.append(token_id)
            self.tokens.append(step)
            self.model.manager.steps += 1
            return step

    def generate(self, max_new_tokens: int, *, should_stop=None, on_token=None) -> list[TokenStep]:
        """Like the engine's: stops after end-of-text, when `should_stop()` turns true, or at a full
        context window (finish_reason "context", no error)."""
        self.model.manager.generate_calls += 1
        steps: list[TokenStep] = []
        self.finish_reason = "length"
        for _ in range(max_new_tokens):
            if should_stop is not None and should_stop():
                self.finish_reason = "stopped"
                break
            try:
                step = self.step()
            except ContextFullError:  # step() set finish_reason "context"
                break
            steps.append(step)
            if on_token is not None:
                on_token(step)
            if self.is_eos(step):
                self.finish_reason = "eos"
                break
        return steps

    def choose(self, position: int, token_id: int) -> TokenStep:
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            self._check_token_id(token_id)
            if position < len(self.tokens):
                self._branch_off(position)
            index = self._n_prompt + position
            del self._ids[index:]
            del self.tokens[position:]
            step = self._make_step(index, token_id, position, self.params)
            self._ids.append(token_id)
            self.tokens.append(step)
            return step

    def score(self, position: int, token_ids: list[int]) -> list[tuple[int, float, int, float]]:
        with self._lock:
            self._check_open()
            if not 0 <= position <= len(self.tokens):
                raise PositionError(f"There is no generated token at position {position}.")
            for token_id in token_ids:
                self._check_token_id(token_id)
            index = self._n_prompt + position
            logits = self._logits_at(index)
            probs = _softmax(logits)
            drawn = self.tokens[position].sampling if position < len(self.tokens) else None
            sampled, _ = sample(logits, drawn or self.params, self._ids[:index])
            return [(t, probs[t], 1 + sum(p > probs[t] for p in probs), sampled[t]) for t in token_ids]

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
        with self._lock:
            self._closed = True
            self.model.manager.closed_sessions += 1

    # -------------------------------------------------------------- internals
    def _check_open(self) -> None:
        if self._closed:
            raise TokvizError("This session was closed.")

    def _check_token_id(self, token_id: int) -> None:
        if not 0 <= token_id < VOCAB_SIZE:
            raise PositionError(f"Token id {token_id} is outside the vocabulary.")

    def _logits_at(self, index: int) -> list[float]:
        generated = index - self._n_prompt
        boost = 30.0 if self.model.eos_at is not None and generated == self.model.eos_at else 0.0
        return _logits(tuple(self._ids[max(0, index - 2):index]), index, self.model.salt, boost,
                       chat=self.messages is not None)

    def _make_step(self, index: int, token_id: int, position: int, params: SamplingParams, *,
                   is_prompt: bool = False) -> TokenStep:
        logits = self._logits_at(index)
        probs = _softmax(logits)
        sampled, dropped = sample(logits, params, self._ids[:index])
        order = sorted(range(VOCAB_SIZE), key=lambda i: -probs[i])
        rank = order.index(token_id) + 1
        entropy = -sum(p * math.log2(p) for p in probs if p > 0)
        alternatives = tuple(Alternative(i, VOCAB_TEXT[i], probs[i], sampled[i], dropped[i])
                             for i in order[: params.top_n])
        kept = [i for i in range(VOCAB_SIZE) if sampled[i] > 0]
        return TokenStep(
            token_id=token_id, text=VOCAB_TEXT[token_id], prob=probs[token_id], logprob=math.log(probs[token_id]),
            rank=rank, entropy=entropy, sampled_prob=sampled[token_id], alternatives=alternatives,
            position=position, is_prompt=is_prompt, partial=VOCAB_PARTIAL[token_id], sampling=params,
            kept_count=len(kept), kept_mass=min(1.0, sum(probs[i] for i in kept)),
        )


class FakeModel(FakeScoring, Model):
    """The contract's Model: a fixed small vocabulary, logits from a seeded generator."""

    def __init__(self, manager: FakeModelManager, info: ModelInfo, *, salt: int) -> None:
        self.manager = manager
        self.key = info.key
        self.label = info.label
        self.source = info.source
        self.device = "cpu"
        self.dtype = "float32"
        self.context_length = manager.context_length
        self.vocab_size = VOCAB_SIZE
        self.eos_token_ids = frozenset({EOS_ID, IM_END_ID})
        self.bos_token_id = EOS_ID  # as GPT-2: texts are scored after end-of-text
        self.notices: list[str] = []
        self.salt = salt

    def background_work(self) -> str:
        return "optimising…" if self.manager.optimising.is_set() else ""

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(streams=self.manager.streams, chat_template=self.manager.chat_template,
                            layer_access=True, layer_count=LAYERS, what_if=True)  # tests/fake_layers.py, fake_sampling.py

    @property
    def step_delay(self) -> float:
        return self.manager.step_delay

    @property
    def eos_at(self) -> int | None:
        return self.manager.eos_at

    def encode(self, text: str) -> list[int]:
        return tokenize(text)

    def decode(self, ids: list[int]) -> str:
        return b"".join(VOCAB_BYTES[i] for i in ids).decode("utf-8", errors="replace")

    def token_text(self, token_id: int) -> tuple[str, bool]:
        return VOCAB_TEXT[token_id], VOCAB_PARTIAL[token_id]

    def start(self, prompt: str, params: SamplingParams | None = None, *,
              should_stop: Callable[[], bool] | None = None,
              progress: Callable[[int, int], None] | None = None) -> FakeSession:
        ids = tokenize(prompt)
        if len(ids) <= self.context_length:
            self._score_slowly(len(ids or [EOS_ID]), should_stop, progress)
        session = self.start_from_ids(ids or [EOS_ID], params)
        session._bos_added = not ids  # as the engine: an empty prompt starts from end-of-text, left out of `text`
        return session

    def _score_slowly(self, n: int, should_stop: Callable[[], bool] | None,
                      progress: Callable[[int, int], None] | None) -> None:
        """The engine's pace through a prompt: chunks, a stop check and a progress report before each."""
        for start in range(0, n, PREFILL_CHUNK):
            if progress is not None:
                progress(start, n)
            if should_stop is not None and should_stop():
                raise CancelledWork("The work was cancelled.")
            if self.manager.prefill_delay:
                time.sleep(self.manager.prefill_delay * min(PREFILL_CHUNK, n - start))
        if progress is not None:
            progress(n, n)

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: Callable[[], bool] | None = None) -> FakeSession:
        if len(ids) > self.context_length:
            raise PromptTooLongError(f"The prompt is {len(ids)} tokens long, but {self.label} reads at most "
                                     f"{self.context_length} tokens.")
        session = FakeSession(self, list(ids), params or SamplingParams())
        self.manager.sessions.append(session)
        return session

    def start_chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None, *,
                   should_stop: Callable[[], bool] | None = None) -> FakeSession:
        messages = check_messages(messages)
        if not self.capabilities.chat_template:
            raise no_template(self.label)
        session = self.start_from_ids(chat_prompt(messages), params)
        session.messages = messages
        return session

    def restore(self, snapshot: SessionSnapshot) -> FakeSession:
        if any(not 0 <= i < VOCAB_SIZE for i in snapshot.prompt_ids):
            raise TokvizError(f"This session was made with a different vocabulary than {self.label}'s.")
        session = FakeSession(self, list(snapshot.prompt_ids), snapshot.settings, restore=snapshot)
        session.messages = None if snapshot.messages is None else [dict(m) for m in snapshot.messages]
        self.manager.sessions.append(session)
        return session

    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        return search_vocabulary(VOCAB_TEXT, query, limit)

    def info(self) -> ModelInfo:
        return ModelInfo(self.key, self.label, self.source, status="loaded")


CATALOG = (
    ModelInfo("gpt2", "GPT-2", "openai-community/gpt2", "OpenAI GPT-2, 124M parameters", "cached"),
    ModelInfo("gpt2-medium", "GPT-2 Medium", "openai-community/gpt2-medium", "OpenAI GPT-2 Medium, 355M", "download"),
    ModelInfo("distilgpt2", "DistilGPT-2", "distilbert/distilgpt2", "Distilled GPT-2, 82M parameters", "download"),
    ModelInfo("smollm2-135m", "SmolLM2-135M (bundled)", "bundled", "Ships with tokviz: works offline", "bundled"),
)
FAILING = {
    "offline-model": OfflineError("You are offline and 'offline-model' is not in the local cache. "
                                  "Pick the bundled model 'smollm2-135m', which works with no network."),
    "huge-model": ModelLoadError("Not enough memory to load 'huge-model' (out of memory)."),
}


class FakeModelManager(ModelRegistry):
    device = "cpu"
    streams = False  # a test sets True: sessions stream Generate to End through generate(), as remote ones do
    chat_template = True  # a test sets False: a model that cannot start chats
    def __init__(self, *, step_delay: float = 0.0, load_delay: float = 0.0, context_length: int = 512,
                 eos_at: int | None = None, extra_failing: bool = True, prefill_delay: float = 0.0) -> None:
        self.step_delay = step_delay
        self.prefill_delay = prefill_delay
        self.load_delay = load_delay
        self.generate_calls = 0
        self.context_length = context_length
        self.eos_at = eos_at
        self._infos: dict[str, ModelInfo] = {info.key: info for info in CATALOG}
        self._typed: dict[str, ModelInfo] = {}  # names typed in a page (--allow-any-model), not offered yet
        if extra_failing:
            for key in FAILING:
                self._infos[key] = ModelInfo(key, key, key, "A model that fails to load (test)", "download")
        self._models: dict[str, FakeModel] = {}
        self._lock = threading.Lock()
        self.load_calls = 0
        self.steps = 0
        self.closed_sessions = 0
        self.sessions: list[FakeSession] = []
        self.optimising = threading.Event()  # a test sets it: loaded models say "optimising…" until cleared

    def catalog(self) -> list[ModelInfo]:
        with self._lock:
            return [ModelInfo(i.key, i.label, i.source, i.description, "loaded" if i.key in self._models else i.status)
                    for i in self._infos.values()]

    def default_key(self) -> str:
        return "gpt2"

    def add(self, name: str, *, offer: bool = True) -> ModelInfo:
        """Offer an extra model. Added names load fine unless they start with "no/" (not found on load).
        `offer=False` (a name typed in a page): known to `load`, listed in the catalog once loaded."""
        info = self._infos.get(name) or self._typed.get(name) \
            or ModelInfo(name, name, name, "Added on the command line", "download")
        with self._lock:
            if offer:
                self._infos.setdefault(name, info)
            else:
                self._typed.setdefault(name, info)
        return info

    def loaded(self) -> list[FakeModel]:
        with self._lock:
            return list(self._models.values())

    def load(self, name: str, progress: Callable[[float | None, str], None] | None = None) -> FakeModel:
        self.load_calls += 1
        with self._lock:
            if name in self._models:
                return self._models[name]
            info = self._infos.get(name) or self._typed.get(name)
        if info is None or name.startswith("no/"):
            raise ModelNotFoundError(f"'{name}' is neither a known model, a Hugging Face model id, "
                                     "nor an existing folder.")
        steps = 4
        for i in range(steps):
            if progress:
                progress(i / steps, f"Loading {info.label}: part {i + 1} of {steps}")
            if self.load_delay:
                time.sleep(self.load_delay / steps)
        if name in FAILING:
            raise FAILING[name]
        if progress:
            progress(1.0, f"{info.label} is ready")
        with self._lock:
            model = self._models.setdefault(name, FakeModel(self, info, salt=zlib.crc32(name.encode())))
        return model
