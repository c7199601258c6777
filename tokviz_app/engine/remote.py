"""A second engine backend: models served by an OpenAI-compatible server that returns logprobs.

vLLM (`vllm serve MODEL`), llama.cpp's `llama-server`, llama-cpp-python's server, or anything else
that speaks `POST /v1/completions` with `logprobs`. `RemoteModel` and `RemoteSession` mirror
`LoadedModel` and `GenerationSession` (same methods, same `TokenStep`s), so the page drives both alike.

What the server tells us, and what it cannot:

- Token ids. Where the server takes a prompt as a list of token ids (vLLM, llama-server), the session
  sends ids, so a continuation starts exactly after the chosen token; with vLLM, the returned tokens come
  back as ids too (`return_tokens_as_token_ids`). A server that takes text only (llama-cpp-python) gets the
  decoded text and returns token *strings*, which are mapped back to ids with the model's tokenizer; a
  string that several tokens share (a token that is only part of a UTF-8 character, a control token) is
  dropped from the alternatives, never guessed. `RemoteSession.warnings` says when the text does not
  re-tokenize to the same ids.
- Numbers. `prob`/`logprob` of each generated token are exact. `rank` is its place in the server's top-k
  where the whole top-k is known, else unknown (None). `entropy` needs the full distribution: always None.
  `sampled_prob` is computed where the server's top-k determines the sampling distribution exactly
  (plain sampling, greedy, a top-k cut within the known tokens, a nucleus reached within them), else None.
- Prompt scoring uses `echo` with `logprobs` where the server supports it (probed once per model).

No torch here: httpx and the tokenizer only.
"""

from __future__ import annotations

import json
import math
import os
import queue
import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

import httpx

from .errors import ContextFullError, ModelLoadError, ModelNotFoundError, PositionError, PromptTooLongError, TokvizError
from .branching import BranchTree
from .types import Alternative, ModelInfo, SamplingParams, TokenStep
from .texts import prompt_ids

TOP_N = 10  # alternatives per token, as the local engine
DEEP_N = 100  # logprobs asked for where a deeper list helps (prompt scoring, a chosen token) and the server allows
API_KEY_ENV = "TOKVIZ_SERVER_API_KEY"
PROBE_TEXT = "The capital of France is"
MODELS_TTL = 30.0  # seconds a server's model list is reused by the catalog


