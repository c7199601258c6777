"""RemoteModel: `LoadedModel`'s interface for a model on a server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ...core.contract import Capabilities, Model
from ...core.errors import ContextFullError, ModelLoadError, ModelNotFoundError, PromptTooLongError, TokvizError
from ..texts import prompt_ids, search_vocabulary
from ...core.types import ModelInfo, SamplingParams
from .client import DEEP_N, PROBE_TEXT, TOP_N, ServerClient, ServerConfig, ServerError, list_models, remote_key, remote_label
from .logprobs import _Dist, _Entry, _Tok, _first_choice, _int_or_none, _parse_logprobs
from .session import RemoteSession
from .vocab import HFVocab, ServerVocab, find_tokenizer


@dataclass
class _Capabilities:
    ids_in: bool = False  # the server takes a prompt as token ids
    ids_out: bool = False  # it returns tokens as "token_id:N"
    echo: str | None = None  # "aligned": echo entry k scores prompt token k; "shifted": it holds the
    # distribution after token k (llama-cpp-python without a leading BOS); None: no prompt scoring
    deep: int = TOP_N  # the most logprobs the server gives per position
    served_top: int = TOP_N  # how many it actually returned when asked for TOP_N
    prompt_logprobs: bool = False  # vLLM's exact prompt ranks
    top_k_off: int = 0  # the value of top_k that means "no cut"


class RemoteModel(Model):
    """A model served over HTTP: the remote backend's `Model`."""

    dtype = "remote"

    def __init__(self, config: ServerConfig | str, model_id: str, *, key: str | None = None,
                 label: str | None = None, tokenizer: Any = "auto", client: ServerClient | None = None,
                 progress: Callable[[float | None, str], None] | None = None) -> None:
        started = time.perf_counter()
        self.config = ServerConfig.parse(config)
        self.client = client or ServerClient(self.config)
        self.model_id = model_id
        self.key = key or remote_key(self.config, model_id)
        self.label = label or remote_label(self.config, model_id)
        self.source = f"{self.config.url} {model_id}"
        self.device = self.config.netloc
        self.notices: list[str] = []  # what the page should know about this server's numbers
        if progress:
            progress(None, f"Connecting to {self.config.url}…")
        listed = list_models(self.client)
        entry = next((m for m in listed if m.get("id") == model_id), None)
        if entry is None:
            names = ", ".join(m["id"] for m in listed[:20]) + (", …" if len(listed) > 20 else "") or "none"
            raise ModelNotFoundError(f"The server at {self.config.url} does not serve a model named '{model_id}'. "
                                     f"It serves: {names}.")
        self.context_length: int | None = _int_or_none(entry.get("max_model_len")) or self._props_context()
        if progress:
            progress(None, f"Loading the tokenizer of {self.label}…")
        if tokenizer == "auto":  # vLLM names the weights it serves under an alias in "root"
            tokenizer = find_tokenizer([model_id, str(entry.get("root") or "")])
        if tokenizer == "server" or tokenizer is None:
            self.vocab: HFVocab | ServerVocab = ServerVocab(self.client, model_id)
            self.notices.append("No local tokenizer was found for this model: token texts come from the server, "
                                "and the vocabulary cannot be searched.")
        else:
            self.vocab = HFVocab(tokenizer)
        self.vocab_size = self.vocab.size
        self.eos_token_ids = self.vocab.eos_token_ids
        self.bos_token_id = self.vocab.bos_token_id
        if progress:
            progress(None, "Checking what the server reports…")
        self.caps = self._probe()
        # numbers come from the server's top-n lists; Generate to End is one streaming request
        self.capabilities = Capabilities(streams=True, exact_entropy=False, full_vocabulary_rank=False,
                                         vocabulary_search=self.vocab.searchable)
        self.load_seconds = time.perf_counter() - started

    # --------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode(ids)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        return self.vocab.token_text(token_id)

    # --------------------------------------------------------------- sessions
    def start(self, prompt: str, params: SamplingParams | None = None, *,
              should_stop: Callable[[], bool] | None = None) -> RemoteSession:
        # `should_stop` is accepted for the common interface; one request cannot be split, and it has a timeout.
        params = params or SamplingParams()
        ids, bos_added = prompt_ids(self.encode, prompt, self.bos_token_id)
        self._check_length(len(ids))
        return RemoteSession(self, ids, params, bos_added=bos_added)

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: Callable[[], bool] | None = None) -> RemoteSession:
        if not ids:
            raise TokvizError("A session needs at least one token.")
        self._check_length(len(ids))
        return RemoteSession(self, list(ids), params or SamplingParams(), bos_added=False)

    def restore(self, snapshot) -> RemoteSession:
        """A live session from an exported snapshot (the server keeps no state: nothing is re-scored)."""
        total = len(snapshot.prompt_ids) + max((len(b.tokens) for b in snapshot.branches), default=0)
        self._check_length(total)
        if self.vocab_size and any(i >= self.vocab_size for i in snapshot.prompt_ids):
            raise TokvizError(f"This session was made with a different vocabulary than {self.label}'s.")
        return RemoteSession(self, list(snapshot.prompt_ids), snapshot.settings, bos_added=False, restore=snapshot)

    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        if not query or not self.vocab.searchable:
            return []
        if not hasattr(self, "_vocab_texts"):
            self._vocab_texts = self.vocab.all_texts()
        return search_vocabulary(self._vocab_texts, query, limit)

    def info(self) -> ModelInfo:
        return ModelInfo(self.key, self.label, self.source, status="loaded",
                         extra={"remote": True, "server": self.config.url, "model": self.model_id,
                                "device": self.device, "dtype": self.dtype, "context_length": self.context_length,
                                "vocab_size": self.vocab_size, "load_seconds": round(self.load_seconds, 2),
                                "token_ids": self.caps.ids_in, "prompt_scoring": self.caps.echo is not None,
                                "notices": list(self.notices)})

    def close(self) -> None:
        self.client.close()

    # --------------------------------------------------------------- requests
    def prompt_for(self, ids: Sequence[int]) -> tuple[list[int] | str, bool]:
        """What to send as the prompt for `ids`, and whether the server will see exactly these ids."""
        if self.caps.ids_in:
            return list(ids), True
        send = list(ids)
        if self._adds_bos and send[:1] == [self.bos_token_id]:
            send = send[1:]  # the server adds it back
        text = self.decode(send)
        try:
            exact = self.encode(text) == list(ids)
        except Exception:  # noqa: BLE001
            exact = False
        return text, exact

    def body(self, prompt: list[int] | str, *, max_tokens: int, logprobs: int, params: SamplingParams | None,
             echo: bool = False, stream: bool = False, seed: int | None = None) -> dict:
        greedy = params is None or params.greedy
        body: dict[str, Any] = {
            "model": self.model_id, "prompt": prompt, "max_tokens": max_tokens, "logprobs": logprobs,
            "temperature": 0.0 if greedy else params.temperature,  # type: ignore[union-attr]
            "top_p": 1.0 if greedy else params.top_p,  # type: ignore[union-attr]
            "top_k": (params.top_k if params and params.top_k and not greedy else self._top_k_off),
            # neutral settings where the servers' defaults are not (llama.cpp: top_k 40, min_p 0.05, ...)
            "min_p": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0, "frequency_penalty": 0.0,
            "presence_penalty": 0.0, "stream": stream,
        }
        if echo:
            body["echo"] = True
        if self._ids_out:
            body["return_tokens_as_token_ids"] = True
        if seed is not None:
            body["seed"] = seed
        return body

    def complete(self, body: dict) -> dict:
        answer = self.client.post("/completions", body)
        choice = _first_choice(answer, self.client.base)
        return choice

    def resolve(self, token_id: Any, raw: Any, text: str) -> _Tok:
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            return _Tok(token_id if self._in_vocab(token_id) else None, text)
        if text.startswith("token_id:"):
            try:
                number = int(text[len("token_id:"):])
                return _Tok(number if self._in_vocab(number) else None, text)
            except ValueError:
                pass
        if isinstance(raw, list) and raw and all(type(b) is int and 0 <= b < 256 for b in raw):
            ids = self.vocab.ids_for_bytes(bytes(raw))
            if len(ids) == 1:
                return _Tok(ids[0], text)
        ids = self.vocab.ids_for_text(text)
        return _Tok(ids[0] if len(ids) == 1 else None, text)

    def _in_vocab(self, token_id: int) -> bool:
        """An id the server sent must name a token (a lying server's ids are unknown, not a crash)."""
        return token_id >= 0 and (self.vocab_size is None or token_id < self.vocab_size)

    def parse(self, choice: dict) -> list[_Entry]:
        return _parse_logprobs(choice.get("logprobs"), self.resolve)

    def matches(self, tok: _Tok, token_id: int) -> bool:
        if tok.id is not None:
            return tok.id == token_id
        return tok.text in self.vocab.server_texts(token_id)

    # --------------------------------------------------------------- probing
    _adds_bos = False
    _ids_out = False
    _top_k_off = 0

    def _props_context(self) -> int | None:
        try:  # llama-server
            props = self.client._send("GET", self.client.root + "/props", timeout=5)
        except TokvizError:
            return None
        settings = props.get("default_generation_settings", {}) if isinstance(props, dict) else {}
        return _int_or_none(settings.get("n_ctx") or props.get("n_ctx"))

    def _probe(self) -> _Capabilities:
        """A few small requests that find out how to talk to this server (about a second)."""
        caps = _Capabilities()
        ids = self.encode(PROBE_TEXT)
        self._adds_bos = self.bos_token_id is not None and ids[:1] == [self.bos_token_id]
        self._ids_out = True
        first: dict | None = None
        errors = []
        for ids_in in (True, False):
            caps.ids_in = ids_in
            self.caps = caps
            prompt, _ = self.prompt_for(ids)
            for top_k_off in (0, -1):
                self._top_k_off = top_k_off
                try:
                    first = self.complete(self.body(prompt, max_tokens=1, logprobs=TOP_N, params=None))
                    break
                except ContextFullError:
                    raise
                except ServerError as error:
                    errors.append(str(error))
                    if error.status is None:
                        raise  # unreachable or timed out: no point in trying other forms
                    if "top_k" not in str(error):
                        break
            if first is not None:
                break
        if first is None:
            raise ModelLoadError(f"The server at {self.config.url} accepts no completion request for "
                                 f"'{self.model_id}': {errors[-1] if errors else 'no answer'}")
        entries = self.parse(first)
        if not entries or entries[0].top is None:
            raise ModelLoadError(f"The server at {self.config.url} returns no logprobs for '{self.model_id}'; tokviz "
                                 f"needs them (llama-cpp-python: start it with --logits_all true).")
        caps.top_k_off = self._top_k_off
        caps.ids_out = any(e.token.text.startswith("token_id:") for e in entries)
        self._ids_out = caps.ids_out
        caps.served_top = len(entries[0].top)
        if caps.served_top < TOP_N:
            self.notices.append(f"The server returns {caps.served_top} alternatives per token "
                                f"(tokviz asks for {TOP_N}).")
        reference = _Dist.from_top(entries[0].top, TOP_N)
        prompt, exact = self.prompt_for(ids)
        if not exact:
            self.notices.append("This server takes text, and the tokenizer found here does not reproduce its own "
                                "tokens from text: numbers may belong to a different tokenization.")
        caps.deep = TOP_N
        for deep in (DEEP_N, 20):
            try:
                self.complete(self.body(prompt, max_tokens=1, logprobs=deep, params=None))
                caps.deep = deep
                break
            except ServerError as error:
                if error.status is None:
                    raise
        caps.echo = self._probe_echo(ids, prompt, reference, caps)
        if caps.echo is None:
            self.notices.append("This server does not score prompts (no echo with logprobs): the prompt's tokens "
                                "show no probabilities.")
        elif caps.echo == "shifted":
            self.notices.append(f"This server scores prompts only as top-{caps.deep} lists: a prompt token outside "
                                f"them shows no probability.")
        if not caps.ids_in:
            self.notices.append("This server takes text prompts only: after a chosen token, the server reads the text "
                                "again, and a token string shared by several tokens cannot be told apart.")
        return caps

    def _probe_echo(self, ids: list[int], prompt, reference: _Dist, caps: _Capabilities) -> str | None:
        body = self.body(prompt, max_tokens=1, logprobs=TOP_N, params=None, echo=True)
        if caps.ids_out:
            body["prompt_logprobs"] = TOP_N
        try:
            choice = self.complete(body)
        except ServerError as error:
            if error.status is None:
                raise
            if caps.ids_out:
                del body["prompt_logprobs"]
                try:
                    choice = self.complete(body)
                except ServerError:
                    return None
            else:
                return None
        else:
            caps.prompt_logprobs = caps.ids_out and isinstance(choice.get("prompt_logprobs"), list)
        entries = self.parse(choice)
        pairs = self.align(entries, ids)
        if pairs is None or not reference.known:
            return None
        last = next((j for j, k in pairs if k == len(ids) - 1), None)
        if last is None:
            return None

        def same(entry_index: int) -> bool:
            if not 0 <= entry_index < len(entries) or not entries[entry_index].top:
                return False
            dist = _Dist.from_top(entries[entry_index].top, TOP_N)
            return bool(dist.known) and dist.known[0].id == reference.known[0].id and \
                abs(dist.known[0].logprob - reference.known[0].logprob) < 1e-3

        if same(last + 1):
            return "aligned"
        if same(last):
            return "shifted"
        return None

    def align(self, entries: list[_Entry], ids: Sequence[int]) -> list[tuple[int, int]] | None:
        """Pairs (entry index, prompt position) of an echoed prompt; control tokens the server left out are
        skipped. None when the echo does not spell the prompt."""
        pairs, k = [], 0
        for j, entry in enumerate(entries):
            while k < len(ids) and not self.matches(entry.token, ids[k]) and ids[k] in self.vocab.special_ids:
                k += 1
            if k >= len(ids):
                break  # the completion after the prompt
            if not self.matches(entry.token, ids[k]):
                return None
            pairs.append((j, k))
            k += 1
        return pairs if k >= len(ids) or all(i in self.vocab.special_ids for i in ids[k:]) else None

    def _check_length(self, n_tokens: int) -> None:
        if self.context_length and n_tokens > self.context_length:
            raise PromptTooLongError(f"The prompt is {n_tokens} tokens long, but {self.label} reads at most "
                                     f"{self.context_length} tokens.")
