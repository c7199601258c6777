"""RemoteModel: the contract's `Model` for a model on a server: its tokenizer, and how to phrase requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, Sequence

from ...core.chat import check_messages, no_template
from ...core.contract import Capabilities, Model, PrefillProgress, Progress, StopCheck
from ...core.errors import ContextFullError, ModelNotFoundError, PromptTooLongError, TokvizError
from ...core.types import ModelInfo, SamplingParams, SessionSnapshot
from ..chat import chat_ids
from ..texts import prompt_ids, search_vocabulary
from .client import ServerClient, ServerContextFull
from .listing import list_models, remote_key, remote_label
from .logprobs import _Entry, _first_choice, _parse_logprobs, _Tok
from .probe import ServerFeatures, probe, props_context
from .servers import ServerConfig
from .session import RemoteSession
from .vocab import HFVocab, ServerVocab, Vocab, find_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class RemoteModel(Model):
    """A model served over HTTP: the remote backend's `Model`."""

    dtype = "remote"

    def __init__(self, config: ServerConfig | str, model_id: str, *, key: str | None = None,
                 label: str | None = None,
                 tokenizer: PreTrainedTokenizerBase | Literal["auto", "server"] | None = "auto",
                 client: ServerClient | None = None, progress: Progress | None = None) -> None:
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
        entry = next((m for m in listed if m["id"] == model_id), None)
        if entry is None:
            names = ", ".join(m["id"] for m in listed[:20]) + (", …" if len(listed) > 20 else "") or "none"
            raise ModelNotFoundError(f"The server at {self.config.url} does not serve a model named '{model_id}'. "
                                     f"It serves: {names}.")
        self.context_length: int | None = entry["max_model_len"] or props_context(self.client)
        if progress:
            progress(None, f"Loading the tokenizer of {self.label}…")
        if tokenizer == "auto":  # vLLM names the weights it serves under an alias in "root"
            tokenizer = find_tokenizer([model_id, entry["root"] or ""])
        if tokenizer == "server" or tokenizer is None:
            self.vocab: Vocab = ServerVocab(self.client, model_id)
            self.notices.append("No local tokenizer was found for this model: token texts come from the server, "
                                "and the vocabulary cannot be searched.")
        else:
            self.vocab = HFVocab(tokenizer)
        self._vocab_texts: list[str] | None = None  # every token's text, for find_tokens (made on first use)
        self.vocab_size = self.vocab.size
        self.eos_token_ids = self.vocab.eos_token_ids
        self.bos_token_id = self.vocab.bos_token_id
        if progress:
            progress(None, "Checking what the server reports…")
        self.caps = ServerFeatures()  # filled in by probe(); body() and prompt_for() read it
        self.notices += probe(self)
        # numbers come from the server's top-n lists; Generate to End is one streaming request
        self.capabilities = Capabilities(streams=True, exact_entropy=False, full_vocabulary_rank=False,
                                         vocabulary_search=self.vocab.searchable,
                                         chat_template=self.vocab.chat_template,
                                         layer_note="This model runs on a server: its layers are not visible.",
                                         text_scoring=self.caps.echo is not None)  # score_ids: the echo
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
              should_stop: StopCheck | None = None, progress: PrefillProgress | None = None) -> RemoteSession:
        # `should_stop` is accepted for the common interface; one request cannot be split, and it has a timeout.
        # For the same reason `progress` hears only the start and the end.
        params = params or SamplingParams()
        ids, bos_added = prompt_ids(self.encode, prompt, self.bos_token_id)
        self._check_length(len(ids))
        if progress is not None:
            progress(0, len(ids))
        session = RemoteSession(self, ids, params, bos_added=bos_added)
        if progress is not None:
            progress(len(ids), len(ids))
        return session

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None, *,
                       should_stop: StopCheck | None = None) -> RemoteSession:
        if not ids:
            raise TokvizError("A session needs at least one token.")
        self._check_length(len(ids))
        return RemoteSession(self, list(ids), params or SamplingParams(), bos_added=False)

    def start_chat(self, messages: list[dict[str, str]], params: SamplingParams | None = None, *,
                   should_stop: StopCheck | None = None) -> RemoteSession:
        """The chat rendered by the local tokenizer's template to ids, then the same path as any prompt (ids to
        servers that take them, else their exact text); the server's chat endpoint is not used."""
        messages = check_messages(messages)
        if not self.capabilities.chat_template or not isinstance(self.vocab, HFVocab):
            raise no_template(self.label)
        ids = chat_ids(self.vocab.tokenizer, messages, self.label)
        self._check_length(len(ids))
        session = RemoteSession(self, ids, params or SamplingParams(), bos_added=False)
        session.messages = messages
        return session

    def restore(self, snapshot: SessionSnapshot) -> RemoteSession:
        """A live session from an exported snapshot (the server keeps no state: nothing is re-scored)."""
        total = len(snapshot.prompt_ids) + max((len(b.tokens) for b in snapshot.branches), default=0)
        self._check_length(total)
        if self.vocab_size and any(i >= self.vocab_size for i in snapshot.prompt_ids):
            raise TokvizError(f"This session was made with a different vocabulary than {self.label}'s.")
        session = RemoteSession(self, list(snapshot.prompt_ids), snapshot.settings, bos_added=False,
                                restore=snapshot)
        session.messages = None if snapshot.messages is None else [dict(m) for m in snapshot.messages]
        return session

    def find_tokens(self, query: str, limit: int = 20) -> list[tuple[int, str]]:
        if not query or not self.vocab.searchable:
            return []
        if self._vocab_texts is None:
            self._vocab_texts = self.vocab.all_texts()
        return search_vocabulary(self._vocab_texts, query, limit)

    def info(self) -> ModelInfo:
        return ModelInfo(self.key, self.label, self.source, status="loaded",
                         extra={"remote": True, "server": self.config.url, "model": self.model_id,
                                "device": self.device, "dtype": self.dtype, "context_length": self.context_length,
                                "vocab_size": self.vocab_size, "load_seconds": round(self.load_seconds, 2),
                                "token_ids": self.caps.ids_in, "prompt_scoring": self.caps.echo is not None})

    def close(self) -> None:
        self.client.close()

    def learn_context(self, error: ContextFullError) -> None:
        """The context length a server named when it refused a text, where no other source gave one."""
        if isinstance(error, ServerContextFull) and error.context_length and not self.context_length:
            self.context_length = error.context_length

    # --------------------------------------------------------------- requests
    def prompt_for(self, ids: Sequence[int]) -> tuple[list[int] | str, bool]:
        """What to send as the prompt for `ids`, and whether the server will see exactly these ids."""
        if self.caps.ids_in:
            return list(ids), True
        send = list(ids)
        if self.caps.adds_bos and send[:1] == [self.bos_token_id]:
            send = send[1:]  # the server adds it back
        text = self.decode(send)
        try:
            exact = self.encode(text) == list(ids)
        except Exception:  # noqa: BLE001
            exact = False
        return text, exact

    def body(self, prompt: list[int] | str, *, max_tokens: int, logprobs: int, params: SamplingParams | None,
             echo: bool = False, stream: bool = False, seed: int | None = None) -> dict[str, Any]:
        """A completion request's JSON; `params` None (or greedy): the most likely token (greedy keeps its
        repetition penalty, as transformers' greedy search does)."""
        sampling = params if params is not None and not params.greedy else None
        penalty = params.repetition_penalty if params is not None else 1.0
        body: dict[str, Any] = {
            "model": self.model_id, "prompt": prompt, "max_tokens": max_tokens, "logprobs": logprobs,
            "temperature": sampling.temperature if sampling else 0.0,
            "top_p": sampling.top_p if sampling else 1.0,
            "top_k": sampling.top_k if sampling and sampling.top_k else self.caps.top_k_off,
            # off where not asked for: the servers' defaults are not (llama.cpp: top_k 40, min_p 0.05, ...);
            # llama.cpp's `repeat_penalty` over the whole context, vLLM's `repetition_penalty`; llama-server
            # refuses repeat_last_n -1 ("whole context" to llama-cpp-python) but reports its context at /props
            "min_p": sampling.min_p if sampling else 0.0, "typical_p": sampling.typical_p if sampling else 1.0,
            "repeat_penalty": penalty, "repetition_penalty": penalty, "repeat_last_n": self.context_length or -1,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0, "stream": stream,
        }
        if echo:
            body["echo"] = True
        if self.caps.ids_out:
            body["return_tokens_as_token_ids"] = True
        if seed is not None:
            body["seed"] = seed
        return body

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """The first choice of one non-streaming completion (its JSON, checked to be an object)."""
        return _first_choice(self.client.post("/completions", body), self.client.base)

    def resolve(self, token_id: Any, raw: Any, text: str) -> _Tok:
        """The token a server's JSON names (an id, "token_id:N", its bytes or its text); id None where that
        is not one token of the vocabulary."""
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            # llama-server merges the tokens of one character into one entry: the last id, the whole bytes
            listed = bytes(b for b in raw if type(b) is int and 0 <= b < 256) if isinstance(raw, list) else b""
            own = self.vocab.bytes_of(token_id) if listed and self._in_vocab(token_id) else None
            merged = bool(own) and own != listed
            return _Tok(token_id if self._in_vocab(token_id) and not merged else None, text)
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

    def parse(self, choice: dict[str, Any]) -> list[_Entry]:
        return _parse_logprobs(choice.get("logprobs"), self.resolve)

    def _check_length(self, n_tokens: int) -> None:
        if self.context_length and n_tokens > self.context_length:
            raise PromptTooLongError(f"The prompt is {n_tokens} tokens long, but {self.label} reads at most "
                                     f"{self.context_length} tokens.")