class ServerError(TokvizError):
    """The model server could not be reached, timed out, or rejected a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# ============================================================================ configuration and HTTP
@dataclass(frozen=True)
class ServerConfig:
    """One `--server URL`. The API key is read from $TOKVIZ_SERVER_API_KEY unless given."""

    url: str
    api_key: str | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 60.0  # per request, and the longest wait between two streamed tokens

    @staticmethod
    def parse(value: str | ServerConfig, **options: Any) -> ServerConfig:
        if isinstance(value, ServerConfig):
            return value
        url = value.strip().rstrip("/")
        if "://" not in url:
            url = "http://" + url
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.hostname:
            raise TokvizError(f"'{value}' is not a server address; expected something like http://host:8000/v1.")
        if not parsed.path:
            url += "/v1"
        options.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        return ServerConfig(url, **options)

    @property
    def netloc(self) -> str:
        return urlparse(self.url).netloc


class ServerClient:
    """Thin httpx wrapper: JSON requests, SSE streams, and errors as readable TokvizErrors."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        self.root = self.base[: -len("/v1")] if self.base.endswith("/v1") else self.base
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(config.read_timeout,
                                                                          connect=config.connect_timeout))

    def close(self) -> None:
        self._http.close()

    # ---------------------------------------------------------------- requests
    def get(self, path: str) -> Any:
        return self._send("GET", self.base + path)

    def post(self, path: str, body: dict, *, root: bool = False, timeout: float | None = None) -> Any:
        return self._send("POST", (self.root if root else self.base) + path, body, timeout)

    def _send(self, method: str, url: str, body: dict | None = None, timeout: float | None = None) -> Any:
        try:
            kwargs: dict[str, Any] = {"json": body} if body is not None else {}
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=self.config.connect_timeout)
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            return response.json()
        except ValueError as error:
            raise ServerError(f"The model server at {self.base} sent an answer that is not JSON.") from error

    def stream(self, path: str, body: dict, should_stop: Callable[[], bool] | None = None,
               poll: float = 0.05) -> Iterator[dict]:
        """Server-sent events of a streaming request, as parsed JSON objects.

        The response is read in a helper thread, so `should_stop` is checked every `poll` seconds
        even while the server is silent; stopping (or leaving the loop) closes the connection, which
        is how OpenAI-compatible servers learn to cancel the generation.
        """
        events: queue.Queue = queue.Queue()
        cancel = threading.Event()
        url = self.base + path

        def reader() -> None:
            try:
                with self._http.stream("POST", url, json=body) as response:
                    if response.status_code >= 400:
                        response.read()
                        events.put(("error", self._status_error(response)))
                        return
                    data: list[str] = []
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip(" "))
                        elif not line.strip() and data:
                            payload, data = "\n".join(data), []
                            if payload.strip() == "[DONE]":
                                return
                            events.put(("data", payload))
                        # comments (": ping") and other fields are ignored
                    if data and "\n".join(data).strip() != "[DONE]":
                        events.put(("data", "\n".join(data)))
            except httpx.HTTPError as error:
                if not cancel.is_set():
                    events.put(("error", self._transport_error(error)))
            except Exception as error:  # noqa: BLE001 - reported to the caller below
                if not cancel.is_set():
                    events.put(("error", ServerError(f"Reading the stream from {self.base} failed: {error}")))
            finally:
                events.put(("end", None))

        thread = threading.Thread(target=reader, name="tokviz-remote-stream", daemon=True)
        thread.start()
        waited = 0.0
        try:
            while True:
                if should_stop is not None and should_stop():
                    return
                try:
                    kind, payload = events.get(timeout=poll)
                except queue.Empty:
                    waited += poll
                    if waited > self.config.read_timeout + self.config.connect_timeout:
                        raise ServerError(f"The model server at {self.base} sent nothing for "
                                          f"{self.config.read_timeout:.0f} s; the generation was cancelled.") from None
                    continue
                waited = 0.0
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                try:
                    event = json.loads(payload)
                except ValueError as error:
                    raise ServerError(f"The model server at {self.base} streamed something that is not JSON.") \
                        from error
                if isinstance(event, dict) and "error" in event and not event.get("choices"):
                    raise ServerError(f"The model server at {self.base} reported an error: "
                                      f"{_error_text(event)}")
                yield event
        finally:
            cancel.set()

    # ---------------------------------------------------------------- errors
    def _transport_error(self, error: httpx.HTTPError) -> ServerError:
        if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
            return ServerError(f"Cannot reach the model server at {self.base} ({_short(error)}). "
                               f"Is it running, and is the address right?")
        if isinstance(error, httpx.TimeoutException):
            return ServerError(f"The model server at {self.base} did not answer within "
                               f"{self.config.read_timeout:.0f} s.")
        return ServerError(f"The connection to the model server at {self.base} failed: {_short(error)}.")

    def _status_error(self, response: httpx.Response) -> ServerError:
        try:
            detail = _error_text(response.json())
        except ValueError:
            detail = response.text.strip()[:300] or response.reason_phrase
        status = response.status_code
        if status in (401, 403):
            return ServerError(f"The model server at {self.base} refused the request (HTTP {status}: {detail}). "
                               f"Set its API key in ${API_KEY_ENV}.", status)
        if re.search(r"context length|context window|maximum context|context_length|prompt is too long", detail, re.I):
            match = re.search(r"maximum context length is (\d+)", detail)
            error = ContextFullError(f"The model server says the text does not fit the model's context: {detail}")
            error.context_length = int(match.group(1)) if match else None  # type: ignore[attr-defined]
            return error  # type: ignore[return-value]
        return ServerError(f"The model server at {self.base} rejected the request (HTTP {status}): {detail}",
                           status)


def _error_text(data: Any) -> str:
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message", error)
        if isinstance(error, list):  # FastAPI validation errors
            error = "; ".join(str(e.get("msg", e)) if isinstance(e, dict) else str(e) for e in error)
        text = str(error)
    else:
        text = str(data)
    text = text.split("\n\n  File ")[0]  # llama-cpp-python appends a traceback
    return text.strip()[:400]


def _short(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 160 else text[:157] + "…"


# ============================================================================ vocabularies
class HFVocab:
    """Token ids <-> text with a local Hugging Face tokenizer (exact, fast, searchable)."""

    searchable = True

    def __init__(self, tokenizer) -> None:
        from .texts import TokenTexts

        self.tokenizer = tokenizer
        self._texts = TokenTexts(tokenizer)
        self.size = len(tokenizer)
        self.bos_token_id = tokenizer.bos_token_id
        eos = tokenizer.eos_token_id
        self.eos_token_ids = frozenset([eos] if eos is not None else [])
        self.special_ids = frozenset(getattr(tokenizer, "all_special_ids", []) or [])
        self._by_text: dict[str, list[int]] | None = None
        self._by_bytes: dict[bytes, list[int]] | None = None
        self._lock = threading.Lock()

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        return self._texts.text(token_id)

    def _index(self) -> tuple[dict[str, list[int]], dict[bytes, list[int]]]:
        with self._lock:
            if self._by_text is None:
                by_text: dict[str, list[int]] = defaultdict(list)
                by_bytes: dict[bytes, list[int]] = defaultdict(list)
                for token_id in range(self.size):
                    raw = self._texts.raw_bytes(token_id)
                    by_bytes[raw].append(token_id)
                    by_text[raw.decode("utf-8", errors="ignore")].append(token_id)
                for token_id in self.special_ids:  # servers render control tokens as "" or as their text
                    by_text[""].append(token_id)
                self._by_text, self._by_bytes = dict(by_text), dict(by_bytes)
            return self._by_text, self._by_bytes  # type: ignore[return-value]

    def ids_for_text(self, text: str) -> list[int]:
        """Every token a server could have written as `text` (UTF-8 decoded with errors ignored)."""
        return self._index()[0].get(text, [])

    def ids_for_bytes(self, raw: bytes) -> list[int]:
        return self._index()[1].get(raw, [])

    def server_texts(self, token_id: int) -> set[str]:
        texts = {self._texts.raw_bytes(token_id).decode("utf-8", errors="ignore")}
        if token_id in self.special_ids:
            texts.add("")
        return texts

    def all_texts(self) -> list[str]:
        return [self.token_text(i)[0] for i in range(self.size)]


class ServerVocab:
    """Token ids <-> text through the server's own tokenize/detokenize endpoints (no local tokenizer).

    Supports vLLM (`/tokenize`, `/detokenize`), llama-cpp-python (`/extras/tokenize`) and llama-server
    (`/tokenize` with `content`). Token texts are fetched once per id and remembered.
    """

    searchable = False
    size = None
    bos_token_id = None
    special_ids: frozenset = frozenset()

    _FLAVOURS = (  # (tokenize path, text field, detokenize path, text field of the answer)
        ("/tokenize", "prompt", "/detokenize", "prompt"),
        ("/extras/tokenize", "input", "/extras/detokenize", "text"),
        ("/tokenize", "content", "/detokenize", "content"),
    )

    def __init__(self, client: ServerClient, model_id: str) -> None:
        self.client = client
        self.model_id = model_id
        self.eos_token_ids: frozenset = frozenset()
        self._memo: dict[int, tuple[str, bool]] = {}
        self._flavour = None
        for flavour in self._FLAVOURS:
            try:
                tokens = self._tokenize("Hello", flavour)
            except TokvizError:
                continue
            if tokens:
                self._flavour = flavour
                break
        if self._flavour is None:
            raise ModelLoadError(f"No tokenizer was found for '{model_id}': it is not a local folder, GGUF file or "
                                 f"cached hub model, and the server at {client.base} offers no tokenize endpoint.")

    def _tokenize(self, text: str, flavour=None) -> list[int]:
        path, key, _, _ = flavour or self._flavour
        body = {"model": self.model_id, key: text}
        answer = self.client.post(path, body, root=True)
        tokens = answer.get("tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
            raise TokvizError("unexpected tokenize answer")
        return tokens

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text)

    def decode(self, ids: Sequence[int]) -> str:
        _, _, path, key = self._flavour
        try:
            answer = self.client.post(path, {"model": self.model_id, "tokens": list(ids)}, root=True)
        except ServerError:
            return "\ufffd"
        return str(answer.get(key, "")) if isinstance(answer, dict) else ""

    def token_text(self, token_id: int) -> tuple[str, bool]:
        cached = self._memo.get(token_id)
        if cached is None:
            text = self.decode([token_id])
            cached = (text, "\ufffd" in text)
            self._memo[token_id] = cached
        return cached

    def ids_for_text(self, text: str) -> list[int]:
        if not text:
            return []
        try:
            ids = self._tokenize(text)
        except TokvizError:
            return []
        return ids if len(ids) == 1 and self.token_text(ids[0])[0] == text else []

    def ids_for_bytes(self, raw: bytes) -> list[int]:
        try:
            return self.ids_for_text(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return []

    def server_texts(self, token_id: int) -> set[str]:
        return {self.token_text(token_id)[0]}

    def all_texts(self) -> list[str]:
        return []


def find_tokenizer(names: Sequence[str]):
    """The first tokenizer found for any of `names`: on this machine, else downloaded from the hub
    (a few MB) when it is reachable. None when there is none: the server's endpoints are used."""
    names = [n for i, n in enumerate(names) if n and n not in names[:i]]
    for name in names:
        tokenizer = load_local_tokenizer(name)
        if tokenizer is not None:
            return tokenizer
    hub_ids = [n for n in names if re.fullmatch(r"[\w.\-]+/[\w.\-]+", n) and not Path(n).exists()]
    if hub_ids:
        from .catalog import hub_reachable

        if hub_reachable():
            from transformers import AutoTokenizer

            for name in hub_ids:
                try:
                    return AutoTokenizer.from_pretrained(name)
                except Exception:  # noqa: BLE001 - gated, missing, or not a tokenizer: try the next
                    continue
    return None


def load_local_tokenizer(model_id: str):
    """The tokenizer for a served model id, from this machine only: a GGUF file (llama.cpp servers name
    models by their path), a local folder, or a hub id in the Hugging Face cache. None if not found."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = Path(model_id).expanduser()
    try:
        if path.suffix.lower() == ".gguf" and path.is_file():
            from . import bundled

            try:
                if path.resolve() == bundled.gguf_path().resolve() and bundled.is_converted():
                    return AutoTokenizer.from_pretrained(str(bundled.converted_folder()))
            except ModelLoadError:
                pass
            return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        if path.is_dir():
            return AutoTokenizer.from_pretrained(str(path))
        if re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", model_id):
            return AutoTokenizer.from_pretrained(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        return None
    return None


# ============================================================================ parsing logprobs
@dataclass(frozen=True)
class _Tok:
    id: int | None  # None: the server's text matches no token or several
    text: str


@dataclass
class _Entry:
    """One token position of a completion's logprobs."""

    token: _Tok
    logprob: float | None
    top: list[tuple[_Tok, float]] | None


@dataclass
class _Known:
    id: int
    logprob: float
    rank: int | None  # 1-based over the vocabulary, where the server's list proves it
    in_top: bool  # among the first `asked` of the server's list


@dataclass
class _Dist:
    """What the server told us about one next-token distribution."""

    known: list[_Known] = field(default_factory=list)  # sorted by logprob, descending
    asked: int = TOP_N
    returned: int = 0  # entries the server sent (keys, before resolving them)
    ranked: int = 0  # leading entries whose rank is exact (no unresolved entry before them)

    @classmethod
    def from_top(cls, top: list[tuple[_Tok, float]] | None, asked: int) -> _Dist:
        dist = cls(asked=asked, returned=len(top or []))
        exact = True
        seen: set[int] = set()
        for position, (tok, logprob) in enumerate(sorted(top or [], key=lambda t: -t[1])):
            if position >= asked:  # the sampled token added after the top-k: its rank is unknown
                exact = False
            if tok.id is None:
                exact = False
                continue
            if tok.id in seen:
                continue
            seen.add(tok.id)
            dist.known.append(_Known(tok.id, logprob, position + 1 if exact else None, position < asked))
            if exact:
                dist.ranked = position + 1
        return dist

    def find(self, token_id: int) -> _Known | None:
        return next((k for k in self.known if k.id == token_id), None)

    def alternatives(self) -> list[_Known]:
        return [k for k in self.known if k.in_top][:TOP_N]

    def sampler(self, params: SamplingParams) -> Callable[[int], float | None]:
        """id -> probability under the session's sampling settings, where the known list decides it."""
        unknown: Callable[[int], float | None] = lambda _id: None  # noqa: E731
        if _is_plain(params):
            return lambda token_id: (lambda k: math.exp(k.logprob) if k else None)(self.find(token_id))
        head = self.known[: self.ranked]  # the true top tokens, in order, with nothing missing between them
        if params.greedy:
            if not head:
                return unknown
            best = head[0].id
            return lambda token_id: 1.0 if token_id == best else 0.0
        # Servers differ in the order of temperature and top-p; decide only where the order does not matter.
        if params.temperature != 1.0 and params.top_p < 1.0:
            return unknown
        if params.top_k:
            if params.top_k > len(head):
                return unknown
            pool = head[: params.top_k]
            weights = [math.exp((k.logprob - pool[0].logprob) / params.temperature) for k in pool]
            total = sum(weights)
            probs = [w / total for w in weights]
        elif params.temperature == 1.0:
            pool, probs = head, [math.exp(k.logprob) for k in head]
        else:
            return unknown
        if params.top_p < 1.0:
            kept, mass = 0, 0.0
            for p in probs:  # the smallest prefix whose mass reaches top_p, the crossing token included
                if mass >= params.top_p:
                    break
                mass += p
                kept += 1
            if mass < params.top_p and not params.top_k:
                return unknown  # the nucleus reaches beyond the tokens the server listed
            pool, probs = pool[:kept], [p / mass for p in probs[:kept]]
        elif not params.top_k:
            return unknown
        table = {k.id: p for k, p in zip(pool, probs)}
        return lambda token_id: table.get(token_id, 0.0)


def _is_plain(params: SamplingParams) -> bool:
    return not params.greedy and params.temperature == 1.0 and params.top_k == 0 and params.top_p >= 1.0


def _parse_logprobs(logprobs: Any, resolve: Callable[[Any, Any, str], _Tok]) -> list[_Entry]:
    """Classic completions logprobs ({tokens, token_logprobs, top_logprobs}) or the newer list form
    ({content: [{id?, token, bytes?, logprob, top_logprobs: [...]}]})."""
    if not isinstance(logprobs, dict):
        return []
    entries: list[_Entry] = []
    if isinstance(logprobs.get("content"), list):
        for item in logprobs["content"]:
            top = item.get("top_logprobs")
            entries.append(_Entry(
                resolve(item.get("id"), item.get("bytes"), str(item.get("token", ""))), item.get("logprob"),
                None if top is None else [(resolve(t.get("id"), t.get("bytes"), str(t.get("token", ""))),
                                           float(t["logprob"])) for t in top if t.get("logprob") is not None],
            ))
        return entries
    tokens = logprobs.get("tokens") or []
    token_logprobs = logprobs.get("token_logprobs") or [None] * len(tokens)
    tops = logprobs.get("top_logprobs") or [None] * len(tokens)
    for text, logprob, top in zip(tokens, token_logprobs, tops):
        entries.append(_Entry(
            resolve(None, None, str(text)), logprob,
            None if top is None else [(resolve(None, None, str(k)), float(v)) for k, v in top.items() if v is not None],
        ))
    return entries


# ============================================================================ the model
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


class RemoteModel:
    """A model served over HTTP, with the interface of `LoadedModel`."""

    remote = True
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
            names = ", ".join(str(m.get("id")) for m in listed) or "none"
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
        self.load_seconds = time.perf_counter() - started

    # --------------------------------------------------------------- text
    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode(ids)

    def token_text(self, token_id: int) -> tuple[str, bool]:
        return self.vocab.token_text(token_id)

    # --------------------------------------------------------------- sessions
    def start(self, prompt: str, params: SamplingParams | None = None) -> RemoteSession:
        params = params or SamplingParams()
        ids, bos_added = prompt_ids(self.encode, prompt, self.bos_token_id)
        self._check_length(len(ids))
        return RemoteSession(self, ids, params, bos_added=bos_added)

    def start_from_ids(self, ids: list[int], params: SamplingParams | None = None) -> RemoteSession:
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
        exact, prefix, inner = [], [], []
        stripped = query.strip()
        for token_id, text in enumerate(self._vocab_texts):
            if text == query or (stripped and text.strip() == stripped):
                exact.append((token_id, text))
            elif text.startswith(query) or (stripped and text.strip().startswith(stripped)):
                prefix.append((token_id, text))
            elif query in text:
                inner.append((token_id, text))
        return (exact + sorted(prefix, key=lambda t: len(t[1])) + inner)[:limit]

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
        if isinstance(token_id, int):
            return _Tok(token_id, text)
        if text.startswith("token_id:"):
            try:
                return _Tok(int(text[len("token_id:"):]), text)
            except ValueError:
                pass
        if isinstance(raw, list) and raw and all(isinstance(b, int) for b in raw):
            ids = self.vocab.ids_for_bytes(bytes(raw))
            if len(ids) == 1:
                return _Tok(ids[0], text)
        ids = self.vocab.ids_for_text(text)
        return _Tok(ids[0] if len(ids) == 1 else None, text)

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


def _first_choice(answer: Any, base: str) -> dict:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ServerError(f"The model server at {base} answered without a completion.")
    return choices[0]


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


# ============================================================================ sessions
class RemoteSession(BranchTree):
    """`GenerationSession` for a served model: one completion request per step, a stream for
    `generate`. The server keeps no state, so branches, truncation and restore are bookkeeping."""

    streams = True  # the page runs "Generate to End" through generate(): one streaming request

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

    @property
    def token_ids(self) -> list[int]:
        return list(self._ids)

    @property
    def text(self) -> str:
        ids = self._ids[1:] if self._bos_added else self._ids
        return self.model.decode(ids)

    @property
    def generated_text(self) -> str:
        return self.model.decode(self._ids[self._n_prompt:])

    @property
    def closed(self) -> bool:
        return self._closed

    def is_eos(self, step: TokenStep) -> bool:
        return step.token_id in self.model.eos_token_ids

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


def _prompt_ranks(prompt_logprobs: Any, ids: Sequence[int]) -> dict[int, int]:
    """vLLM's `prompt_logprobs`: [None, {"id": {"logprob", "rank", ...}}, ...] -> {position: rank}."""
    ranks: dict[int, int] = {}
    if not isinstance(prompt_logprobs, list):
        return ranks
    for k, item in enumerate(prompt_logprobs[: len(ids)]):
        if isinstance(item, dict):
            info = item.get(str(ids[k]))
            if isinstance(info, dict) and isinstance(info.get("rank"), int):
                ranks[k] = info["rank"]
    return ranks


# ============================================================================ catalog of servers
def list_models(client: ServerClient) -> list[dict]:
    answer = client.get("/models")
    data = answer.get("data") if isinstance(answer, dict) else None
    if not isinstance(data, list):
        raise ServerError(f"The server at {client.base} did not list its models (GET /models).")
    return [m for m in data if isinstance(m, dict) and m.get("id")]


def remote_key(config: ServerConfig, model_id: str) -> str:
    return f"{model_id} @ {config.url}"


def remote_label(config: ServerConfig, model_id: str) -> str:
    name = Path(model_id).name if ("/" in model_id and Path(model_id).suffix) else model_id
    return f"{name} @ {config.netloc}"


class RemoteCatalog:
    """The models of every `--server`, as catalog entries with status "remote"; loads them on demand."""

    def __init__(self, servers: Sequence[str | ServerConfig]) -> None:
        self.configs = [ServerConfig.parse(s) for s in servers]
        self._clients = {c.url: ServerClient(c) for c in self.configs}
        self._lists: dict[str, tuple[float, list[dict], str | None]] = {}
        self._models: dict[str, RemoteModel] = {}
        self._key_locks: dict[str, threading.Lock] = defaultdict(threading.Lock)
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()

    def _fetch(self, config: ServerConfig) -> None:
        try:
            models, error = list_models(self._clients[config.url]), None
        except TokvizError as failure:
            models, error = [], str(failure)
        with self._lock:
            self._lists[config.url] = (time.monotonic(), models, error)
            self._refreshing.discard(config.url)

    def refresh(self, wait: bool = True) -> None:
        """Ask every server for its models (at once, or in the background when `wait` is False)."""
        for config in self.configs:
            if wait:
                self._fetch(config)
                continue
            with self._lock:
                if config.url in self._refreshing:
                    continue
                self._refreshing.add(config.url)
            threading.Thread(target=self._fetch, args=(config,), daemon=True).start()

    def infos(self) -> list[ModelInfo]:
        """Entries for the page's dropdown. The first call asks the servers (short timeouts); later
        calls return the last answer and refresh it in the background every MODELS_TTL seconds."""
        missing = [c for c in self.configs if c.url not in self._lists]
        for config in missing:
            self._fetch(config)
        if any(time.monotonic() - self._lists[c.url][0] > MODELS_TTL for c in self.configs):
            self.refresh(wait=False)
        infos = []
        for config in self.configs:
            _, models, error = self._lists[config.url]
            if error:
                infos.append(ModelInfo(f"server @ {config.url}", f"{config.netloc} (unreachable)", config.url,
                                       error, "remote", {"remote": True, "server": config.url, "error": error}))
            for model in models:
                key = remote_key(config, model["id"])
                infos.append(ModelInfo(key, remote_label(config, model["id"]), config.url,
                                       f"Served by {config.url}" + (f", context {model['max_model_len']} tokens"
                                                                     if model.get("max_model_len") else ""),
                                       "remote", {"remote": True, "server": config.url, "model": model["id"],
                                                  "loaded": key in self._models}))
        return infos

    def info(self, key: str) -> ModelInfo:
        """The catalog entry of one remote model; ModelNotFoundError if its server does not list it."""
        found = next((i for i in self.infos() if i.key == key), None)
        if found is None:
            lookup = self._lookup(key)
            where = lookup[0].url if lookup else "any configured server"
            raise ModelNotFoundError(f"'{key}' is not a model of {where}.")
        return found

    def _lookup(self, key: str) -> tuple[ServerConfig, str] | None:
        for config in self.configs:
            suffix = f" @ {config.url}"
            if key.endswith(suffix):
                return config, key[: -len(suffix)]
        return None

    def has(self, key: str) -> bool:
        return self._lookup(key) is not None

    def load(self, key: str, progress: Callable[[float | None, str], None] | None = None) -> RemoteModel:
        found = self._lookup(key)
        if found is None:
            raise ModelNotFoundError(f"'{key}' is not a model of any configured server.")
        config, model_id = found
        if model_id == "server":  # the placeholder of an unreachable server: ask again, explain
            self._fetch(config)
            _, models, error = self._lists[config.url]
            raise ModelLoadError(error or f"{config.url} answers now; pick one of its models: "
                                          f"{', '.join(m['id'] for m in models) or 'it lists none'}.")
        with self._key_locks[key]:
            model = self._models.get(key)
            if model is None:
                model = RemoteModel(config, model_id, key=key, client=self._clients[config.url], progress=progress)
                self._models[key] = model
            return model

    def unload(self, key: str) -> None:
        self._models.pop(key, None)

    def loaded(self) -> list[RemoteModel]:
        return list(self._models.values())
